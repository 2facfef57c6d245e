"""The OpenAI chat-completions API's shapes, without the web: a request body read and checked into a
ChatRequest (or an APIError that answers in OpenAI's error shape), one choice's reply built as
its tokens arrive, with `<tool_call>` replies turned into OpenAI `tool_calls`, and the replies'
bodies, whole or streamed as server-sent events. serve.py puts them on HTTP over batched decoding.
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass

from .generate import TextStream, json_kind
from .sampling import SamplingParams
from .tokenizer import Tokenizer
from .toolcalls import parse_reply

log = logging.getLogger("nanoagent.serve")  # a streamed reply's bug is the server's, logged as its own
MAX_STOPS = 16  # stop strings a request may give (OpenAI takes 4; agent frameworks may send more)


# ---- errors in OpenAI's shape ---------------------------------------------------------------

class APIError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param, code)


def shutting_down() -> APIError:
    return APIError(503, "the server is shutting down", kind="server_error")


def check_key(authorization: str, api_key: str | None) -> None:
    """An `Authorization` header's value against the server's key (None: no key needed) -> APIError(401) if wrong."""
    if api_key is None:
        return
    token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(token.encode(), api_key.encode()):
        raise APIError(401, "Incorrect API key provided: pass it as 'Authorization: Bearer KEY'" if token
                       else "Missing API key: pass it as 'Authorization: Bearer KEY'", code="invalid_api_key")


# ---- reading a request ----------------------------------------------------------------------

@dataclass
class ChatRequest:
    """A checked `/v1/chat/completions` body."""
    messages: list[dict]  # role, content (text), tool_calls (assistant), as render_chat reads them
    tools: list[dict] | None  # the tools offered to the model (after tool_choice)
    max_tokens: int | None
    sampling: SamplingParams
    stop: list[str]
    n: int
    stream: bool
    include_usage: bool


def read_chat_request(body, max_n: int) -> ChatRequest:
    """A decoded JSON body -> ChatRequest, or APIError(400) naming the field that is wrong."""
    if not isinstance(body, dict):
        raise bad(f"the request body must be a JSON object, got {json_kind(body)}")
    if not isinstance(body.get("model"), str):
        raise bad(f"'model' is required, a string naming the model (GET /v1/models lists it); got "
                  f"{json_kind(body.get('model'))}", "model")
    if "messages" not in body:
        raise bad("'messages' is required: a list of {role, content} messages", "messages")
    messages = read_messages(body["messages"])
    tools = read_tools(body.get("tools"))
    offered = choose_tools(tools, body.get("tool_choice"))
    which = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = whole(body.get(which), which, None, 1)
    temperature = real(body.get("temperature"), "temperature", 0.0, 0.0, 2.0)  # default: greedy, as chat()
    top_p = real(body.get("top_p"), "top_p", 1.0, 0.0, 1.0)
    top_k = whole(body.get("top_k"), "top_k", 0, 0)
    if top_p == 0.0:  # OpenAI allows 0: only the most likely token
        top_p, top_k = 1.0, 1
    seed = whole(body.get("seed"), "seed", None, -2**63)
    seed = seed % 2**64 if seed is not None else None  # any int64, as OpenAI; NumPy seeds are non-negative
    sampling = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k,
                              min_p=real(body.get("min_p"), "min_p", 0.0, 0.0, 1.0, open_high=True),
                              repetition_penalty=real(body.get("repetition_penalty"), "repetition_penalty", 1.0,
                                                      0.0, math.inf, open_low=True),
                              seed=seed)
    n = whole(body.get("n"), "n", 1, 1)
    if n > max_n:
        raise bad(f"'n' must be at most {max_n} (the server's decoding slots), got {n}", "n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad(f"'stream' must be true or false, got {json_kind(stream)}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise bad("'stream_options' must be an object like {\"include_usage\": true}", "stream_options")
    if body.get("logprobs"):
        raise bad("'logprobs' is not supported by this server", "logprobs")
    return ChatRequest(messages, offered, max_tokens, sampling, read_stop(body.get("stop")), n, stream,
                       stream and options.get("include_usage", False))


def whole(value, name: str, default: int | None, low: int) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"'{name}' must be an integer, got {json_kind(value)}", name)
    if value < low:
        raise bad(f"'{name}' must be at least {low}, got {value}", name)
    return value


def real(value, name: str, default: float, low: float, high: float, open_low=False, open_high=False) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(f"'{name}' must be a finite number, got {value if isinstance(value, float) else json_kind(value)}",
                  name)
    if value < low or value > high or (open_low and value == low) or (open_high and value == high):
        span = f"above {low}" if high == math.inf else \
            f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise bad(f"'{name}' must be {span}, got {value}", name)
    return float(value)


def read_text(content, where: str) -> str | None:
    """A message's content: a string, null, or a list of text parts (joined by newlines)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"{where}[{i}] must be a text part {{\"type\": \"text\", \"text\": ...}}: "
                          "this model reads text only", f"{where}[{i}]")
            texts.append(part["text"])
        return "\n".join(texts)
    raise bad(f"{where} must be a string or a list of text parts, got {json_kind(content)}", where)


def read_messages(value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise bad("'messages' must be a non-empty list of messages", "messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"{where} must be an object, got {json_kind(m)}", where)
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise bad(f"{where}.role must be one of system, developer, user, assistant, tool; got "
                      f"{json.dumps(m.get('role'))}", f"{where}.role")
        content = read_text(m.get("content"), f"{where}.content")
        message = {"role": role, "content": content or ""}
        if role == "assistant" and m.get("tool_calls") is not None:
            message["tool_calls"] = read_calls(m["tool_calls"], f"{where}.tool_calls")
        elif content is None and role != "assistant":
            raise bad(f"{where} ({role}) has no 'content'", f"{where}.content")
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise bad(f"{where} (tool) needs a 'tool_call_id' string: the id of the call it answers",
                      f"{where}.tool_call_id")
        out.append(message)
    return out


def read_calls(value, where: str) -> list[dict]:
    """An assistant's OpenAI `tool_calls` -> [{"name", "arguments": dict}] (arguments arrive as a JSON string)."""
    if not isinstance(value, list):
        raise bad(f"{where} must be a list, got {json_kind(value)}", where)
    calls = []
    for i, call in enumerate(value):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad(f"{where}[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                      "\"arguments\": ...}}", f"{where}[{i}]")
        args = fn.get("arguments", "{}")
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except (ValueError, RecursionError):
            args = None
        if not isinstance(args, dict):
            raise bad(f"{where}[{i}].function.arguments must be a JSON object (as a string)",
                      f"{where}[{i}].function.arguments")
        calls.append({"name": fn["name"], "arguments": args})
    return calls


def read_tools(value) -> list[dict] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad(f"'tools' must be a list, got {json_kind(value)}", "tools")
    for i, tool in enumerate(value):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                      "\"description\": ..., \"parameters\": {...}}}}", f"tools[{i}]")
        if not isinstance(fn.get("description", ""), str):
            raise bad(f"tools[{i}].function.description must be a string", f"tools[{i}].function.description")
        if not isinstance(fn.get("parameters", {}), dict):
            raise bad(f"tools[{i}].function.parameters must be a JSON Schema object", f"tools[{i}].function.parameters")
    return value or None


def choose_tools(tools, choice) -> list[dict] | None:
    """tool_choice: "auto" (or "required": the model is asked, not forced) offers every tool, "none" none,
    {"type": "function", "function": {"name": X}} only X."""
    if choice is None or choice in ("auto", "required"):
        return tools
    if choice == "none":
        return None
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str):
        raise bad('\'tool_choice\' must be "auto", "none", "required" or {"type": "function", "function": '
                  '{"name": ...}}', "tool_choice")
    named = [t for t in tools or [] if t["function"]["name"] == name]
    if not named:
        raise bad(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
    return named


def read_stop(value) -> list[str]:
    stops = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOPS:
        raise bad(f"'stop' must be a string or a list of up to {MAX_STOPS} strings", "stop")
    return [s for s in stops if s]


def encode_prompt(tokenizer: Tokenizer, req: ChatRequest, context: int) -> list[int]:
    """The request's messages and tools in the chat template -> prompt token ids, leaving room in `context`
    for at least one reply token, or APIError(400)."""
    try:
        prompt = tokenizer.encode(tokenizer.render_chat(req.messages, req.tools))
    except (ValueError, TypeError) as e:
        raise bad(f"the messages cannot be rendered: {e}", "messages") from None
    if len(prompt) + 1 > context:
        raise bad(f"this model's context is {context} tokens per request, and the messages take "
                  f"{len(prompt)} (plus at least one for the reply): shorten the messages",
                  "messages", "context_length_exceeded")
    return prompt


# ---- one reply, as its tokens arrive --------------------------------------------------------

_CALL_OPEN = re.compile(r"<\s*tool_calls?\s*>", re.IGNORECASE)  # the opening tags parse_reply reads


def hold_from(text: str, start: int) -> int:
    """With tools offered: where the text that may be sent as content ends (from `start`, what was sent).

    Held back: from a `<` that opens a tool call or may still grow into an opening tag, and a whole
    reply that begins like a bare JSON call list or a fenced block (parse_reply reads those too).
    """
    if not text[:start].strip():
        head = text.lstrip()
        if not head or head[0] in "[{`":
            return start
    i = text.find("<", start)
    while i != -1:
        squeezed = re.sub(r"\s+", "", text[i + 1:i + 24]).lower()
        if _CALL_OPEN.match(text, i) or "tool_call>".startswith(squeezed) or "tool_calls>".startswith(squeezed):
            return i
        i = text.find("<", i + 1)
    return len(text)


class Reply:
    """One choice's text as tokens arrive: cut at stop strings (TextStream); with tools offered, text
    from a tool call on is held back and read as calls when the reply ends."""

    def __init__(self, tokenizer: Tokenizer, stop: list[str], tools: bool):
        self.stream, self.tools = TextStream(tokenizer, stop), tools
        self.text, self.sent = "", 0  # text so far; characters of it already sent as content
        self.tokens, self.finish_reason = 0, None
        self.cached = 0  # prompt tokens the decoder found already in a slot's cache

    def push(self, token: int) -> str:
        """One more token -> the content that may be sent now."""
        self.tokens += 1
        self.text += self.stream.push(token)
        return self._release()

    def _release(self) -> str:
        end = hold_from(self.text, self.sent) if self.tools else len(self.text)
        piece, self.sent = self.text[self.sent:end], max(self.sent, end)
        return piece

    @property
    def stopped(self) -> bool:  # a stop string was reached
        return self.stream.stopped

    def finish(self, reason: str) -> tuple[str, list[dict]]:
        """The reply ended -> (content not yet sent, tool calls in OpenAI's form)."""
        self.text += self.stream.flush()
        calls = parse_reply(self.text).calls if self.tools else []
        self.finish_reason = "tool_calls" if calls else reason
        if calls:
            return "", [{"id": "call_" + secrets.token_hex(12), "type": "function",
                         "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
                        for c in calls]
        self.tools = False
        return self._release(), []

    def message(self, calls: list[dict]) -> dict:
        """The whole reply as an OpenAI assistant message."""
        if not calls:
            return {"role": "assistant", "content": self.text}
        return {"role": "assistant", "content": parse_reply(self.text).text or None, "tool_calls": calls}


def usage_of(prompt, replies) -> dict:
    """Token counts as OpenAI gives them, with the prompt tokens a slot's cache already held (not prefilled)."""
    completion = sum(r.tokens for r in replies)
    return {"prompt_tokens": len(prompt), "completion_tokens": completion, "total_tokens": len(prompt) + completion,
            "prompt_tokens_details": {"cached_tokens": max((r.cached for r in replies), default=0)}}


# ---- the replies' bodies: whole, or streamed as server-sent events ---------------------------

def model_card(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "nanoagent"}


def completion_head(model_id: str) -> dict:
    """The fields every body of one completion shares, whole or streamed; a new id each call."""
    return {"id": "chatcmpl-" + secrets.token_hex(12), "created": int(time.time()), "model": model_id,
            "system_fingerprint": None}


def completion(head: dict, prompt, replies: list[Reply], calls: list[list[dict]]) -> dict:
    """A whole `chat.completion`: each finished reply a choice, with its tool calls."""
    return {**head, "object": "chat.completion", "usage": usage_of(prompt, replies), "choices": [
        {"index": i, "message": r.message(calls[i]), "logprobs": None, "finish_reason": r.finish_reason}
        for i, r in enumerate(replies)]}


def chunk(head: dict, index: int, delta: dict, finish: str | None = None) -> dict:
    """One choice's `delta` as a `chat.completion.chunk`."""
    return {**head, "object": "chat.completion.chunk", "choices": [
        {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def usage_chunk(head: dict, prompt, replies: list[Reply]) -> dict:
    """The last chunk of a stream that asked for `include_usage`: no choices, the token counts."""
    return {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage_of(prompt, replies)}


async def sse(head: dict, req: ChatRequest, prompt, replies, events):
    """The chunks of a streamed reply as server-sent events, ending with `data: [DONE]`; `events` yields
    (index, content, tool_calls, finish_reason or None) per choice, as serve.choices does."""
    try:
        for i in range(req.n):
            yield event(chunk(head, i, {"role": "assistant", "content": ""}))
        async for index, piece, calls, finish in events:
            if piece:
                yield event(chunk(head, index, {"content": piece}))
            if calls:
                yield event(chunk(head, index, {"tool_calls": [{"index": k, **c} for k, c in enumerate(calls)]}))
            if finish is not None:
                yield event(chunk(head, index, {}, finish))
        if req.include_usage:
            yield event(usage_chunk(head, prompt, replies))
    except APIError as e:
        yield event(e.body())
    except Exception:  # a bug: said in the stream (the status line has gone), logged, the server goes on
        log.exception("streaming a reply failed")
        yield event(APIError(500, "internal server error", kind="server_error").body())
    finally:
        await events.aclose()  # on a disconnect: stop decoding what no one reads
    yield "data: [DONE]\n\n"


LINE_BREAKS_ESCAPED = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def event(payload: dict) -> str:
    """One server-sent event. Text stays UTF-8, except the three characters that a reader splitting lines
    with Python's str.splitlines would break an event at (JSON allows them escaped, inside strings only)."""
    text = json.dumps(payload, ensure_ascii=False)
    return f"data: {text.translate(LINE_BREAKS_ESCAPED)}\n\n"

