"""The public tool-calling sets of the data folder's `toolcalls/` (its README gives each one's origin,
format and license), read into the common chat form.

Each set is a reader `(folder, rng) -> chats` that yields a chat per row it keeps and a `Drop` (with its
reason) per row it does not, as the derived families do, so the mix counts every row read:

    seal-tools      a request -> its 1-6 calls, offered the called tools and 0-2 others from the
                    4,076 specs; a call that takes another's output (85 nested rows) and the ones
                    after it are cut (the first step)
    toolrl          ToolACE / xLAM rows: `<think>` dropped (a 135M model answers, it does not reason
                    at length); `<tool_call>` lines -> calls, `<response>` -> a reply without a call
    apibank         API-Bank: a dialogue, then its one call (ToolRL's "please only make one tool call"
                    line, an instruction to the benchmark's model, is removed)
    hammer-single   HammerBench single calls, each beside its twin with the target tool removed
                    (`ir_ST_*`): the stored call is dropped and the reply is a refusal saying what the
                    offered tools do
    hammer-ask      HammerBench slot filling: the partial calls before each question are dropped, so
                    the assistant asks for the missing value and calls once it has it
    callnavi        a request offered a sample of its domain's 30-90 APIs that holds the called ones;
                    calls up to the first whose arguments wait for an earlier result (`$$$`)
    complexfuncbench  chains of 2-11 calls with each call's real Booking.com response as a tool turn,
                    the `$var1.path$` references replaced by the values the response holds, and the
                    responses pruned to what a small context holds (the referenced values always kept)
    nestful         the first step of each sequence: calls up to the first that takes an earlier
                    call's output (no responses are stored, so nothing after it can be shown true)

ToolAlpaca's evaluation set is not read: each row offers a whole OpenAPI document (several thousand
tokens, past the 1024 a row may hold here) and answers in ReAct steps with free-text action inputs.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .common import Drop, clean_calls, finish, loads_lenient, type_from_hint
from .derived import refusal
from .io import DataError, iter_file

# ---- shared pieces ---------------------------------------------------------------------------------------

def schema(props: dict, required) -> dict:
    """{param: {type (a Python or JSON type name), description, ...}} and the required names -> JSON Schema."""
    out = {}
    for name, spec in props.items():
        spec = spec if isinstance(spec, dict) else {"description": str(spec)}
        p, _ = type_from_hint(str(spec.get("type", "")))
        if spec.get("description"):
            p["description"] = str(spec["description"])
        if spec.get("default") not in (None, ""):
            p["default"] = spec["default"]
        if spec.get("enum"):
            p["enum"] = spec["enum"]
        out[name] = p
    return {"type": "object", "properties": out, "required": [r for r in required if r in out]}


def read_json(path: Path) -> list:
    """Every row of one of a set's files (.json, .jsonl, gzipped or not)."""
    if not path.is_file():
        raise DataError(f"{path} is missing; the toolcalls sets come with the shared data folder")
    return list(iter_file(path))


def row_rng(rng: np.random.Generator) -> np.random.Generator:
    """A row's own stream, so that a row's sample does not depend on how many draws the rows before it took."""
    return np.random.default_rng(int(rng.integers(2 ** 32)))


def sample_tools(called: list[dict], others: list[dict], rng, k: int) -> list[dict]:
    """The called tools and up to k others, in a random order."""
    names = {t["name"] for t in called}
    others = [t for t in others if t["name"] not in names]
    picks = [others[int(i)] for i in rng.choice(len(others), size=min(k, len(others)), replace=False)] if others else []
    tools = called + picks
    return [tools[int(i)] for i in rng.permutation(len(tools))]


def first_step(calls: list[dict], depends) -> list[dict]:
    """The calls before the first one that `depends` on an earlier call's output (the reply a model can
    write before it has seen any result)."""
    out = []
    for c in calls:
        if depends(c):
            break
        out.append(c)
    return out


def call_turn(user: str, calls: list[dict], tools: list[dict], source: str) -> dict:
    return finish([{"role": "user", "content": user.strip()},
                   {"role": "assistant", "content": "", "tool_calls": clean_calls(calls, tools)}], tools, source)


# ---- Seal-Tools ----------------------------------------------------------------------------------------------

SEAL_SPLITS = ("dev", "test_in_domain", "test_out_domain")


def seal_tool(t: dict) -> dict:
    return {"name": t["api_name"], "description": t.get("api_description") or "",
            "parameters": schema(t.get("parameters") or {}, t.get("required") or [])}


def seal_specs(folder: Path) -> dict[str, dict]:
    """Seal-Tools' tool specs by name (4,076 in the full set), as tools."""
    return {t["api_name"]: seal_tool(t) for t in read_json(folder / "seal-tools" / "Seal-Tools_Dataset_tool.jsonl")}


def seal_tools(folder: Path, rng):
    specs = seal_specs(folder)
    pool = list(specs.values())
    for split in SEAL_SPLITS:
        for row in read_json(folder / "seal-tools" / f"Seal-Tools_Dataset_{split}.jsonl"):
            r = row_rng(rng)
            calls = [{"name": c["api"], "arguments": c.get("parameters") or {}} for c in row["calling"]]
            calls = first_step(calls, lambda c: "API_call_" in json.dumps(c["arguments"]))
            if not calls or any(c["name"] not in specs for c in calls):
                yield Drop("undeclared tool" if calls else "no independent call")
                continue
            called = list({c["name"]: specs[c["name"]] for c in calls}.values())
            yield call_turn(row["query"], calls, sample_tools(called, pool, r, int(r.integers(0, 3))), "seal-tools")


# ---- ToolRL: ToolACE / xLAM rows and API-Bank ------------------------------------------------------------------

_TOOL_ENTRY = re.compile(r"^\d+\.\s*Name:\s*(.+?)\s*\nDescription:\s*(.*?)\s*\nParameters:\s*(.+?)\s*$", re.M)
_TOOL_LINE = re.compile(r"^\d+\.\s*(\w+):\s*(.*?)\s*\nParameters:\s*(.+?)\s*$", re.M)  # API-Bank level 3
_TURN = re.compile(r"<(user|response|obs)>(.*?)</\1>", re.S)
ONE_CALL_ASK = re.compile(r"\s*Based on our conversation above, please only make one tool call to solve my need\.?\s*")


def toolrl_tools(system: str) -> list[dict]:
    """ToolRL's numbered "Name: / Description: / Parameters: {...}" list -> tools."""
    tools = []
    for name, desc, params in _TOOL_ENTRY.findall(system) or _TOOL_LINE.findall(system):
        params = loads_lenient(params, "tools") or {}
        if not isinstance(params, dict):
            raise Drop("unparsable tools", name)
        required = [p for p, s in params.items() if not isinstance(s, dict) or s.get("default") in (None, "")]
        tools.append({"name": name, "description": desc, "parameters": schema(params, required)})
    if not tools:
        raise Drop("missing tools")
    return tools


def dialogue(history: str) -> list[dict]:
    """`<user>...</user>`, `<response>...</response>` and `<obs>...</obs>` turns -> messages."""
    role = {"user": "user", "response": "assistant", "obs": "tool"}
    return [{"role": role[k], "content": v.strip()} for k, v in _TURN.findall(history)]


def toolrl_reply(output: str, tools: list[dict]) -> dict:
    """`<think>` (dropped), then `<tool_call>` JSON lines and/or `<response>` -> one assistant message."""
    output = re.sub(r"<think>.*?</think>", "", output, flags=re.S)
    calls = []
    for block in re.findall(r"<tool_call>(.*?)</tool_call>", output, re.S):
        calls += [loads_lenient(line, "arguments") for line in block.strip().splitlines() if line.strip()]
    text = " ".join(t.strip() for t in re.findall(r"<response>(.*?)</response>", output, re.S))
    msg = {"role": "assistant", "content": text if not calls else ""}
    if calls:
        msg["tool_calls"] = clean_calls(calls, tools)
    return msg


def toolrl(folder: Path, rng):
    for row in read_json(folder / "toolrl" / "rlla_sft.json"):
        try:
            tools = toolrl_tools(row["instruction"])
            messages = dialogue(row["input"].split("**Dialogue Records History**")[-1])
            yield finish(messages + [toolrl_reply(row["output"], tools)], tools, "toolrl")
        except Drop as e:
            yield e


def apibank(folder: Path, rng):
    for level in (1, 2, 3):
        for row in read_json(folder / "toolrl" / f"apibank_level-{level}-api_processed.json"):
            try:
                tools = toolrl_tools(row["system"])
                messages = dialogue(row["user"].split("**Dialogue Records History**")[-1])
                messages = [m for m in messages if m["content"] and not ONE_CALL_ASK.fullmatch(m["content"])]
                calls = clean_calls(row["answer"], tools)
                if messages and messages[-1]["role"] == "assistant":  # "Alright, I'll do that now." + the call
                    messages[-1]["tool_calls"] = calls
                else:
                    messages.append({"role": "assistant", "content": "", "tool_calls": calls})
                yield finish(messages, tools, "apibank")
            except Drop as e:
                yield e


# ---- HammerBench -----------------------------------------------------------------------------------------------

HAMMER_SINGLE = ("Perfect", "Imperfect", "External")
HAMMER_DIALOGUES = ("Based", "External", "IS", "SO_case1", "SO_case2", "mQmA", "mQsA", "mSv", "sQmA")


def hammer_single(folder: Path, rng):
    """Each single call, then its twin: the same question with the target tool removed -> no call."""
    for part in HAMMER_SINGLE:
        rows = read_json(folder / "hammerbench" / f"ST_{part}.json")
        twins = read_json(folder / "hammerbench" / f"ir_ST_{part}.json")
        for row, twin in zip(rows, twins):
            r = row_rng(rng)
            try:
                user, call = row["messages"][0], row["messages"][1]
                if user["role"] != "user" or call["role"] != "function call":
                    raise Drop("unknown role", call["role"])
                yield call_turn(user["content"], [call["content"]], row["multiple_tools"], "hammer-single")
            except Drop as e:
                yield e
            stored = row["messages"][1]["content"]
            target = stored.get("name") if isinstance(stored, dict) else None
            tools, question = twin["multiple_tools"], twin["messages"][0]["content"]
            if question != row["messages"][0]["content"] or any(t["name"] == target for t in tools):
                yield Drop("twin does not match")
                continue
            yield finish([{"role": "user", "content": question},
                          {"role": "assistant", "content": refusal(tools, r)}], tools, "hammer-single")


def hammer_ask(folder: Path, rng):
    """A slot-filling dialogue: a partial call followed by the assistant's question is dropped (the
    question is the reply), the last call is the reply once every value is known."""
    for part in HAMMER_DIALOGUES:
        for row in read_json(folder / "hammerbench" / f"HammerBench_{part}.json"):
            tools, turns, messages = row["multiple_tools"], row["messages"], []
            try:
                for i, m in enumerate(turns):
                    if m["role"] == "function call":
                        if i + 1 < len(turns) and turns[i + 1]["role"] == "assistant":
                            continue  # a partial call, asked about next
                        calls = clean_calls(m["content"], tools)
                        messages.append({"role": "assistant", "content": "", "tool_calls": calls})
                    elif m["role"] in ("user", "assistant"):
                        messages.append({"role": m["role"], "content": m["content"]})
                    else:
                        raise Drop("unknown role", m["role"])
                yield finish(messages, tools, "hammer-ask")
            except Drop as e:
                yield e


# ---- CallNavi ----------------------------------------------------------------------------------------------------

CALLNAVI_DOMAINS = ("aviation", "bank", "gov", "hospital", "hotel", "hr", "insurance", "logistics", "shopping",
                    "telecommunications")


def callnavi(folder: Path, rng, others: int = 5):
    for domain in CALLNAVI_DOMAINS:
        apis, broken = {}, set()
        for t in read_json(folder / "callnavi" / f"schema_{domain}.json"):
            params = {k: v for k, v in (t.get("parameters") or {}).items() if k != "$schema"}
            if params.get("type", "object") != "object":  # a few specs are `{"type": "array"}`: not a signature
                broken.add(t["name"])
                continue
            apis[t["name"]] = {"name": t["name"], "description": t.get("description") or "",
                               "parameters": {"type": "object", "properties": {}, **params}}
        for row in read_json(folder / "callnavi" / f"q_{domain}.json"):
            r = row_rng(rng)
            truth = row["ground_truth"]
            calls = [{"name": n, "arguments": a or {}} for n, a in zip(truth["API"], truth["parameters"])]
            calls = first_step(calls, lambda c: "$$$" in json.dumps(c["arguments"]))
            question = row["question"][-1]["content"] if isinstance(row["question"], list) else row["question"]
            if not calls:
                yield Drop("no independent call")
            elif any(c["name"] in broken for c in calls):
                yield Drop("malformed tool spec")
            elif any(c["name"] not in apis for c in calls):
                yield Drop("undeclared tool")
            else:
                called = list({c["name"]: apis[c["name"]] for c in calls}.values())
                yield call_turn(question, calls, sample_tools(called, list(apis.values()), r,
                                                              int(r.integers(1, others + 1))), "callnavi")


# ---- ComplexFuncBench and NESTFUL: call sequences with `$varN.path$` references ---------------------------------

REF = re.compile(r"\$(var\d+)((?:\.[^$.\[\]]+|\[\d+\])*)\$")


def nestful_tool(t: dict, max_chars: int = 120) -> dict:
    """A NESTFUL-form spec -> a tool; descriptions cut to max_chars and long enums left out (ComplexFuncBench's
    Booking.com specs run to thousands of tokens a tool, past what a row may hold here)."""
    params = t.get("query_parameters") or t.get("parameters") or {}
    required = [p for p, s in params.items() if isinstance(s, dict) and s.get("required")]
    short = {p: {**s, "description": str(s.get("description") or "")[:max_chars],
                 "enum": s.get("enum") if len(s.get("enum") or ()) <= 8 else None}
             for p, s in params.items() if isinstance(s, dict)}
    return {"name": t["name"], "description": (t.get("description") or "")[:max_chars],
            "parameters": schema(short, required)}


def refers(call: dict) -> bool:
    return bool(REF.search(json.dumps(call.get("arguments") or {})))


def path_of(ref: str) -> list:
    """".coordinates.latitude" / "[0].id" -> ["coordinates", "latitude"] / [0, "id"]."""
    return [int(p[1:-1]) if p.startswith("[") else p for p in re.findall(r"\[\d+\]|[^.\[\]]+", ref)]


def lookup(value, path: list):
    """A value inside a response; a list met where a key is asked for stands for its first item."""
    for p in path:
        if isinstance(value, list) and isinstance(p, str):
            value = value[0] if value else None
        if isinstance(p, int):
            value = value[p] if isinstance(value, list) and p < len(value) else None
        elif isinstance(value, dict):
            value = value.get(p)
        else:
            value = None
        if value is None:
            raise Drop("unresolved reference", ".".join(map(str, path)))
    return value


def resolve(arguments, results: dict):
    """Arguments with every `$varN.path$` replaced by the value results[varN] holds there."""
    if isinstance(arguments, dict):
        return {k: resolve(v, results) for k, v in arguments.items()}
    if isinstance(arguments, list):
        return [resolve(v, results) for v in arguments]
    if not isinstance(arguments, str) or "$" not in arguments:
        return arguments
    whole = REF.fullmatch(arguments)
    if whole:
        if whole.group(1) not in results:
            raise Drop("unresolved reference", arguments)
        return lookup(results[whole.group(1)], path_of(whole.group(2)))

    def one(m):
        if m.group(1) not in results:
            raise Drop("unresolved reference", m.group(0))
        return str(lookup(results[m.group(1)], path_of(m.group(2))))
    return REF.sub(one, arguments)


def prune(value, keep: list[list], max_items: int = 1, max_keys: int = 6, max_chars: int = 40, depth: int = 3):
    """A response cut to what a small context holds: lists to their first items, long strings and deep
    objects shortened, at most max_keys keys an object; every path in `keep` (the referenced values) kept whole."""
    here = [p for p in keep if p]
    if not here and any(p == [] for p in keep):
        return value  # this value itself is referenced
    if isinstance(value, list):
        idx = sorted({p[0] for p in here if isinstance(p[0], int)} | set(range(min(max_items, len(value)))))
        sub = [p if isinstance(p[0], int) else [0] + p for p in here]  # a key on a list means its first item
        return [prune(value[i], [p[1:] for p in sub if p[0] == i], max_items, max_keys, max_chars, depth - 1)
                for i in idx if i < len(value)]
    if isinstance(value, dict):
        wanted = {p[0] for p in here}
        others = [k for k in value if k not in wanted][:max(0, max_keys - len(wanted))]
        keys = [k for k in value if k in wanted] + others
        if depth <= 0 and not wanted:
            return "..."
        return {k: prune(value[k], [p[1:] for p in here if p[0] == k], max_items, max_keys, max_chars, depth - 1)
                for k in value if k in keys}
    if isinstance(value, str) and len(value) > max_chars:
        return value[:max_chars] + "..."
    return value


def complexfuncbench(folder: Path, rng, max_calls: int = 3):
    """Chains cut after max_calls calls (the first calls of a chain, each after the results it needs, are true
    replies on their own; whole chains of 4-11 calls with their tools run past 1024 tokens)."""
    base = folder / "complexfuncbench"
    specs = {t["name"]: nestful_tool(t) for t in read_json(base / "complexfuncbench-spec.json.gz")}
    for row in read_json(base / "complexfuncbench-data.json.gz"):
        try:
            steps = row["output"][:max_calls]
            if any(s["name"] not in specs for s in steps):
                raise Drop("undeclared tool")
            refs: dict[str, list] = {}
            for s in steps:
                for m in REF.finditer(json.dumps(s.get("arguments") or {})):
                    refs.setdefault(m.group(1), []).append(path_of(m.group(2)))
            results, messages = {}, [{"role": "user", "content": row["input"].strip()}]
            for turn in ([s] for s in steps):  # a call a turn: many arguments are earlier results written out
                calls = [{"name": s["name"], "arguments": resolve(s.get("arguments") or {}, results)} for s in turn]
                messages.append({"role": "assistant", "content": "", "tool_calls": calls})
                for s in turn:
                    results[s.get("label")] = s.get("response")
                if turn[-1] is steps[-1]:
                    break  # the last calls end the row: no answer text is stored
                for s in turn:
                    shown = prune(s.get("response"), refs.get(s.get("label"), []))
                    messages.append({"role": "tool", "content": json.dumps(shown, ensure_ascii=False)})
            tools = list({s["name"]: specs[s["name"]] for s in steps}.values())
            yield finish(messages, tools, "complexfuncbench")
        except Drop as e:
            yield e


NESTFUL_PARTS = ("executable", "non-executable-glaive", "non-executable-sgd")


def nestful(folder: Path, rng):
    for part in NESTFUL_PARTS:
        specs = {t["name"]: nestful_tool(t) for t in read_json(folder / "nestful" / f"{part}-spec.json")}
        for row in read_json(folder / "nestful" / f"{part}-data.json"):
            r = row_rng(rng)
            calls = first_step([{"name": s["name"], "arguments": s.get("arguments") or {}} for s in row["output"]],
                               refers)
            if not calls or any(c["name"] not in specs for c in calls):
                yield Drop("undeclared tool" if calls else "no independent call")
                continue
            called = list({c["name"]: specs[c["name"]] for c in calls}.values())
            try:
                yield call_turn(row["input"], calls, sample_tools(called, list(specs.values()), r,
                                                                  int(r.integers(0, 3))), "nestful")
            except Drop as e:
                yield e


TOOLSETS = {"seal-tools": seal_tools, "toolrl": toolrl, "apibank": apibank, "hammer-single": hammer_single,
            "hammer-ask": hammer_ask, "callnavi": callnavi, "complexfuncbench": complexfuncbench, "nestful": nestful}


def calls_in(chat: dict) -> int:
    """The number of calls in a chat's first reply that calls (0: none)."""
    return next((len(m["tool_calls"]) for m in chat["messages"] if m.get("tool_calls")), 0)


PARTS = {"single": lambda chat: calls_in(chat) == 1, "parallel": lambda chat: calls_in(chat) >= 2}


def tool_specs(data_dir: Path) -> list[dict]:
    """The tools the derived *-specs families offer: Seal-Tools' specs, from the data folder's toolcalls/."""
    return list(seal_specs(Path(data_dir) / "toolcalls").values())


def read_toolset(spec: str, data_dir: Path | None, rng):
    """One set's chats in a random order (and a `Drop` per row not kept), from the data folder's toolcalls/.
    `spec` is a set's name, or "name:single" / "name:parallel" for its rows whose first reply makes one call /
    several calls (a recipe chooses how many of each)."""
    name, _, part = spec.partition(":")
    if name not in TOOLSETS:
        raise KeyError(f"unknown tool-calling set {name!r}; choose from {', '.join(TOOLSETS)}")
    if data_dir is None:
        raise DataError(f"{name}: the tool-calling sets are read from a local data folder (pass --data-dir or "
                        "set NANOAGENT_DATA)")
    if part and part not in PARTS:
        raise KeyError(f"unknown part {part!r} of {name}; choose from {', '.join(PARTS)}")
    rows = list(TOOLSETS[name](Path(data_dir) / "toolcalls", rng))
    if part:
        rows = [r for r in rows if isinstance(r, Drop) or PARTS[part](r)]
    return [rows[int(i)] for i in rng.permutation(len(rows))]
