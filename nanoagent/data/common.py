"""The common form every adapter (adapters.py) returns, and the pieces that bring a source's
tools and calls into it: JSON that may be Python, flat parameter lists -> JSON Schema, calls
checked against the tools they name. A row that does not fit raises `Drop(reason)`.
"""
from __future__ import annotations

import ast
import json
import re

from ..toolcalls import decode_payload

class Drop(ValueError):
    """This row does not fit; `reason` is a short key for the stats table."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# ---- shared pieces: JSON that may be Python, tools, calls -------------------------------------

def loads_lenient(value, what="value"):
    """A JSON (or Python-literal) string -> value; values that are not strings pass through."""
    if not isinstance(value, str):
        return value
    s = value.strip()
    if not s:
        return None
    try:
        return json.loads(s)
    except ValueError:
        pass
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return decode_payload(s)  # several objects back to back, trailing commas, cut-off brackets
    except (ValueError, RecursionError):
        raise Drop(f"unparsable {what}", s[:80]) from None


PY_TO_JSON = {"str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
              "number": "number", "bool": "boolean", "boolean": "boolean", "list": "array", "array": "array",
              "tuple": "array", "set": "array", "dict": "object", "object": "object", "any": None, "callable": None}


def type_from_hint(hint: str) -> tuple[dict, bool]:
    """xLAM's Python-ish type text ("str", "List[int]", "str, optional") -> (JSON Schema, optional?)."""
    text = (hint or "").strip()
    optional = bool(re.search(r",\s*optional\s*$", text, re.IGNORECASE)) or text.lower().startswith("optional[")
    text = re.sub(r",\s*optional\s*$", "", text, flags=re.IGNORECASE)
    m = re.fullmatch(r"(?i)optional\[(.*)\]", text)
    text = m.group(1) if m else text
    m = re.fullmatch(r"(?i)(list|tuple|set|sequence)\[(.*)\]", text)
    if m:
        items, _ = type_from_hint(m.group(2))
        return ({"type": "array", "items": items} if items else {"type": "array"}), optional
    m = re.fullmatch(r"(?i)(dict|mapping)\[.*\]", text)
    if m:
        return {"type": "object"}, optional
    if re.fullmatch(r"(?i)union\[.*\]", text) or "|" in text:
        return {}, optional
    kind = PY_TO_JSON.get(text.lower())
    return ({"type": kind} if kind else {}), optional


def schema_from_flat(params: dict) -> dict:
    """xLAM's flat `{pname: {type, description, default}}` -> a JSON Schema object with `required`."""
    if isinstance(params, dict) and params.get("type") in ("object", "dict") and "properties" in params:
        return params  # already JSON Schema
    props, required = {}, []
    for name, spec in (params or {}).items():
        spec = spec if isinstance(spec, dict) else {"description": str(spec)}
        schema, optional = type_from_hint(str(spec.get("type", "")))
        if spec.get("description"):
            schema["description"] = spec["description"]
        if "default" in spec and spec["default"] not in (None, ""):
            schema["default"] = spec["default"]
            optional = True
        props[name] = schema
        if not optional:
            required.append(name)
    return {"type": "object", "properties": props, "required": required}


def clean_tools(tools) -> list[dict]:
    """Any tool list (JSON string, OpenAI-wrapped, bare, flat xLAM params) -> bare JSON-Schema tools."""
    tools = loads_lenient(tools, "tools") if isinstance(tools, str) else tools
    if tools is None:
        return []
    if isinstance(tools, dict):
        tools = [tools]
    out = []
    for t in tools:
        if not isinstance(t, dict):
            raise Drop("unparsable tools", str(t)[:80])
        t = t["function"] if isinstance(t.get("function"), dict) else t
        if not isinstance(t.get("name"), str) or not t["name"].strip():
            raise Drop("unparsable tools", "a tool without a name")
        params = loads_lenient(t.get("parameters"), "tools") or {}
        out.append({"name": t["name"].strip(), "description": str(t.get("description") or ""),
                    "parameters": schema_from_flat(params) if isinstance(params, dict) else
                    {"type": "object", "properties": {}}})
    return out


def clean_calls(calls, tools: list[dict] | None) -> list[dict]:
    """Calls in any form -> [{"name", "arguments": dict}]; names must be declared (when tools are known)."""
    calls = loads_lenient(calls, "arguments") if isinstance(calls, str) else calls
    calls = calls if isinstance(calls, list) else [calls]
    declared = {t["name"]: t for t in tools} if tools is not None else None
    out = []
    for c in calls:
        if not isinstance(c, dict):
            raise Drop("unparsable arguments", str(c)[:80])
        c = c["function"] if isinstance(c.get("function"), dict) else c
        name = c.get("name")
        if not isinstance(name, str) or not name.strip():
            raise Drop("unparsable arguments", "a call without a name")
        args = c.get("arguments", c.get("parameters", {}))
        args = loads_lenient(args, "arguments") if isinstance(args, str) else args
        args = {} if args is None else args
        if not isinstance(args, dict):
            raise Drop("unparsable arguments", f"{name}: arguments are {type(args).__name__}")
        if declared is not None:
            if name.strip() not in declared:
                raise Drop("undeclared tool", name)
            props = declared[name.strip()].get("parameters", {}).get("properties", {})
            args = {k: typed(v, props.get(k) or {}) for k, v in args.items()}
        out.append({"name": name.strip(), "arguments": args})
    return out


def typed(value, param: dict):
    """A value as the type its parameter declares when it is written as a string that reads exactly as one
    ("4" -> 4 for an integer, "2.5" -> 2.5 for a number, "true" -> True for a boolean; 4.0 -> 4 for an
    integer). A third of the real sets' numeric arguments are strings, and a model shown them quotes numbers
    (BFCL: `"radius": "4"` is not an integer). A leading zero ("02139") stays a string: it is a code."""
    kind = param.get("type") if isinstance(param, dict) else None
    if isinstance(value, str):
        text = value.strip()
        if kind in ("integer", "number") and re.fullmatch(r"-?(0|[1-9]\d*)", text):
            return int(text)
        if kind == "number" and re.fullmatch(r"-?(0|[1-9]\d*)\.\d+", text):
            return float(text)
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def finish(messages: list[dict], tools: list[dict] | None, source: str) -> dict:
    """Check a converted chat and wrap it in the common form."""
    if not any(m["role"] == "assistant" for m in messages):
        raise Drop("no assistant turn")
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            continue
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            raise Drop("empty turn", m["role"])
    out = {"messages": messages}
    if tools:
        out["tools"] = tools
    out["source"] = source
    return out
