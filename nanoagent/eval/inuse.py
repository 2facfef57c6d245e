"""The agent in use: `nanoagent.Agent` with the project's real calculator and clock, on fixed requests
written here (none is a training row: the sums, the word problems and the cities are not the data's).

    sums     a bare expression ("What is 17 * 23 + 4?"): right when the final number is the value
    word     a short word problem of one or two steps: the same rule
    time     the time in a city none of the training rows names: right when a get_current_time call
             succeeded with a zone of that city's UTC offset and the answer holds the result's hour and
             minute (12- or 24-hour)
    direct   a question no offered tool fits: right when no tool is called and the answer holds the word asked

Besides each kind's accuracy it counts what an agent does with its tools: the share of requests with a call of
the tool they need that worked (sums, word, time) or with any call (direct), the tool errors, the calls sent again unchanged
after they failed (an agent that repeats a failed call never gets further), and how many requests that met an
error still ended right. Greedy, one conversation at a time, at most MAX_STEPS replies each.
"""
from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from tqdm import tqdm

from ..agent import Agent
from .chain import final_number, same_number

MAX_STEPS = 5
TOOLS = ("calculator", "get_current_time")

SUMS = (("What is 17 * 23 + 4?", 395), ("Calculate 1234 + 5678.", 6912), ("What is 15% of 80?", 12),
        ("How much is 144 / 12?", 12), ("What is 2 to the power of 10?", 1024), ("What is 999 * 3 - 7?", 2990),
        ("Compute (45 + 55) * 12.", 1200), ("What is 7.5 * 4?", 30), ("What is 3600 divided by 48?", 75),
        ("What's 81 - 27 * 2?", 27))
WORD = (("A book costs 12 dollars. How much do 7 books cost?", 84),
        ("I walk 3.5 km a day. How far do I walk in 30 days?", 105),
        ("A pizza is cut into 8 slices and 3 friends eat 2 slices each. How many slices are left?", 2),
        ("A car uses 6 liters of fuel per 100 km. How many liters does it need for 350 km?", 21),
        ("There are 24 students and each needs 3 pencils. Pencils come in boxes of 12. How many boxes are needed?", 6))
TIMES = (("What time is it in Rome?", "Europe/Rome"), ("What's the current time in Vancouver?", "America/Vancouver"),
         ("Tell me the time in Jakarta right now.", "Asia/Jakarta"),
         ("What time is it in Lagos at the moment?", "Africa/Lagos"),
         ("Can you check the local time in Helsinki?", "Europe/Helsinki"),
         ("What is the time in Buenos Aires now?", "America/Argentina/Buenos_Aires"),
         ("What time is it in Manila?", "Asia/Manila"), ("I need the current time in Denver.", "America/Denver"))
DIRECT = (("What is the capital of Italy?", "rome"), ("Who wrote Romeo and Juliet?", "shakespeare"),
          ("What color do you get when you mix blue and yellow?", "green"),
          ("Translate 'thank you' into French.", "merci"), ("What is the opposite of 'hot'?", "cold"))
NEEDS = {"sums": "calculator", "word": "calculator", "time": "get_current_time", "direct": None}


def inuse_items(limit: int | None = None) -> list[dict]:
    """The fixed requests (the first `limit` of each kind), in order, as {id, kind, question, gold}."""
    kinds = (("sums", SUMS), ("word", WORD), ("time", TIMES), ("direct", DIRECT))
    return [{"id": f"{kind}-{i}", "kind": kind, "question": q, "gold": gold}
            for kind, items in kinds for i, (q, gold) in enumerate(items[:limit])]


def said_time(answer: str, result: str) -> bool:
    """Does the answer hold the hour and minute of a get_current_time result, in 24- or 12-hour form (with the
    right AM or PM when it names one)?"""
    t = datetime.fromisoformat(result.split(" ", 1)[0])
    hours = {f"{t.hour}", f"{t.hour:02d}", f"{t.hour % 12 or 12}", f"{t.hour % 12 or 12:02d}"}
    half = "a" if t.hour < 12 else "p"
    for h in hours:
        for m in re.finditer(rf"(?<!\d){h}[:.]{t.minute:02d}(?!\d)(?::\d\d)?(\s*([ap])\.?m\b)?", answer, re.I):
            if m.group(2) is None or m.group(2).lower() == half:
                return True
    return False


def same_offset(result: str, zone: str) -> bool:
    """Was the result's time taken in a zone of `zone`'s UTC offset at that instant?"""
    t = datetime.fromisoformat(result.split(" ", 1)[0])
    return t.utcoffset() == t.astimezone(ZoneInfo(zone)).utcoffset()


def verdict(item: dict, answer: str, finished: bool, calls: list[tuple[dict, object]]) -> bool:
    """Is the request answered right? `calls`: every (call, its ToolResult) the agent made, in order."""
    if not finished:
        return False
    if item["kind"] == "direct":
        return not calls and item["gold"] in answer.lower()
    if item["kind"] == "time":
        done = [r.content for c, r in calls if c["name"] == "get_current_time" and r.ok]
        return any(same_offset(r, item["gold"]) and said_time(answer, r) for r in done)
    return same_number(final_number(answer), item["gold"])


def repeats(calls: list[tuple[dict, object]]) -> int:
    """Calls sent again unchanged after the same call failed."""
    failed, n = [], 0
    for call, result in calls:
        key = (call["name"], repr(sorted(call["arguments"].items())))
        n += key in failed
        if not result.ok:
            failed.append(key)
    return n


def run_item(agent: Agent, item: dict) -> dict:
    t0 = time.perf_counter()
    result = agent.run(item["question"])
    calls = [(c, r) for s in result.steps for c, r in zip(s.calls, s.results)]
    need = NEEDS[item["kind"]]
    return {"id": item["id"], "kind": item["kind"], "question": item["question"], "gold": item["gold"],
            "answer": result.answer, "correct": verdict(item, result.answer, result.finished, calls),
            "called_needed": any(c["name"] == need and r.ok for c, r in calls) if need else bool(calls),
            "tool_calls": len(calls), "tool_errors": sum(not r.ok for s in result.steps for r in s.results),
            "repeated": repeats(calls), "steps": len(result.steps), "finished": result.finished,
            "seconds": round(time.perf_counter() - t0, 2), "transcript": result.messages[1:]}


def summarize(results: list[dict]) -> dict:
    def share(rows, key):
        return sum(bool(r[key]) for r in rows) / len(rows) if rows else 0.0
    kinds = {k: [r for r in results if r["kind"] == k] for k in NEEDS}
    errored = [r for r in results if r["tool_errors"]]
    return {"n": len(results), "accuracy": share(results, "correct"),
            "kinds": {k: {"n": len(rows), "accuracy": share(rows, "correct"), "called": share(rows, "called_needed")}
                      for k, rows in kinds.items() if rows},
            "tool_errors": sum(r["tool_errors"] for r in results), "repeated_calls": sum(r["repeated"] for r in results),
            "met_an_error": len(errored), "recovered": sum(r["correct"] for r in errored)}


def run_inuse(model, limit: int | None = None, max_new_tokens: int = 256, max_steps: int = MAX_STEPS,
              progress: bool = True) -> dict:
    """The fixed requests (the first `limit` of each kind) through the agent with the real calculator and clock
    -> {summary, results}."""
    agent = Agent(model, tools=list(TOOLS), max_steps=max_steps, max_new_tokens=max_new_tokens, temperature=0.0)
    items = inuse_items(limit)
    results = [run_item(agent, it) for it in tqdm(items, desc="agent in use", unit="request", disable=not progress,
                                                  file=sys.stderr)]
    return {"summary": summarize(results), "results": results}


def format_table(s: dict) -> str:
    rows = [("kind", "n", "right", "a call of the tool it needs that worked")]
    rows += [(k, str(v["n"]), f"{100 * v['accuracy']:.0f}%",
              f"{100 * v['called']:.0f}%" + (" (any tool: should be 0)" if k == "direct" else ""))
             for k, v in s["kinds"].items()]
    rows.append(("all", str(s["n"]), f"{100 * s['accuracy']:.0f}%", ""))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]}".rstrip() for r in rows]
    return "\n".join(lines) + (f"\n{s['tool_errors']} tool errors; {s['repeated_calls']} calls repeated unchanged after "
                               f"they failed; {s['recovered']} of {s['met_an_error']} requests that met an error "
                               f"ended right")
