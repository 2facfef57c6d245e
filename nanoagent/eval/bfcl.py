"""Tool-call accuracy, BFCL style: the model's calls are parsed and matched against ground truth (AST match).

The Berkeley Function Calling Leaderboard ships its data in the `bfcl-eval` wheel; we take
only `bfcl_eval/data/` out of it (the package itself is never installed). The rules of its
AST checker are re-implemented here:

- the function name must be exactly the expected one, and the number of calls must match;
- every required parameter is present, and no parameter the function does not declare;
- each value has the declared type (an int is accepted for a float; list items and dict
  entries are checked recursively; a bool is never an int);
- each value is among the allowed ones; strings compare after BFCL's normalisation
  (lowercase; spaces and , . / - _ * ^ removed; ' read as ");
- a parameter may be left out only when "" is among its allowed values;
- parallel calls match in any order (each expected call to a different produced call);
- irrelevance: the right answer is to call nothing.
Lesson: lessons/15_data_and_eval/README.md.
"""
from __future__ import annotations

import json
import re
from collections import Counter

from ..data.benchmarks import CATEGORIES, bfcl_data_dir, load_category
from ..toolcalls import parse_reply
from .replies import greedy_replies

# ---- BFCL function docs -> JSON Schema for the tools prompt ------------------------------

JSON_SCHEMA_TYPES = {"dict": "object", "float": "number", "tuple": "array", "integer": "integer",
                     "string": "string", "boolean": "boolean", "array": "array", "object": "object",
                     "number": "number"}


def to_json_schema(node):
    """A BFCL parameter doc (types dict/float/tuple/any) -> JSON Schema (object/number/array/no type)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "type" and isinstance(v, str):
            if v != "any":  # no type at all is JSON Schema's "any"
                out["type"] = JSON_SCHEMA_TYPES.get(v, v)
        elif k == "properties" and isinstance(v, dict):
            out[k] = {name: to_json_schema(p) for name, p in v.items()}
        else:
            out[k] = to_json_schema(v)
    return out


def bfcl_tools(functions: list[dict]) -> list[dict]:
    """BFCL `function` entries -> NanoAgent tools {name, description, parameters (JSON Schema)}."""
    return [{"name": f["name"], "description": f.get("description", ""),
             "parameters": to_json_schema(f.get("parameters", {"type": "dict", "properties": {}}))}
            for f in functions]


# ---- the checker -------------------------------------------------------------------------

PY_TYPES = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list, "tuple": list,
            "dict": dict, "object": dict, "number": float}
_STRIP = re.compile(r"[ ,./\-_*^]")


def normalize_string(s: str) -> str:
    """BFCL's string normalisation: drop spaces and , . / - _ * ^, lowercase, read ' as "."""
    return _STRIP.sub("", s).lower().replace("'", '"')


def type_ok(value, schema: dict) -> bool:
    """Does `value` have the declared type? int counts as float; lists and dicts are checked inside."""
    kind = schema.get("type", "any")
    if kind == "any" or kind not in PY_TYPES:
        return True
    want = PY_TYPES[kind]
    if want is float:
        return type(value) in (int, float)  # exact types: a bool is not a number
    if type(value) is not want:
        return False
    if want is list and isinstance(schema.get("items"), dict):
        return all(type_ok(v, schema["items"]) for v in value)
    if want is dict and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        return all(type_ok(v, props[k]) for k, v in value.items() if k in props)
    return True


def value_matches(value, allowed) -> bool:
    """One produced value against one allowed option (an option may be a dict of allowed-value lists)."""
    if isinstance(allowed, dict):
        if not isinstance(value, dict):
            return False
        if any(k not in allowed for k in value):
            return False
        for k, options in allowed.items():
            options = options if isinstance(options, list) else [options]
            if k not in value:
                if "" not in options:
                    return False
            elif not any(value_matches(value[k], o) for o in options):
                return False
        return True
    if isinstance(allowed, (list, tuple)):
        return isinstance(value, list) and len(value) == len(allowed) and \
            all(value_matches(v, a) for v, a in zip(value, allowed))
    if isinstance(allowed, str):
        return isinstance(value, str) and normalize_string(value) == normalize_string(allowed)
    if isinstance(allowed, bool) or isinstance(value, bool):
        return type(value) is type(allowed) and value == allowed
    if isinstance(value, (int, float)) and isinstance(allowed, (int, float)):
        return float(value) == float(allowed)
    return value == allowed


def check_call(call: dict, function: dict, expected: dict) -> str | None:
    """One produced call {name, arguments} against one expected call {name: {param: [allowed...]}}.

    Returns None when it matches, else the reason it does not.
    """
    (name, params), = expected.items()
    if call["name"] != name:
        return f"wrong function: {call['name']!r} instead of {name!r}"
    schema = function.get("parameters", {})
    declared, required = schema.get("properties", {}), schema.get("required", [])
    args = call["arguments"]
    for p in required:
        if p not in args:
            return f"{name}: missing required parameter {p!r}"
    for p, value in args.items():
        if p not in declared or p not in params:
            return f"{name}: unexpected parameter {p!r}"
        if not type_ok(value, declared[p]):
            return f"{name}: {p}={json.dumps(value)} is not of type {declared[p].get('type')}"
        if not any(value_matches(value, a) for a in params[p] if not (a == "" and value != "")):
            return f"{name}: {p}={json.dumps(value)} is not among {json.dumps(params[p])[:120]}"
    for p, allowed in params.items():
        if p not in args and "" not in allowed:
            return f"{name}: optional parameter {p!r} left out, but the answer needs it"
    return None


def _match_all(calls, expected, functions, used=()) -> bool:
    """Order-free matching: can each expected call be matched to a different produced call?"""
    if not expected:
        return True
    (name, _), = expected[0].items()
    fn = functions.get(name)
    for j, c in enumerate(calls):
        if j not in used and fn is not None and check_call(c, fn, expected[0]) is None:
            if _match_all(calls, expected[1:], functions, (*used, j)):
                return True
    return False


def check_item(item: dict, calls: list[dict]) -> tuple[bool, str]:
    """Produced calls for one BFCL item -> (correct, reason)."""
    if item["category"] == "irrelevance":
        return (not calls, "" if not calls else f"called {calls[0]['name']!r} though no function fits")
    expected = item["ground_truth"]
    if not calls:
        return False, "no call"
    if len(calls) != len(expected):
        return False, f"{len(calls)} calls instead of {len(expected)}"
    functions = {f["name"]: f for f in item["functions"]}
    if len(expected) == 1:
        (name, _), = expected[0].items()
        if name not in functions:
            return False, f"the answer's function {name!r} is not among the item's functions"
        reason = check_call(calls[0], functions[name], expected[0])
        return reason is None, reason or ""
    if _match_all(calls, expected, functions):
        return True, ""
    reasons = [check_call(c, functions.get(next(iter(e)), {}), e) for c, e in zip(calls, expected)]
    return False, "no order of the calls matches: " + "; ".join(r for r in reasons if r)[:200]


# ---- running a model over the items ---------------------------------------------------------

def evaluate_item(model, item: dict, max_new_tokens: int = 256) -> dict:
    """Ask the model one BFCL question with its functions as tools; parse and check the reply."""
    reply = model.chat(item["messages"], tools=bfcl_tools(item["functions"]), max_new_tokens=max_new_tokens,
                       temperature=0.0)
    return score_reply(item, reply)


def score_reply(item: dict, reply: str) -> dict:
    """A reply to a BFCL item -> its verdict: parsed calls checked against the ground truth."""
    parsed = parse_reply(reply)
    has_tag = "<tool_call" in reply.lower()
    ok, reason = check_item(item, parsed.calls)
    if parsed.errors and item["category"] != "irrelevance":
        ok, reason = False, "unparsable call: " + parsed.errors[0][:200]
    return {"id": item["id"], "category": item["category"], "correct": bool(ok), "reason": reason,
            "format_ok": has_tag and bool(parsed.calls) and not parsed.errors, "called": bool(parsed.calls),
            "reply": reply, "calls": parsed.calls}


def first_of_each(results: list[dict], n: int) -> list[dict]:
    """The first n results of each category, in order (a first-100 run read as a first-40 one)."""
    seen = Counter()
    out = []
    for r in results:
        seen[r["category"]] += 1
        if seen[r["category"]] <= n:
            out.append(r)
    return out


def summarize(results: list[dict]) -> dict:
    """Accuracy per category, their unweighted mean (BFCL's 'overall' for these categories), format figures."""
    out = {"categories": {}}
    for c in CATEGORIES:
        rs = [r for r in results if r["category"] == c]
        if rs:
            out["categories"][c] = {"accuracy": sum(r["correct"] for r in rs) / len(rs), "n": len(rs)}
    accs = [v["accuracy"] for v in out["categories"].values()]
    out["overall"] = sum(accs) / len(accs) if accs else 0.0
    relevant = [r for r in results if r["category"] != "irrelevance"]
    # format compliance: of the replies that should hold calls, the share with a <tool_call> that parses cleanly
    out["format_compliance"] = sum(r["format_ok"] for r in relevant) / len(relevant) if relevant else None
    tagged = [r for r in results if "<tool_call" in r["reply"].lower()]
    out["tagged_parse_rate"] = sum(r["format_ok"] for r in tagged) / len(tagged) if tagged else None
    out["n"] = len(results)
    return out


def run_toolcall(model, categories=CATEGORIES, limit: int | None = None, bfcl_dir=None,
                 max_new_tokens: int = 256, progress: bool = True, batch: int = 8) -> dict:
    """The whole tool-call evaluation: the first `limit` items of each category (BFCL's order),
    decoded `batch` at a time."""
    folder = bfcl_data_dir(bfcl_dir)
    items = [it for c in categories for it in load_category(folder, c)[:limit]]
    replies = greedy_replies(model, [it["messages"] for it in items], [bfcl_tools(it["functions"]) for it in items],
                             max_new_tokens, batch, progress, "toolcall")
    results = [score_reply(it, r) for it, r in zip(items, replies)]
    return {"summary": summarize(results), "results": results}


def format_table(summary: dict) -> str:
    rows = [("category", "n", "accuracy")] + [
        (c, str(v["n"]), f"{100 * v['accuracy']:.1f}%") for c, v in summary["categories"].items()]
    rows.append(("overall (mean)", str(summary["n"]), f"{100 * summary['overall']:.1f}%"))
    fc = summary.get("format_compliance")
    rows.append(("format compliance", "", "-" if fc is None else f"{100 * fc:.1f}%"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}" for r in rows)
