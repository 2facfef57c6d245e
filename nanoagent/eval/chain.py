"""Multi-step tool use, end to end: GSM8K test questions answered by `nanoagent.Agent` with the real
`calculator`, beside the same model answering the same questions with no tools.

The items are fixed: the first N questions of GSM8K's test split in file order (`openai/gsm8k`, config
`main`; the shared data folder's gsm8k/test.jsonl when there is one). The project never trains on them.

    with tools     Agent(model, tools=["calculator"], max_steps=6): the model calls the calculator as it
                   likes, each result goes back as a tool turn, until a reply with no call (its answer) or
                   the steps run out (no answer: wrong). Greedy, one conversation at a time.
    without tools  one greedy reply to the question alone, the replies decoded in batches.

Scoring (both arms): the reply's final number against GSM8K's `#### N`. The final number is the last
number in the span after the reply's last "answer is", "answer:" or "####" up to the end of that sentence
or line ("The answer is 5 + 3 = 8. Then ..." -> 8); with no such phrase, the last number in the reply.
Numbers may carry thousands commas, a sign, decimals, and a currency sign or unit around them
("$1,234.50" -> 1234.5, "18.0" -> 18). They match when |pred - gold| <= 1e-6 * max(1, |gold|).
Reported: each arm's accuracy, the mean number of calculator calls per question, and the wall time.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..agent import Agent
from ..data.io import find_data_dir, read_rows
from .replies import greedy_replies

GSM8K_TEST = ("openai/gsm8k", "main", "test")  # hub name, config, split
MAX_STEPS = 6


# ---- the final number of a reply ---------------------------------------------------------------------

# a number: thousands groups (1,234,567) or plain digits, then decimals; a minus sign only where a word
# starts ("-4", not the "-" of "16-3"); never the middle of another number
_NUMBER = re.compile(r"(?:(?<![\w.])-)?(?<![\d.])(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_MARKER = re.compile(r"answer\s+is|answer\s*:|####", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")


def numbers(text: str) -> list[float]:
    """Every number in the text, in order ("-3", "1,234.5", "$18" -> -3.0, 1234.5, 18.0)."""
    return [float(m.group().replace(",", "")) for m in _NUMBER.finditer(text)]


def stated_answer(text: str) -> float | None:
    """The number a text states as its answer, after its last "The answer is" / "Answer:" / "####"; None
    without such a marker (or a number after it)."""
    markers = list(_MARKER.finditer(text))
    if not markers:
        return None
    rest = text[markers[-1].end():].lstrip()
    end = _SENTENCE_END.search(rest)
    found = numbers(rest[:end.start()] if end else rest)
    return found[-1] if found else None


def final_number(text: str) -> float | None:
    """A reply's final answer as a number, by the rule of the module doc; None when it holds no number."""
    stated = stated_answer(text)
    if stated is not None:
        return stated
    found = numbers(text)
    return found[-1] if found else None


def same_number(pred: float | None, gold: float) -> bool:
    return pred is not None and abs(pred - gold) <= 1e-6 * max(1.0, abs(gold))


# ---- the items -------------------------------------------------------------------------------------

def gsm8k_test_rows(path: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """GSM8K test rows: `path` (a .jsonl), else the shared data folder's gsm8k/test.jsonl, else the hub."""
    if path is None:
        local = find_data_dir(required=False)
        if local is not None and (local / "gsm8k" / "test.jsonl").is_file():
            path = local / "gsm8k" / "test.jsonl"
    if path is not None:
        return read_rows(str(path), limit=limit)
    name, config, split = GSM8K_TEST
    return read_rows(name, config, split, limit)


def chain_items(path=None, limit: int | None = None) -> list[dict]:
    """The first `limit` GSM8K test questions as {id, question, gold}; the id is the row's place in the split."""
    items = []
    for i, row in enumerate(gsm8k_test_rows(path, limit)):
        gold = numbers(str(row["answer"]).rsplit("####", 1)[-1])
        if "####" not in str(row["answer"]) or not gold:
            raise ValueError(f"GSM8K test row {i} has no `#### N` answer; is this GSM8K?")
        items.append({"id": f"gsm8k-test-{i}", "question": row["question"], "gold": gold[0]})
    return items


# ---- the two arms -------------------------------------------------------------------------------------

def agent_for(model, max_steps: int = MAX_STEPS, max_new_tokens: int = 384) -> Agent:
    """The agent of the with-tools arm: the real calculator, greedy, at most `max_steps` replies."""
    return Agent(model, tools=["calculator"], max_steps=max_steps, max_new_tokens=max_new_tokens, temperature=0.0)


def with_tools(agent: Agent, item: dict) -> dict:
    """One question through the agent loop -> its verdict, the calls made and the transcript."""
    t0 = time.perf_counter()
    result = agent.run(item["question"])
    results = [r for s in result.steps for r in s.results]
    pred = final_number(result.answer) if result.finished else None
    return {"answer": result.answer, "pred": pred, "correct": same_number(pred, item["gold"]),
            "tool_calls": sum(len(s.calls) for s in result.steps), "tool_errors": sum(not r.ok for r in results),
            "steps": len(result.steps), "finished": result.finished, "seconds": round(time.perf_counter() - t0, 2),
            "transcript": result.messages[1:]}


def without_tools(item: dict, reply: str) -> dict:
    pred = final_number(reply)
    return {"answer": reply, "pred": pred, "correct": same_number(pred, item["gold"])}


def summarize(results: list[dict], seconds: dict) -> dict:
    n = len(results)
    tools = [r["with_tools"] for r in results]
    plain = [r["without_tools"] for r in results]
    return {"n": n,
            "with_tools": {"accuracy": sum(r["correct"] for r in tools) / n if n else 0.0,
                           "mean_tool_calls": sum(r["tool_calls"] for r in tools) / n if n else 0.0,
                           "called": sum(r["tool_calls"] > 0 for r in tools) / n if n else 0.0,
                           "finished": sum(r["finished"] for r in tools) / n if n else 0.0,
                           "seconds": seconds["with_tools"]},
            "without_tools": {"accuracy": sum(r["correct"] for r in plain) / n if n else 0.0,
                              "seconds": seconds["without_tools"]}}


def run_chain(model, path=None, limit: int | None = None, max_new_tokens: int = 384, max_steps: int = MAX_STEPS,
              progress: bool = True, batch: int = 8) -> dict:
    """The chain evaluation on the first `limit` GSM8K test questions: both arms, scored, with wall times."""
    items = chain_items(path, limit)
    t0 = time.perf_counter()
    replies = greedy_replies(model, [[{"role": "user", "content": it["question"]}] for it in items], None,
                             max_new_tokens, batch, progress, "chain, no tools")
    seconds = {"without_tools": round(time.perf_counter() - t0, 1)}
    agent, t0 = agent_for(model, max_steps, max_new_tokens), time.perf_counter()
    arm = [with_tools(agent, it) for it in tqdm(items, desc="chain, calculator", unit="item", disable=not progress,
                                                file=sys.stderr)]
    seconds["with_tools"] = round(time.perf_counter() - t0, 1)
    results = [{"id": it["id"], "question": it["question"], "gold": it["gold"], "with_tools": a,
                "without_tools": without_tools(it, r)} for it, r, a in zip(items, replies, arm)]
    return {"summary": summarize(results, seconds), "results": results}


def format_table(s: dict) -> str:
    t, p = s["with_tools"], s["without_tools"]
    rows = [("", "n", "accuracy", "calls/question", "seconds"),
            ("with calculator", str(s["n"]), f"{100 * t['accuracy']:.1f}%", f"{t['mean_tool_calls']:.2f}",
             f"{t['seconds']:.0f}"),
            ("without tools", str(s["n"]), f"{100 * p['accuracy']:.1f}%", "-", f"{p['seconds']:.0f}")]
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"{r[0]:<{w[0]}}" + "".join(f"  {c:>{w[i + 1]}}" for i, c in enumerate(r[1:])) for r in rows]
    return "\n".join(lines) + f"\n{100 * t['called']:.0f}% of questions called the calculator; " \
                              f"{100 * t['finished']:.0f}% ended with an answer within the steps"
