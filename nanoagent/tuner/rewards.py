"""Rewards for a sampled reply to a tool prompt: is the call right, and is the reply cleanly formed?

GRPO (grpo.py) learns from a number per reply. Here it is made of two terms:

    reward = correct + format_weight * format

- `correct` uses the AST rules of the project's BFCL checker (eval/bfcl.py `check_call`): the
  function name, every required argument present, no undeclared one, values of the declared type
  and equal to the reference's after BFCL's normalisation, parallel calls matched in any order.
  1.0 for an exact match; for the right function names (the same multiset) with some arguments
  wrong, PARTIAL + (1 - PARTIAL) * k / n, k of the n expected calls matched exactly; 0 for a
  wrong or missing call, or one that does not parse. When the reference is "no call", 1.0 only
  when the reply calls nothing (and says something: an empty reply is not an answer).
- `format` is 1 when the reply is clean: it ended at <|im_end|> (finish reason "stop"), and it
  is either plain text with no call in it, or text followed by one `<tool_call>` tag holding a
  strict JSON list of {"name", "arguments"} objects, with nothing after the closing tag.

A reference call {"name", "arguments"} becomes BFCL's expected form {name: {param: [value]}},
each value the one allowed option.

A reply to a verifiable-instruction prompt (an IFEval-form item: "prompt", "instruction_id_list",
"kwargs"; data/instructions.py makes them) gets `instruction_reward`, of the same form: `correct` is
the share of the item's instructions the reply follows, checked strictly by the project's IFEval
checker (eval/ifeval.py), and `format` is 1 when the reply ended at <|im_end|> and holds no
`<tool_call>` (no tools are offered there).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

from ..eval.bfcl import check_call
from ..eval.chain import final_number, same_number
from ..eval.ifeval import CHECKERS, UNCHECKED, check_prompt
from ..tokenizer import normalize_tools
from ..toolcalls import parse_reply

PARTIAL = 0.5  # the floor of partial credit: the right functions, wrong arguments
FORMAT_WEIGHT = 0.2

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_ANY_TAG = re.compile(r"<\s*[/\\]?\s*tool_calls?\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Reward:
    total: float  # correct + format_weight * format: what GRPO learns from
    correct: float  # 1 exact, [PARTIAL, 1) right names with wrong arguments, 0 otherwise (instructions: share kept)
    format: float  # 1 clean, 0 not
    reason: str  # why correct < 1 and/or format is 0 ("" when neither)


# ---- the reference in BFCL's expected form -------------------------------------------------------

def allowed(value):
    """A reference value -> BFCL's allowed form: a dict's entries each become a one-option list."""
    if isinstance(value, dict):
        return {k: [allowed(v)] for k, v in value.items()}
    if isinstance(value, list):
        return [allowed(v) for v in value]
    return value


def expected_call(call: dict) -> dict:
    """{"name", "arguments"} -> {name: {param: [the reference value]}} (BFCL's ground-truth form)."""
    return {call["name"]: {p: [allowed(v)] for p, v in call["arguments"].items()}}


def reference_problem(reference: list[dict], tools: list[dict]) -> str | None:
    """Why a reference cannot be graded (its function is not offered, or it fails its own check), or None."""
    functions = {t["name"]: t for t in normalize_tools(tools)}
    for call in reference:
        if call["name"] not in functions:
            return f"the reference calls {call['name']!r}, which is not among the tools"
        reason = check_call(call, functions[call["name"]], expected_call(call))
        if reason is not None:
            return f"the reference fails the checker: {reason}"
    return None


# ---- correctness ---------------------------------------------------------------------------------

def matched(calls: list[dict], expected: list[dict], functions: dict) -> int:
    """The most expected calls matched exactly, each to a different produced call (augmenting paths)."""
    fits = [[j for j, c in enumerate(calls)
             if next(iter(e)) in functions and check_call(c, functions[next(iter(e))], e) is None]
            for e in expected]
    owner: dict[int, int] = {}  # produced call -> the expected call it is matched to

    def place(i, seen):
        for j in fits[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or place(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(place(i, set()) for i in range(len(expected)))


def correctness(reply: str, reference: list[dict], tools: list[dict], answer: float | None = None) -> tuple[float, str]:
    """A reply against the reference calls ([]: no call is the right answer) -> (score, reason). Where no call
    is right and the data's own reply states a number as its answer (`answer`: a word problem offered tools
    that do not fit it), the reply's final number must be that one; else any reply that calls nothing and
    says something is right."""
    parsed = parse_reply(reply)
    if not reference:
        if parsed.calls or parsed.errors:
            return 0.0, "called a function though none fits"
        if answer is not None and not same_number(final_number(reply), answer):
            return 0.0, f"a final number other than the answer ({answer:g})"
        return (1.0, "") if reply.strip() else (0.0, "an empty reply")
    if parsed.errors:
        return 0.0, "unparsable call: " + parsed.errors[0][:120]
    if not parsed.calls:
        return 0.0, "no call"
    names = Counter(c["name"] for c in parsed.calls)
    if names != Counter(c["name"] for c in reference):
        return 0.0, f"wrong functions: {sorted(names.elements())} instead of {sorted(c['name'] for c in reference)}"
    functions = {t["name"]: t for t in normalize_tools(tools)}
    k = matched(parsed.calls, [expected_call(c) for c in reference], functions)
    if k == len(reference):
        return 1.0, ""
    return PARTIAL + (1.0 - PARTIAL) * k / len(reference), f"{len(reference) - k} call(s) with wrong arguments"


# ---- format --------------------------------------------------------------------------------------

def clean_format(reply: str, finish_reason: str) -> tuple[bool, str]:
    """Did the reply end at <|im_end|>, with either no call in it or one strict `<tool_call>` list last?"""
    if finish_reason != "stop":
        return False, "did not end at <|im_end|>"
    tags = _ANY_TAG.findall(reply)
    if not tags:
        parsed = parse_reply(reply)
        return (True, "") if not parsed.calls and not parsed.errors else (False, "a call without a <tool_call> tag")
    if tags != [_OPEN, _CLOSE]:
        return False, "not exactly one <tool_call>...</tool_call>"
    body, after = reply.split(_OPEN, 1)[1].split(_CLOSE, 1)
    if after.strip():
        return False, "text after </tool_call>"
    try:
        calls = json.loads(body)
    except ValueError:
        return False, "the calls are not strict JSON"
    if not isinstance(calls, list) or not calls or not all(
            isinstance(c, dict) and set(c) == {"name", "arguments"} and isinstance(c["name"], str)
            and isinstance(c["arguments"], dict) for c in calls):
        return False, 'not a list of {"name", "arguments"} objects'
    return True, ""


# ---- the reward ----------------------------------------------------------------------------------

def reward(reply: str, finish_reason: str, reference: list[dict], tools: list[dict],
           format_weight: float = FORMAT_WEIGHT, answer: float | None = None) -> Reward:
    """One sampled reply (text, without the stop token; its finish reason) -> its Reward (`answer`: see
    correctness)."""
    correct, why = correctness(reply, reference, tools, answer)
    clean, why_not = clean_format(reply, finish_reason)
    fmt = 1.0 if clean else 0.0
    return Reward(correct + format_weight * fmt, correct, fmt, "; ".join(r for r in (why, why_not) if r))


# ---- verifiable instructions ----------------------------------------------------------------------

def instruction_problem(item) -> str | None:
    """Why a row cannot be scored as an instruction item (not IFEval's form, an instruction the checker does
    not know, kwargs that do not line up), or None."""
    if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
        return "no prompt"
    ids, kwargs = item.get("instruction_id_list"), item.get("kwargs")
    if not isinstance(ids, list) or not ids:
        return "no instruction_id_list"
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        return "kwargs not one dict per instruction"
    unknown = [i for i in ids if i not in CHECKERS]
    return f"instruction unknown to the checker: {unknown[0]}" if unknown else None


def instruction_reward(reply: str, finish_reason: str, item: dict, format_weight: float = FORMAT_WEIGHT) -> Reward:
    """One sampled reply (text, without the stop token) to an instruction item -> its Reward: `correct` the
    share of the item's instructions followed (strict check; one the checker cannot decide here is left out),
    `format` 1 when it ended at <|im_end|> with no tool call tag in it."""
    strict = check_prompt(item, reply)["strict"]
    verdicts = [v for v in strict if v is not UNCHECKED]
    correct = sum(bool(v) for v in verdicts) / len(verdicts) if verdicts else 0.0
    broken = [i for i, v in zip(item["instruction_id_list"], strict) if v is False]
    if finish_reason != "stop":
        why_not = "did not end at <|im_end|>"
    elif _ANY_TAG.search(reply):
        why_not = "a <tool_call> tag where no tool is offered"
    else:
        why_not = ""
    fmt = 0.0 if why_not else 1.0
    why = ("not followed: " + ", ".join(broken)) if broken else ""
    return Reward(correct + format_weight * fmt, correct, fmt, "; ".join(r for r in (why, why_not) if r))


__all__ = ["Reward", "reward", "instruction_reward", "instruction_problem", "correctness", "clean_format",
           "expected_call", "reference_problem", "matched", "PARTIAL", "FORMAT_WEIGHT"]
