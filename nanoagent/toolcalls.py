"""The NanoAgent tool-call format: writing calls, and reading them back out of a reply, forgivingly.

The format is one tag holding a JSON list of calls:

    <tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"}}]</tool_call>

`format_tool_calls` writes it (the chat template and the training data use it); the
parser reads it (the agent, the data adapters and the evaluation use it). Small models drift from it in a handful of ways, all accepted here:
a single object instead of a list, several `<tool_call>` tags, Python quoting
(`'single'`, `True`, `None`), Python call syntax (`[calculator(expression="2+2")]`),
`arguments` given as a JSON string, code fences around the JSON, text before or
after, a `<think>` block, a final tag never closed, trailing commas, and JSON cut off
before its closing brackets. A reply with no tag at all is read as a call only when
the whole reply is nothing but call-shaped JSON.

Nothing here raises on model output: what cannot be read comes back as an error
string the agent shows the model, so it can try again. Reading takes time linear in the
reply's length (no regex here backtracks over a long run), and at most MAX_TAGS tags
(MAX_TAGS_CHARS characters in all) are decoded, so even a hostile reply is read quickly.
"""
from __future__ import annotations

import ast
import json
import re
import warnings
from typing import Iterable, NamedTuple

MAX_PAYLOAD_CHARS = 20_000  # a call longer than this is not a call a 135M model meant
MAX_TAGS = 64  # a reply's tags read at most; decoding costs ~40 us a tag, so 100k tags would take seconds
MAX_TAGS_CHARS = 2 * MAX_PAYLOAD_CHARS  # all of a reply's tags together (decoding costs up to ~10 us a character)


class ParsedReply(NamedTuple):
    """What a reply holds: calls [{"name", "arguments"}], errors [str], text outside calls."""

    calls: list
    errors: list
    text: str


# ---------------------------------------------------------------- writing calls

def format_tool_calls(calls: Iterable[dict]) -> str:
    """OpenAI `tool_calls` (or bare `{name, arguments}`) -> `<tool_call>[...]</tool_call>`."""
    out = []
    for c in calls:
        fn = c.get("function", c)
        args = fn.get("arguments", {})
        out.append({"name": fn["name"], "arguments": json.loads(args) if isinstance(args, str) else args})
    return "<tool_call>" + json.dumps(out, ensure_ascii=False) + "</tool_call>"


# ---------------------------------------------------------------- finding the tags

_TOOL_CALL = re.compile(
    r"<\s*tool_calls?\s*>(?P<body>.*?)(?:<\s*[/\\]\s*tool_calls?\s*>|(?=<\s*tool_calls?\s*>)|$)",
    re.DOTALL | re.IGNORECASE,
)
_OPEN_TAG = re.compile(r"<\s*tool_calls?\s*>", re.IGNORECASE)
_CLOSE_TAG = re.compile(r"<\s*[/\\]\s*tool_calls?\s*>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
# the optional slash is grouped with its spaces: `<\s*[/\\]?\s*` would try every split of a long run of spaces
_STRAY_TAG = re.compile(r"<\s*(?:[/\\]\s*)?tool_calls?\s*>", re.IGNORECASE)
_EMPTY_FENCE = re.compile(r"```[\w-]*\s*```")
_FENCE_OPEN = re.compile(r"\s*```[\w-]*\s*")


def strip_think(text):
    """Drop `<think>...</think>` blocks; an unclosed one runs to the next `<tool_call>` or the end.

    Only thinking before the calls counts: a `<think>` after a `<tool_call>` tag is left
    alone (it may be inside an argument). A lone `</think>` (the thinking began in the
    prompt) drops everything before it.
    """
    lone_close, call = _THINK_CLOSE.search(text), _OPEN_TAG.search(text)
    if lone_close and not _THINK_OPEN.search(text) and (call is None or lone_close.start() < call.start()):
        text = text[lone_close.end():]
        call = _OPEN_TAG.search(text)
    kept, i = [], 0
    while (opening := _THINK_OPEN.search(text, i)) is not None:
        # the first tag at or after i: searched again only once i has passed the last one found,
        # so the text is scanned once (searching from i on every block made this quadratic)
        if call is not None and call.start() < i:
            call = _OPEN_TAG.search(text, i)
        if call is not None and call.start() < opening.start():
            break
        kept.append(text[i:opening.start()])
        closing = _THINK_CLOSE.search(text, opening.end())
        if closing is None:  # unclosed: nothing after it closes either, so this is the last block
            call = _OPEN_TAG.search(text, opening.end())
            i = call.start() if call else len(text)
            break
        i = closing.end()
    kept.append(text[i:])
    return "".join(kept)


def close_open_call(reply):
    """Append `</tool_call>` if generation stopped inside a tag (any spelling the parser accepts),
    so a history the model reads again stays well-formed."""
    opened = len(_OPEN_TAG.findall(reply))
    closed = len(_CLOSE_TAG.findall(reply))
    return reply + "</tool_call>" if opened > closed else reply


def strip_fence(payload):
    """Remove a Markdown code fence (```json ... ```) around a payload, if any.

    The closing fence may be missing. Written with string methods: a regex with a lazy body
    followed by optional spaces re-scanned a long run of spaces from each place in it (quadratic).
    """
    opening = _FENCE_OPEN.match(payload)
    if opening is None:
        return payload
    body = payload[opening.end():].rstrip()  # the body ends before trailing spaces, a closing fence, and spaces
    return body[:-3].rstrip() if body.endswith("```") else body


# ---------------------------------------------------------------- decoding a payload

def _close_brackets(s):
    """Append the closers a truncated JSON/Python literal is missing; drop trailing commas."""
    stack, quote, escaped = [], None, False
    for ch in s:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            stack.append({"[": "]", "{": "}", "(": ")"}[ch])
        elif ch in "]})" and stack and stack[-1] == ch:
            stack.pop()
    tail = (quote or "") + "".join(reversed(stack))
    return re.sub(r",\s*([\]}])", r"\1", s.rstrip().rstrip(",") + tail)


_LITERAL_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def _is_dotted_name(node):
    """True for `f` or `a.b.f`: the only callees a Python-style call may name."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _from_ast(node):
    """A Python expression node -> plain value; calls `f(a=1)` -> {"name": "f", "arguments": {...}}."""
    if isinstance(node, ast.Constant) and not isinstance(node.value, (bytes, complex)) \
            and node.value is not Ellipsis:
        return node.value
    if isinstance(node, ast.Name) and node.id in _LITERAL_NAMES:
        return _LITERAL_NAMES[node.id]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_from_ast(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("'**' is not allowed in a call")
        return {str(_from_ast(k)): _from_ast(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _from_ast(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and _is_dotted_name(node.func):
        if any(kw.arg is None for kw in node.keywords) or any(isinstance(a, ast.Starred) for a in node.args):
            raise ValueError("'*' and '**' are not allowed in a call")
        name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr  # functions.f -> f
        arguments = {kw.arg: _from_ast(kw.value) for kw in node.keywords}
        if node.args:  # positional arguments keep their order; the registry names them
            arguments["__positional__"] = [_from_ast(a) for a in node.args]
        return {"name": name, "arguments": arguments}
    raise ValueError(f"unexpected {type(node).__name__} in a tool call")


def _decode_all_json(s):
    """One or more JSON values written back to back (`{...}{...}` or one per line)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while i < len(s):
        while i < len(s) and s[i] in " \t\r\n,;":
            i += 1
        if i == len(s):
            break
        value, i = decoder.raw_decode(s, i)
        values.append(value)
    if not values:
        raise ValueError("empty")
    return values[0] if len(values) == 1 else values


def decode_payload(payload):
    """The text inside a tag -> a Python value, trying JSON, then Python syntax, then repairs."""
    s = strip_fence(payload).strip()
    if not s:
        raise ValueError("the tool call is empty")
    if len(s) > MAX_PAYLOAD_CHARS:
        raise ValueError(f"the tool call is longer than {MAX_PAYLOAD_CHARS} characters")
    attempts = [s, _close_brackets(s)]
    for candidate in attempts:
        try:
            return _decode_all_json(candidate)
        except (ValueError, RecursionError):
            pass
        try:
            with warnings.catch_warnings():  # "invalid decimal literal" and the like are not ours to show
                warnings.simplefilter("ignore")
                tree = ast.parse(candidate, mode="eval")
            return _from_ast(tree.body)
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
            pass
    raise ValueError("the tool call is neither JSON nor a Python literal")


# ---------------------------------------------------------------- shaping calls

_ARGUMENT_KEYS = ("arguments", "parameters", "args", "input", "kwargs")


def _decode_arguments(arguments):
    """`arguments` as given -> a dict; a JSON (or Python-literal) string is decoded."""
    if arguments is None:
        return {}
    if isinstance(arguments, str):
        arguments = decode_payload(arguments) if arguments.strip() else {}
    if not isinstance(arguments, dict):
        raise ValueError(f"'arguments' must be an object, got {type(arguments).__name__}")
    return arguments


def normalize_calls(value):
    """A decoded payload -> (calls, errors), accepting a list, one object, or OpenAI's wrapper."""
    items = value if isinstance(value, list) else [value]
    calls, errors = [], []
    for item in items:
        if isinstance(item, list):  # [[{...}]]: one level too deep
            more_calls, more_errors = normalize_calls(item)
            calls += more_calls
            errors += more_errors
            continue
        if isinstance(item, dict) and isinstance(item.get("tool_calls"), list):
            more_calls, more_errors = normalize_calls(item["tool_calls"])
            calls += more_calls
            errors += more_errors
            continue
        if isinstance(item, dict) and isinstance(item.get("function"), dict):
            item = item["function"]  # {"type": "function", "function": {...}}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            errors.append(f"each call must be an object with a 'name' and 'arguments', got {_short(item)}")
            continue
        key = next((k for k in _ARGUMENT_KEYS if k in item), None)
        try:
            arguments = _decode_arguments(item.get(key) if key else None)
        except (ValueError, RecursionError) as e:
            errors.append(f"{item['name']}: could not read the arguments ({e})")
            continue
        calls.append({"name": item["name"].strip(), "arguments": arguments})
    return calls, errors


def _short(value, limit=80):
    """A value as a short one-line string for an error message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _looks_like_calls(value):
    """True if a value is shaped like a call or a list of calls (for replies with no tag)."""
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(
        isinstance(i, dict) and isinstance(i.get("name"), str) and any(k in i for k in _ARGUMENT_KEYS)
        or isinstance(i, dict) and isinstance(i.get("function"), dict)
        for i in items
    )


# ---------------------------------------------------------------- the public functions

def parse_reply(text):
    """A model reply -> ParsedReply(calls, errors, text outside the calls). Never raises."""
    try:
        return _parse_reply(text)
    except Exception as e:  # a parser bug must not crash the agent; report it to the model instead
        return ParsedReply([], [f"could not read the reply ({type(e).__name__})"], str(text).strip())


def _parse_reply(text):
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    body = strip_think(text)
    calls, errors, outside, last = [], [], [], 0
    tags, tags_chars, skipped = 0, 0, 0
    for match in _TOOL_CALL.finditer(body):
        outside.append(body[last:match.start()])
        last = match.end()
        payload = match.group("body")
        if not payload.strip():
            continue  # an empty tag (or an opening tag right before another) holds no call
        # a budget on the tags decoded keeps a flood of them cheap (a payload over the limit is refused unread)
        tags, tags_chars = tags + 1, tags_chars + min(len(payload), MAX_PAYLOAD_CHARS)
        if tags > MAX_TAGS or tags_chars > MAX_TAGS_CHARS:
            skipped += 1
            continue
        try:
            found, bad = normalize_calls(decode_payload(payload))
        except (ValueError, RecursionError, MemoryError) as e:
            found, bad = [], [f"{e}: {_short(payload.strip())}"]
        calls += found
        errors += bad
    if len(errors) > MAX_TAGS:  # a flood of bad calls (a tag can hold several) is summed up, not listed
        errors = errors[:MAX_TAGS - 1] + [f"{len(errors) - MAX_TAGS + 1} more calls could not be read"]
    if skipped:
        errors.append(f"{skipped} more tool call tag(s) left unread: a reply is read up to "
                      f"{MAX_TAGS} tags and {MAX_TAGS_CHARS} characters of calls")
    outside.append(body[last:])
    rest = _STRAY_TAG.sub("", "".join(outside))
    rest = _EMPTY_FENCE.sub("", rest).strip()
    if not calls and not errors and rest:
        # no tag at all: accept a reply that is nothing but call-shaped JSON
        try:
            value = decode_payload(rest)
        except (ValueError, RecursionError, MemoryError):
            value = None
        if _looks_like_calls(value):
            calls, errors = normalize_calls(value)
            rest = ""
    return ParsedReply(calls, errors, rest)


def parse_tool_calls(text):
    """A model reply -> [{"name": str, "arguments": dict}]; unreadable calls are left out."""
    return parse_reply(text).calls
