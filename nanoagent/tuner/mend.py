"""Recovery rows from the model's own failed calls: run the agent on fresh requests with the real
calculator and clock, and where a call fails, keep the model's call and the tool's error and write the
call that mends it, its real result and the answer.

    python -m nanoagent.tuner.mend --model runs/tools-stage-2/model --n 800 --out runs/mend/rows.jsonl

Why: the recovery family (data/recovery.py) shows mistakes the data makes up, on requests a trained model
gets right unaided, and training on it did not teach mending: in use the model sent its failed call
again, unchanged, after 12 of 15 errors that said how to mend it. Its own mistakes come in its own
context, where copying its last call is the strongest habit it has; these rows put the mend there.

The requests are data/requests.py's (the in-use evaluation's kinds, none of its requests). Each gets up
to --steps replies, greedy, decoded together a step at a time. What a request's run becomes:

    mended     a call failed: the conversation up to that error (the model's reply shown, not learned:
               "weight": 0), then the mend, its result and the answer. The mend is the call the error
               suggests when it suggests one that gives the right result ("did you mean '2**10'?"),
               else the right call (the request's expression or city's zone); for a question no tool
               fits, the answer without a call. When the model had sent the failed call again, a
               second row ends at that repeat's error instead (both replies not learned).
    called     no call where a tool was needed: the right call, its result and the answer
    misread    the calls worked and the answer was wrong (or never came): the right call, its result and
               the answer
    right      right unaided (kept as "own-right": the habit the rows must not break)
    wrong      a question no tool fits answered wrong without a call: the answer written

The answer written is the tools stage's own form: "15*4 = 60.", "In Apia it is 08:15 on Monday, ...".
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tqdm import tqdm

from ..agent import Agent, Step, run_call
from ..data.io import DataError
from ..data.mix import write_jsonl
from ..data.own_tools import said_time
from ..data.requests import agent_requests
from ..eval.inuse import NEEDS, TOOLS, repeats, verdict
from ..generate import load
from ..train import run_command

HINT = re.compile(r"did you mean '([^']+)'\?")
ARGUMENT = {"calculator": "expression", "get_current_time": "timezone"}


def run_agents(model, agent: Agent, items: list[dict], steps: int, slots: int) -> list[tuple[list, list[Step]]]:
    """Each request through the agent's loop (Agent.take), greedy, `4 * slots` requests at a time decoded
    together a step at a time -> per request, (its messages, its steps)."""
    runs = [([{"role": "user", "content": it["question"]}], []) for it in items]
    block = 4 * slots
    with tqdm(total=len(items), desc="agent runs", unit="request", file=sys.stderr) as bar:
        for first in range(0, len(items), block):
            active = list(range(first, min(first + block, len(items))))
            for _ in range(steps):
                replies = model.chat_batch([runs[i][0] for i in active], tools=[agent.schemas] * len(active),
                                           slots=slots, **agent.generation)
                for i, reply in zip(active, replies):
                    messages, done = runs[i]
                    done.append(agent.take(messages, reply))
                active = [i for i in active if runs[i][1][-1].results]  # those that called go on
                if not active:
                    break
            bar.update(min(first + block, len(items)) - first)
    return runs


def call_for(item: dict, value: str) -> dict:
    """A call of the tool the request needs, with `value` as its one argument."""
    name = NEEDS[item["kind"]]
    return {"name": name, "arguments": {ARGUMENT[name]: value}}


def right_call(item: dict) -> dict | None:
    """The call that answers the request, or None for a question no tool fits."""
    if item["kind"] == "direct":
        return None
    return call_for(item, item["expression"] if item["kind"] in ("sums", "word") else item["gold"])


def answer(item: dict, call: dict, result: str) -> str:
    """The answer written after a call's result, in the tools stage's form."""
    if call["name"] == "calculator":
        return f"{call['arguments']['expression']} = {result}."
    local = datetime.fromisoformat(result.split(" ", 1)[0])
    return said_time(item["city"], local.astimezone(ZoneInfo(call["arguments"]["timezone"])), 24)


def ending(item: dict, call: dict | None, agent: Agent) -> list[dict] | None:
    """The messages that end a row from a call (or none, for a question no tool fits): the call, its real
    result, the answer; None when the call fails or its answer would not be right."""
    if call is None:
        return [{"role": "assistant", "content": item["answer"]}]
    result = run_call(call, agent.tools)
    said = answer(item, call, result.content) if result.ok else ""
    if not verdict(item, said, True, [(call, result)]):
        return None
    return [{"role": "assistant", "content": "", "tool_calls": [call]}, {"role": "tool", "content": result.content},
            {"role": "assistant", "content": said}]


def right_ending(item: dict, agent: Agent) -> list[dict]:
    rows = ending(item, right_call(item), agent)
    if rows is None:
        raise DataError(f"the right call {right_call(item)} for {item['question']!r} does not answer it")
    return rows


def mended_ending(item: dict, error: str, agent: Agent) -> list[dict]:
    """The ending after an error: from the call its "did you mean" suggests when that answers the request (the
    hint can be wrong: "America/Buenos_Rico" -> "America/Puerto_Rico"), else from the right call."""
    hint = HINT.search(error)
    hinted = ending(item, call_for(item, hint.group(1)), agent) if hint and item["kind"] != "direct" else None
    return hinted or right_ending(item, agent)


def shown(messages: list[dict]) -> list[dict]:
    """The model's own replies, shown but not learned."""
    return [m | {"weight": 0} if m["role"] == "assistant" else m for m in messages]


def mend(item: dict, messages: list[dict], steps: list[Step], agent: Agent) -> tuple[str, list[list[dict]]]:
    """A request's run -> (what it became, the rows' messages); see the module doc."""
    calls = calls_of(steps)
    finished = not steps[-1].results
    user = messages[:1]
    failed = [k for k, s in enumerate(steps) if any(not r.ok for r in s.results)]
    if not failed and verdict(item, steps[-1].reply if finished else "", finished, calls):
        return "right", [messages]
    if not calls:
        return ("wrong" if item["kind"] == "direct" else "called"), [user + right_ending(item, agent)]
    if not failed:
        return "misread", [user + right_ending(item, agent)]
    rows = []
    for k in failed[:2]:  # the first error, and the next when the model sent a failed call again at once
        error = " ".join(r.content for r in steps[k].results if not r.ok)
        rows.append(shown(cut_after_step(messages, k)) + mended_ending(item, error, agent))
        if repeats(calls_of(steps[:k + 2])) == repeats(calls_of(steps[:k + 1])):
            break
    return "mended", rows


def calls_of(steps: list[Step]) -> list[tuple]:
    return [(c, r) for s in steps for c, r in zip(s.calls, s.results)]


def cut_after_step(messages: list[dict], k: int) -> list[dict]:
    """The messages up to the tool results of step k (0-based): the user turn, then per step an assistant turn
    and its tool turns."""
    seen, end = -1, 0
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            seen += 1
            if seen > k:
                break
        end = i + 1
    return messages[:end]


def collect(model, items: list[dict], steps: int, slots: int, max_new_tokens: int) -> tuple[list[dict], Counter]:
    """The requests' runs -> (training rows, counts of what each run became, by kind)."""
    agent = Agent(model, tools=list(TOOLS), max_new_tokens=max_new_tokens, temperature=0.0)
    rows, counts = [], Counter()
    for item, (messages, done) in zip(items, run_agents(model, agent, items, steps, slots)):
        outcome, chats = mend(item, messages, done, agent)
        counts[outcome, item["kind"]] += 1
        counts["repeated", item["kind"]] += repeats(calls_of(done)) > 0
        rows += [{"messages": chat, "tools": agent.schemas, "source": f"own-{outcome}"} for chat in chats]
    return rows, counts


def table(counts: Counter, n: int) -> str:
    kinds = ("sums", "word", "time", "direct")
    outcomes = ("right", "mended", "called", "misread", "wrong", "repeated")
    lines = [f"{'':10}" + "".join(f"{k:>8}" for k in kinds)]
    lines += [f"{o:10}" + "".join(f"{counts[o, k]:>8}" for k in kinds) for o in outcomes]
    return "\n".join(lines) + f"\n({n} requests; repeated: runs that sent a failed call again unchanged)"


def run(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.tuner.mend", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="HF model folder whose own calls are mended")
    ap.add_argument("--n", type=int, default=600, help="requests, the four kinds in turn (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the requests (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=3, help="replies per request at most (default: %(default)s)")
    ap.add_argument("--slots", type=int, default=16, help="requests decoded together (default: %(default)s)")
    ap.add_argument("--max-new-tokens", type=int, default=160, help="longest reply (default: %(default)s)")
    ap.add_argument("--out", type=Path, required=True, help="the rows to write (.jsonl)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.steps < 2:
        ap.error("--n must be at least 1 and --steps at least 2 (a call, then what the model does with its result)")
    items = agent_requests(args.n, args.seed)
    rows, counts = collect(load(args.model), items, args.steps, args.slots, args.max_new_tokens)
    write_jsonl(rows, args.out)
    print(table(counts, len(items)))
    kept = Counter(r["source"] for r in rows)
    print(f"wrote {len(rows)} rows to {args.out}: " + ", ".join(f"{n} {s}" for s, n in kept.most_common()))
    return {"rows": len(rows), "sources": dict(kept)}


def main(argv=None) -> None:
    run_command(run, argv, "nanoagent.tuner.mend")


if __name__ == "__main__":
    main()
