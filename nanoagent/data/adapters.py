"""One adapter per source dataset: a row in the source's own schema -> the common form

    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str,
                   "tool_calls"?: [{"name": str, "arguments": dict}]}, ...],
     "tools"?: [{"name", "description", "parameters" (JSON Schema)}],
     "source": name}

which `tokenizer.render_chat` writes in the NanoAgent format (tools prompt, calls as
`<tool_call>[...]</tool_call>`, results as `<tool_result>` turns). A row that does not fit
(a call to a tool it does not declare, arguments that do not parse, an empty turn, no
assistant turn) raises `Drop(reason)`; the mix builder counts the reasons and goes on.
"""
from __future__ import annotations

import json
import re

from ..toolcalls import decode_payload, parse_reply
from .common import Drop, clean_calls, clean_tools, finish, loads_lenient


# ---- ShareGPT: glaive (as LLaMA-Factory ships it) and friends ----------------------------------

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                  "system": "system", "observation": "tool", "tool": "tool", "function_response": "tool",
                  "function-response": "tool", "ipython": "tool", "function": "tool"}
CALL_KINDS = ("function_call", "function-call")


def sharegpt_to_chat(row: dict) -> tuple[list[dict], list[dict]]:
    """A ShareGPT row (`conversations[{from, value}]`, `tools` as a JSON string) -> (messages, tools).

    human -> user, gpt -> assistant, function_call -> an assistant message with `tool_calls`
    (joined to the assistant text just before it, if any), observation -> a `tool` message.
    Raises ValueError (a `Drop`) on a turn kind it does not know or a call it cannot read.
    """
    tools = clean_tools(row.get("tools") or [])
    messages: list[dict] = []
    for turn in row["conversations"]:
        kind = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content", ""))
        if kind in CALL_KINDS:
            calls = clean_calls(value, None)
            if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"] = calls
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        elif kind in SHAREGPT_ROLES:
            messages.append({"role": SHAREGPT_ROLES[kind], "content": value if isinstance(value, str) else
                             json.dumps(value, ensure_ascii=False)})
        else:
            raise Drop("unknown role", str(kind))
    return messages, tools


def _check_declared(messages, tools):
    names = {t["name"] for t in tools}
    for m in messages:
        for c in m.get("tool_calls") or []:
            if c["name"] not in names:
                raise Drop("undeclared tool", c["name"])


def glaive(row: dict, source: str = "glaive") -> dict:
    """glaive-function-calling-v2: ShareGPT form (`conversations`, `tools`) or the hub's raw `system` + `chat`."""
    if "conversations" not in row and "chat" in row:
        return glaive_raw(row, source)
    messages, tools = sharegpt_to_chat(row)
    _check_declared(messages, tools)
    return finish(messages, tools, source)


_GLAIVE_TURN = re.compile(r"(USER:|ASSISTANT:|FUNCTION RESPONSE:)")


def glaive_raw(row: dict, source: str = "glaive") -> dict:
    """glaiveai/glaive-function-calling-v2 as on the hub (public schema): `system` ("SYSTEM: ... -\\n{tool}\\n{tool}")
    and `chat` ("USER: ... ASSISTANT: <functioncall> {...} <|endoftext|> FUNCTION RESPONSE: ...")."""
    system = row.get("system") or ""
    tools = []
    if "{" in system:
        found = decode_payload(system[system.index("{"):]) if system.strip() else []
        tools = clean_tools(found if isinstance(found, list) else [found])
    parts = _GLAIVE_TURN.split(row["chat"])
    messages = []
    for marker, text in zip(parts[1::2], parts[2::2]):
        text = text.replace("<|endoftext|>", "").strip()
        if marker == "USER:":
            messages.append({"role": "user", "content": text})
        elif marker == "FUNCTION RESPONSE:":
            messages.append({"role": "tool", "content": text})
        elif "<functioncall>" in text:
            before, call = text.split("<functioncall>", 1)
            messages.append({"role": "assistant", "content": before.strip(), "tool_calls": clean_calls(call, tools)})
        else:
            messages.append({"role": "assistant", "content": text})
    return finish(messages, tools, source)


# ---- xLAM: one query, its tools, the calls ---------------------------------------------------------

def xlam(row: dict, source: str = "xlam") -> dict:
    """Salesforce/xlam-function-calling-60k: `query`, `tools` and `answers` (both JSON strings)."""
    tools = clean_tools(row.get("tools"))
    if not tools:
        raise Drop("missing tools")
    calls = clean_calls(row.get("answers"), tools)
    if not calls:
        raise Drop("empty turn", "no answers")
    return finish([{"role": "user", "content": row.get("query") or ""},
                   {"role": "assistant", "content": "", "tool_calls": calls}], tools, source)


# ---- chats with the tools in the system prompt: hermes, smoltalk's apigen, ... ---------------------

_TOOLS_TAG = re.compile(r"<tools>(.*?)</tools>", re.DOTALL)
_RESPONSE_TAG = re.compile(r"<tool_response>(.*?)</tool_response>", re.DOTALL)


def tools_from_system(text: str) -> list[dict] | None:
    """The tools listed inside `<tools>...</tools>` of a system prompt (a JSON list, objects one per line,
    or Python repr), or None when there is no such tag."""
    bodies = [b.strip() for b in _TOOLS_TAG.findall(text or "")]
    if not bodies:
        return None
    tools = []
    for body in filter(None, bodies):  # "...within <tools></tools> XML tags" names the tag before using it
        try:
            value = decode_payload(body)
        except ValueError:
            raise Drop("unparsable tools", body[:80]) from None
        tools += clean_tools(value if isinstance(value, list) else [value])
    return tools


def assistant_message(content: str, tools: list[dict] | None) -> dict:
    """An assistant text that may hold `<tool_call>` tags -> {content (text outside), tool_calls}."""
    if "<tool_call" not in content and "<functioncall>" not in content:
        return {"role": "assistant", "content": content.strip()}
    content = content.replace("<functioncall>", "<tool_call>")
    parsed = parse_reply(content)
    if parsed.errors:
        raise Drop("unparsable arguments", parsed.errors[0][:80])
    calls = clean_calls(parsed.calls, tools)
    thinking = re.findall(r"<think>.*?</think>", content, re.DOTALL)  # kept: thinking derivatives teach it
    text = "\n".join(thinking + ([parsed.text] if parsed.text else []))
    return {"role": "assistant", "content": text.strip(), "tool_calls": calls}


def tool_messages(content: str) -> list[dict]:
    """A tool turn -> one `tool` message per `<tool_response>` block (or the whole text)."""
    blocks = [b.strip() for b in _RESPONSE_TAG.findall(content)]
    return [{"role": "tool", "content": b} for b in blocks] or [{"role": "tool", "content": content.strip()}]


def chat(row: dict, source: str = "chat") -> dict:
    """Any chat row: `messages` (a list, or a JSON string as orca-agentinstruct) or `conversations`
    (`{from, value}` as hermes, or `{role, content}` as code-act and the hermes thinking derivative).

    Tools come from a `tools` field or from `<tools>` in the system prompt (which NanoAgent's
    tools prompt then replaces); calls from OpenAI `tool_calls`, `<tool_call>` tags (JSON or
    Python repr, one per tag or a list), or glaive's `<functioncall>`; tool turns may wrap
    results in `<tool_response>`. With no tool list at all, a call must name a tool that the
    system prompt mentions (smolagents traces describe their tools in prose).
    """
    turns = row.get("messages", row.get("conversations"))
    turns = loads_lenient(turns, "messages") if isinstance(turns, str) else turns
    if not isinstance(turns, list) or not turns:
        raise Drop("empty turn", "no messages")
    tools = clean_tools(row["tools"]) if row.get("tools") else None
    messages, system_text = [], ""
    for t in turns:
        if not isinstance(t, dict):
            raise Drop("unknown role", type(t).__name__)
        kind = t.get("role", t.get("from"))
        content = t.get("content", t.get("value"))
        content = "" if content is None else content if isinstance(content, str) else json.dumps(content)
        role = SHAREGPT_ROLES.get(kind) if kind not in CALL_KINDS else "call"
        if role is None:
            raise Drop("unknown role", str(kind))
        if role == "system":
            found = tools_from_system(content)
            if found is not None:
                tools = (tools or []) + found
                continue  # NanoAgent's tools prompt replaces a tools-listing system prompt
            system_text = content
            messages.append({"role": "system", "content": content})
        elif role == "call":
            messages.append({"role": "assistant", "content": "", "tool_calls": clean_calls(content, tools)})
        elif role == "assistant":
            msg = assistant_message(content, tools)
            if t.get("tool_calls"):
                msg["tool_calls"] = msg.get("tool_calls", []) + clean_calls(t["tool_calls"], tools)
            messages.append(msg)
        elif role == "tool":
            messages.extend(tool_messages(content))
        else:
            messages.append({"role": "user", "content": content})
    if tools is None:  # no declared list: names must at least appear in the system prompt
        for m in messages:
            for c in m.get("tool_calls") or []:
                if c["name"] not in system_text:
                    raise Drop("undeclared tool", c["name"])
    return finish(messages, tools, source)


def hermes(row: dict, source: str = "hermes") -> dict:
    """NousResearch/hermes-function-calling-v1 (and Jofthomas/hermes-function-calling-thinking-V1)."""
    return chat(row, source)


def locutusque(row: dict, source: str = "locutusque") -> dict:
    """Locutusque/function-calling-chatml: `system_message`, `function_description` (JSON objects, one or more),
    `conversations[{from: system|human|gpt|function-call|function-response, value}]`."""
    tools = []
    desc = (row.get("function_description") or "").strip()
    if desc:
        value = loads_lenient(desc, "tools")
        tools = clean_tools(value if isinstance(value, list) else [value])
    turns = [t for t in row.get("conversations") or [] if t.get("from") != "system"]
    out = chat({"conversations": turns, "tools": tools or None}, source)
    if row.get("system_message") and not tools:
        out["messages"].insert(0, {"role": "system", "content": row["system_message"]})
    return out


# ---- plain question/answer sources ---------------------------------------------------------------

def qa(question, answer, source: str) -> dict:
    return finish([{"role": "user", "content": (question or "").strip()},
                   {"role": "assistant", "content": (answer or "").strip()}], None, source)


def gsm8k(row: dict, source: str = "gsm8k") -> dict:
    """GSM8K (openai/gsm8k): `question`, `answer` ending `#### N`; calculator notes `<<2*3=6>>` are removed."""
    answer = row.get("answer") or ""
    if "####" not in answer:
        raise Drop("no final answer")
    work, final = answer.rsplit("####", 1)
    work = re.sub(r"<<[^>]*>>", "", work).strip()
    return qa(row.get("question"), f"{work}\nThe answer is {final.strip()}.", source)


def orca_math(row: dict, source: str = "orca-math") -> dict:
    """microsoft/orca-math-word-problems-200k: `question`, `answer`."""
    return qa(row.get("question"), row.get("answer"), source)


def gsm8k_decomposed(row: dict, source: str = "gsm8k-decomposed") -> dict:
    """weijie210/gsm8k_decomposed: `question`, `sub_questions` (list of str): the model learns to break a
    problem into steps; when the row also has an `answer`, the steps are followed by the solution."""
    subs = row.get("sub_questions")
    subs = loads_lenient(subs, "sub_questions") if isinstance(subs, str) else subs
    if not subs or not isinstance(subs, list):
        raise Drop("empty turn", "no sub_questions")
    steps = "\n".join(f"{i}. {s.strip()}" for i, s in enumerate(subs, 1) if isinstance(s, str) and s.strip())
    reply = f"Let me break this into smaller questions:\n{steps}"
    if row.get("answer"):
        reply += "\n\n" + gsm8k(row)["messages"][1]["content"] if "####" in row["answer"] else f"\n\n{row['answer']}"
    return qa(row.get("question"), reply, source)


def tulu_if(row: dict, source: str = "tulu-if") -> dict:
    """allenai/tulu-3-sft-personas-instruction-following: `prompt`, `messages`, `constraints`."""
    if row.get("messages"):
        return chat({"messages": row["messages"]}, source)
    raise Drop("empty turn", "no messages")


# ---- registry ---------------------------------------------------------------------------------------

ADAPTERS = {
    "glaive": glaive, "xlam": xlam, "hermes": hermes, "locutusque": locutusque, "chat": chat,
    "gsm8k": gsm8k, "orca-math": orca_math, "gsm8k-decomposed": gsm8k_decomposed, "tulu-if": tulu_if,
}


def to_messages(row: dict, source: str = "row") -> dict | None:
    """Guess a row's schema and convert it; None when it does not fit (used by `ppl` and `train`)."""
    try:
        if "query" in row and "answers" in row:
            return xlam(row, source)
        if "function_description" in row:
            return locutusque(row, source)
        if "conversations" in row and "tools" in row and not row.get("messages"):
            return glaive(row, source)
        if "messages" in row or "conversations" in row:
            return chat(row, source)
        if "chat" in row and "system" in row:
            return glaive_raw(row, source)
        if "sub_questions" in row:
            return gsm8k_decomposed(row, source)
        if "question" in row and "answer" in row:
            return gsm8k(row, source) if "####" in str(row["answer"]) else orca_math(row, source)
    except Drop:
        return None
    return None
