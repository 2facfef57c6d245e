"""Derived training examples: chats built from the glaive sample and GSM8K train that teach what the
sources alone do not (measured: a glaive-only fine-tune learns no parallel calls, calls tools when none
fits, and writes bare numbers instead of calculator expressions).

    parallel-same   2-4 requests for the same function, joined into one turn -> one list of calls
    parallel-mixed  2-4 requests, at least two functions, sometimes more tools offered than called
    parallel-calc   2-4 checked GSM8K step expressions asked in one sentence -> one calculator call each
    nocall-math     a GSM8K question with 1-4 unrelated, non-arithmetic tools -> a short worked answer
    nocall-chat     a glaive question asked without tools (or refused by its own tools), offered
                    1-4 tools that do not fit -> the original answer, no call
    ask-missing     glaive's "a fitting tool, but a required argument is missing -> ask for it", alone
    calc-chain      a GSM8K solution's `<<48/2=24>>` steps as calls to the calculator, one round of
                    calls per group of independent steps, each result fed back, then "The answer is N."
    own-tools       the project's get_current_time, web_search and visit_webpage, with right calls

A family is a function (inputs, n, rng) -> up to n chats, each yielded as a chat in the common form or a
`Drop` (a candidate that did not work out, counted by the mix's stats). GSM8K test, BFCL and IFEval
are never read; glaive chats and GSM8K rows whose prompt is an evaluation prompt are removed from the
inputs (`Inputs.make`), so no joined request can carry one either.
"""
from __future__ import annotations

import ast
import operator
import re
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import combinations

import numpy as np

from .adapters import glaive
from .clean import normalize_text
from .common import Drop

# The calculator's schema, as the model sees it. The data package may not import the agent package
# (tests/test_house.py), so it is copied here; tests/test_derived.py pins it equal to the real tool's.
CALCULATOR = {"name": "calculator", "description": "Evaluate an arithmetic expression and return the number.",
              "parameters": {"type": "object", "properties": {"expression": {
                  "type": "string", "description": "the expression, e.g. \"2 * (3 + 4)\", \"sqrt(2)\", \"0.15 * 80\""}},
                  "required": ["expression"]}}
# The project's other tools' schemas, copied and pinned the same way.
GET_CURRENT_TIME = {"name": "get_current_time", "description": "Get the current date and time in a time zone.",
                    "parameters": {"type": "object", "properties": {"timezone": {
                        "type": "string", "description": "an IANA time zone name, e.g. \"UTC\", \"Europe/Paris\", "
                                                         "\"America/New_York\"", "default": "UTC"}}, "required": []}}
WEB_SEARCH = {"name": "web_search", "description": "Search the web and return the best results with their titles, "
                                                   "addresses and snippets.",
              "parameters": {"type": "object", "properties": {
                  "query": {"type": "string", "description": "what to search for, in a few keywords"},
                  "max_results": {"type": "integer", "description": "how many results to return (1 to 10)",
                                  "default": 3}}, "required": ["query"]}}
VISIT_WEBPAGE = {"name": "visit_webpage", "description": "Fetch a web page and return its readable text.",
                 "parameters": {"type": "object", "properties": {"url": {
                     "type": "string", "description": "the full http or https address of the page"}},
                     "required": ["url"]}}
OWN_TOOLS = (CALCULATOR, GET_CURRENT_TIME, WEB_SEARCH, VISIT_WEBPAGE)


# ---- inputs: glaive chats and GSM8K train rows, without evaluation prompts ---------------------------

@dataclass
class Episode:
    """One self-contained single call in a glaive chat: the request, the call, its result and the answer."""
    request: str
    call: dict
    tool: dict
    result: str
    answer: str


@dataclass
class Inputs:
    chats: list  # glaive chats in the common form
    gsm8k: list  # GSM8K train rows not used as plain rows by the recipe

    @classmethod
    def make(cls, glaive_rows, gsm8k_rows, blocked=frozenset()) -> "Inputs":
        chats = []
        for row in glaive_rows:
            try:
                chat = glaive(row, "glaive")
            except (Drop, KeyError, TypeError, AttributeError, ValueError):
                continue
            if not any(normalize_text(m["content"]) in blocked for m in chat["messages"] if m["role"] == "user"):
                chats.append(chat)
        rows = [r for r in gsm8k_rows if "####" in str(r.get("answer", ""))
                and normalize_text(str(r.get("question", ""))) not in blocked]
        return cls(chats, rows)

    def episodes(self) -> list[Episode]:
        out, seen = [], set()
        for chat in self.chats:
            tools = {t["name"]: t for t in chat.get("tools") or []}
            ms = chat["messages"]
            for i, m in enumerate(ms):
                if not (m["role"] == "assistant" and len(m.get("tool_calls") or []) == 1 and 0 < i < len(ms) - 2):
                    continue
                call, req, res, ans = m["tool_calls"][0], ms[i - 1], ms[i + 1], ms[i + 2]
                if (req["role"], res["role"], ans["role"]) != ("user", "tool", "assistant") or ans.get("tool_calls"):
                    continue
                opens = i == 1 or (ms[i - 2]["role"] == "assistant" and not ms[i - 2].get("tool_calls")
                                   and not ms[i - 2]["content"].rstrip().endswith("?"))  # not an answer to a question
                request = clean_request(req["content"], call["arguments"])
                if opens and call["name"] in tools and self_contained(request, call["arguments"]):
                    key = (call["name"], normalize_text(request))
                    if key not in seen:
                        seen.add(key)
                        out.append(Episode(request, call, tools[call["name"]], res["content"], ans["content"].strip()))
        return out

    def tool_pool(self) -> list[dict]:
        return list({t["name"]: t for c in self.chats for t in c.get("tools") or []}.values())


FOLLOW_UP = re.compile(r"^(and|what about|how about|ok|okay|yes|no|sure|the|it|this|these|those|they|he|she)\b", re.I)
GREETING = re.compile(r"^(hi|hello|hey)( there)?\s*[,!.]?\s*", re.I)
LEAD = re.compile(r"^(now|lastly|also|next|then|finally|and|great|thanks|thank you|perfect|okay|ok)\b[,!.]?\s*", re.I)


def _numbers_free(text: str) -> str:
    return re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())


def self_contained(request: str, arguments: dict) -> bool:
    """Whether a request names every argument value of its call (so it still makes sense on its own)."""
    if FOLLOW_UP.match(request.strip()) or len(request) > 400:
        return False
    text = _numbers_free(request)
    values = [v for a in arguments.values() for v in (a if isinstance(a, list) else [a])]
    for v in values:
        if isinstance(v, bool) or isinstance(v, dict):
            return False
        if isinstance(v, (int, float)):
            forms = {str(v), f"{v:g}"} | ({str(int(v))} if float(v).is_integer() else set())
            if not any(re.search(rf"(?<![\d.]){re.escape(f)}(?![\d])", text) for f in forms):
                return False
        elif str(v).lower() not in text:
            return False
    return bool(values)


def _values(arguments: dict) -> list[str]:
    return [_numbers_free(str(v)) for a in arguments.values() for v in (a if isinstance(a, list) else [a])]


def clean_request(text: str, arguments: dict) -> str:
    """A request without what tied it to its chat: a greeting, a short opening remark that names no argument
    ("That sounds interesting."), a leading "Now," or "Also,"."""
    text = GREETING.sub("", text.strip())
    sentences = re.split(r"(?<=[.!?])\s+", text)
    while len(sentences) > 1 and len(sentences[0].split()) <= 6 and not any(
            v.lower() in _numbers_free(sentences[0]) for v in _values(arguments)):
        sentences = sentences[1:]
    text = " ".join(sentences)
    while LEAD.match(text):
        text = LEAD.sub("", text, count=1)
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


# ---- joining requests in varied words ------------------------------------------------------------------

STARTERS = {"can", "could", "would", "will", "please", "what", "what's", "how", "i", "i'm", "i'd", "i've", "my",
            "tell", "find", "get", "give", "check", "convert", "calculate", "search", "send", "generate", "the",
            "is", "do", "does", "there's", "let's"}


def _lower_first(text: str) -> str:
    word = text.split(" ", 1)[0]
    return text[:1].lower() + text[1:] if word.lower() in STARTERS and word.lower() not in ("i", "i'm", "i'd", "i've") \
        else text


JOIN_TWO = ("{0} Also, {1}", "{0} And {1}", "{0} Additionally, {1}", "{0} While you're at it, {1}",
            "{0} On top of that, {1}", "{0} Plus, {1}", "{0} One more thing: {1}", "{0} At the same time, {1}",
            "Two things, please. {0} {1}", "{0}\n{1}", "I have two requests. First: {0} Second: {1}",
            "{0} Besides that, {1}", "Could you handle both of these? {0} {1}")
JOIN_MANY = ("I have a few requests.\n{items}", "Please do all of these: {inline}", "{inline}",
             "Several things at once:\n{items}", "Can you take care of these?\n{numbered}",
             "Here is what I need: {inline}", "{numbered}")
INLINE = (" Also, ", " And ", " Then ", " Plus, ", " Next, ", " Additionally, ")


def join_requests(requests: list[str], rng) -> str:
    if len(requests) == 2 and rng.random() < 0.7:
        form = JOIN_TWO[int(rng.integers(len(JOIN_TWO)))]
        return form.format(requests[0], _lower_first(requests[1]) if "{0} " in form and ", {1}" in form
                           or " And {1}" in form else requests[1])
    form = JOIN_MANY[int(rng.integers(len(JOIN_MANY)))]
    glue = [INLINE[int(rng.integers(len(INLINE)))] for _ in requests[1:]]
    inline = requests[0] + "".join(g + _lower_first(r) for g, r in zip(glue, requests[1:]))
    return form.format(items="\n".join(f"- {r}" for r in requests),
                       numbered="\n".join(f"{i}. {r}" for i, r in enumerate(requests, 1)), inline=inline)


def join_answers(answers: list[str], rng) -> str:
    """The original final answers, each kept whole but a trailing question ("Anything else?") dropped
    from all but the last, joined as one reply."""
    trimmed = [re.sub(r"\s*[^.!?]*\?\s*$", "", a).strip() or a for a in answers[:-1]] + [answers[-1]]
    style = int(rng.integers(3))
    if style == 0:
        return "\n\n".join(trimmed)
    if style == 1:
        return "Here are the results.\n" + "\n".join(f"{i}. {a}" for i, a in enumerate(trimmed, 1))
    return " ".join(trimmed)


# ---- parallel calls ------------------------------------------------------------------------------------

def _fits(args: dict, tool: dict) -> bool:
    props = tool["parameters"].get("properties", {})
    return set(args) <= set(props) and set(tool["parameters"].get("required", [])) <= set(args)


def parallel_chat(eps: list[Episode], tools: list[dict], rng, source: str) -> dict:
    """Episodes -> one request, one list of calls, the results in call order, one answer using every result."""
    messages = [{"role": "user", "content": join_requests([e.request for e in eps], rng)},
                {"role": "assistant", "content": "", "tool_calls": [e.call for e in eps]}]
    messages += [{"role": "tool", "content": e.result} for e in eps]
    messages.append({"role": "assistant", "content": join_answers([e.answer for e in eps], rng)})
    return {"messages": messages, "tools": tools, "source": source}


def _extra_tools(pool, names, rng, k):
    """k tools from the pool whose names are not among `names`."""
    others = [t for t in pool if t["name"] not in names]
    picks = rng.choice(len(others), size=min(k, len(others)), replace=False) if others else []
    return [others[int(i)] for i in picks]


def argument_words(args: dict) -> frozenset:
    """A call's arguments as (name, words of the value): "milk, bread" and "bread, milk" are the same."""
    return frozenset((k, frozenset(normalize_text(str(v)).split())) for k, v in args.items())


def parallel_same(inputs: Inputs, n: int, rng):
    """The same function, different arguments: requests of different chats that call one function."""
    by_name: dict[str, list[Episode]] = {}
    for e in inputs.episodes():
        by_name.setdefault(e.call["name"], []).append(e)
    groups = []
    for name, eps in sorted(by_name.items()):
        for size in (2, 3, 4):
            for combo in combinations(range(len(eps)), size):
                chosen = [eps[i] for i in combo]
                args = {argument_words(e.call["arguments"]) for e in chosen}
                if len(args) == size and all(_fits(e.call["arguments"], chosen[0].tool) for e in chosen):
                    groups.append(chosen)
    pool = inputs.tool_pool()
    for k in rng.permutation(len(groups))[:n]:
        eps = [groups[k][int(i)] for i in rng.permutation(len(groups[k]))]
        tools = [eps[0].tool] + _extra_tools(pool, {eps[0].tool["name"]}, rng, int(rng.integers(0, 3)))
        yield parallel_chat(eps, tools, rng, "parallel-same")


def parallel_mixed(inputs: Inputs, n: int, rng):
    """At least two functions: 2-4 requests from different chats; half the time more tools than called."""
    eps = inputs.episodes()
    pool, made, tries = inputs.tool_pool(), set(), 0
    while len(made) < n and tries < 50 * n and len(eps) >= 2:
        tries += 1
        size = int(rng.choice([2, 2, 3, 3, 4]))
        combo = tuple(sorted(int(i) for i in rng.choice(len(eps), size=min(size, len(eps)), replace=False)))
        chosen = [eps[i] for i in combo]
        names = [e.call["name"] for e in chosen]
        if combo in made or len(set(names)) < 2 or len({normalize_text(e.request) for e in chosen}) < len(chosen):
            continue
        tools = list({e.tool["name"]: e.tool for e in chosen}.values())
        if not all(_fits(e.call["arguments"], next(t for t in tools if t["name"] == e.call["name"])) for e in chosen):
            continue
        made.add(combo)
        if rng.random() < 0.5:
            tools += _extra_tools(pool, set(names), rng, int(rng.integers(1, 3)))
        tools = [tools[int(i)] for i in rng.permutation(len(tools))]
        yield parallel_chat([chosen[int(i)] for i in rng.permutation(len(chosen))], tools, rng, "parallel-mixed")


# ---- no call when no tool fits ------------------------------------------------------------------------

STOP = set("the a an and or of to for in on with by from is are be can you your my me i it this that what how "
           "get find give make given based about into when which who will would could should please".split())
ARITHMETIC = re.compile(r"calculat|comput|math|convert|tip|discount|loan|interest|tax|percent|age|bmi|area|number|"
                        r"fibonacci|sum|average|price|cost|mortgage|salary|budget|split|currency|distance|random|"
                        r"stock|time|date|unit|volume|speed|weight|count|measure|score|rate", re.I)


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower().replace("_", " ")) if len(w) > 2 and w not in STOP}


def unrelated_tools(question: str, pool, rng, k: int, arithmetic_ok: bool = True) -> list[dict]:
    """Up to k tools whose name and description share no content word with the question
    (and, for arithmetic questions, that compute nothing)."""
    words = content_words(question)
    fit = [t for t in pool if not (content_words(t["name"] + " " + t["description"]) & words)
           and (arithmetic_ok or not ARITHMETIC.search(t["name"] + " " + t["description"]))]
    picks = rng.choice(len(fit), size=min(k, len(fit)), replace=False) if fit else []
    return [fit[int(i)] for i in picks]


def worked_answer(answer: str, max_words: int = 60) -> str | None:
    """A GSM8K solution -> its last one or two lines (annotations removed) and "The answer is N."."""
    work, final = answer.rsplit("####", 1)
    lines = [re.sub(r"<<[^>]*>>", "", ln).strip() for ln in work.strip().splitlines() if ln.strip()]
    short = " ".join(lines[-2:] if len(" ".join(lines[-2:]).split()) <= max_words else lines[-1:])
    if len(short.split()) > max_words:
        return None
    return f"{short}\nThe answer is {final.strip()}."


def nocall_math(inputs: Inputs, n: int, rng):
    """GSM8K questions answered directly, offered tools that neither fit nor compute anything
    (a calculator-like tool here would teach "never call for math", which a probe showed)."""
    pool = inputs.tool_pool()
    for row in inputs.gsm8k[2::3][:n]:  # every third row; calc-chain takes the others
        answer = worked_answer(row["answer"])
        tools = unrelated_tools(row["question"], pool, rng, int(rng.integers(1, 5)), arithmetic_ok=False)
        if answer is None or not tools:
            yield Drop("no short answer" if answer is None else "no unrelated tool")
            continue
        yield {"messages": [{"role": "user", "content": row["question"].strip()},
                            {"role": "assistant", "content": answer}], "tools": tools, "source": "nocall-math"}


REFUSAL = re.compile(r"\b(sorry|can't|cannot|unable|don't have the (capability|ability))\b", re.I)


def nocall_chat(inputs: Inputs, n: int, rng, max_words: int = 120):
    """Questions the assistant answers itself: first turns of glaive's tool-less chats (definitions,
    explanations) with 1-4 unrelated tools, and glaive's own refusals (a request its tools cannot do)."""
    pool, cands, seen = inputs.tool_pool(), [], set()
    for chat in inputs.chats:
        ms = chat["messages"]
        for i in range(len(ms) - 1):
            if normalize_text(ms[i]["content"] or "") in seen:
                continue
            q, a = ms[i], ms[i + 1]
            if q["role"] != "user" or a["role"] != "assistant" or a.get("tool_calls"):
                continue
            if len(a["content"].split()) > max_words or (i > 0 and FOLLOW_UP.match(q["content"].strip())):
                continue
            if not chat.get("tools") and i == 0:
                cands.append((q["content"], a["content"], None))
            elif chat.get("tools") and REFUSAL.search(a["content"]) and (i == 0 or ms[i - 1]["role"] == "assistant"):
                cands.append((q["content"], a["content"], chat["tools"]))
            else:
                continue
            seen.add(normalize_text(q["content"]))
    for k in rng.permutation(len(cands))[:n]:
        q, a, own = cands[k]
        tools = own or unrelated_tools(q, pool, rng, int(rng.integers(1, 5)))
        if not tools:
            yield Drop("no unrelated tool")
            continue
        yield {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
               "tools": tools, "source": "nocall-chat"}


def ask_missing(inputs: Inputs, n: int, rng):
    """A request for a fitting tool without its required argument -> the assistant asks for it (glaive's form,
    cut after the question), offered with the fitting tool and sometimes others."""
    pool, cands = inputs.tool_pool(), []
    for chat in inputs.chats:
        ms = chat["messages"]
        if (len(ms) >= 4 and [m["role"] for m in ms[:4]] == ["user", "assistant", "user", "assistant"]
                and not ms[1].get("tool_calls") and ms[3].get("tool_calls")
                and ms[1]["content"].rstrip().endswith("?")):
            cands.append((ms[:2], chat["tools"]))
    for k in rng.permutation(len(cands))[:n]:
        messages, tools = cands[k]
        tools = tools + _extra_tools(pool, {t["name"] for t in tools}, rng, int(rng.integers(0, 3)))
        yield {"messages": messages, "tools": [tools[int(i)] for i in rng.permutation(len(tools))],
               "source": "ask-missing"}


# ---- tool chains from GSM8K: the calculator, step by step ----------------------------------------------

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
       ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


def arithmetic(expression: str):
    """Numbers, + - * / // % ** and parentheses only (the calculator's arithmetic core), via ast."""
    def ev(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("power too large")
            return OPS[type(node.op)](left, right)
        raise ValueError(f"not arithmetic: {type(node).__name__}")
    return ev(ast.parse(expression, mode="eval").body)


def format_number(value) -> str:
    """As the calculator writes a result: integers exactly, floats to 12 significant digits."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


STEP = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def chain_steps(row: dict) -> list[tuple[str, str]]:
    """A GSM8K solution -> [(expression, calculator result)]; raises Drop when a step does not check out."""
    work, final = row["answer"].rsplit("####", 1)
    steps = []
    for expr, claimed in STEP.findall(work):
        expr = expr.strip().replace("x", "*").replace("÷", "/").replace("^", "**")
        try:
            value, claimed_value = arithmetic(expr), float(claimed.strip().replace(",", ""))
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, TypeError):
            raise Drop("unreadable step") from None
        if not _close(float(value), claimed_value):
            raise Drop("step disagrees")
        steps.append((expr, format_number(value)))
    if not steps:
        raise Drop("no steps")
    try:
        answer = float(final.strip().replace(",", ""))
    except ValueError:
        raise Drop("no final answer") from None
    if not _close(float(steps[-1][1]), answer):
        raise Drop("last step is not the answer")
    return steps


def rounds(question: str, steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Group steps into rounds of calls: a step that uses a result of the current round starts a new one."""
    given = {float(x) for x in NUMBER.findall(_numbers_free(question))}
    out, current = [], []
    for expr, result in steps:
        used = {float(x) for x in NUMBER.findall(expr)} - given
        if current and any(_close(u, float(r)) for u in used for _, r in current):
            out.append(current)
            current = []
        current.append((expr, result))
    return out + [current]


def calc_chain(inputs: Inputs, n: int, rng, max_steps: int = 8):
    """GSM8K train solutions as calculator chains: every result is the calculator's output for its expression
    (checked against GSM8K's own `=N`), the last equals the `#### N` answer."""
    pool, made = inputs.tool_pool(), 0
    rows = [r for i, r in enumerate(inputs.gsm8k) if i % 3 != 2]  # nocall-math takes every third row
    for row in rows:
        if made >= n:
            return
        try:
            steps = chain_steps(row)
        except Drop as e:
            yield e
            continue
        if len(steps) > max_steps:
            yield Drop("too many steps")
            continue
        final = row["answer"].rsplit("####", 1)[1].strip()
        messages = [{"role": "user", "content": row["question"].strip()}]
        for group in rounds(row["question"], steps):
            messages.append({"role": "assistant", "content": "",
                             "tool_calls": [{"name": "calculator", "arguments": {"expression": e}} for e, _ in group]})
            messages += [{"role": "tool", "content": r} for _, r in group]
        messages.append({"role": "assistant", "content": f"The answer is {final}."})
        tools = [CALCULATOR] + unrelated_tools(row["question"], pool, rng, int(rng.integers(0, 3)), arithmetic_ok=False)
        made += 1
        yield {"messages": messages, "tools": [tools[int(i)] for i in rng.permutation(len(tools))],
               "source": "calc-chain"}


CALC_ASKS = ("What is {all}?", "Calculate {all}.", "Work these out for me: {list}.", "I need {all}.",
             "Can you compute {all}?", "Please evaluate {list}.", "Quick math: {all}?", "What do {all} come to?")


def parallel_calc(inputs: Inputs, n: int, rng):
    """The same function, different arguments, asked in one sentence: 2-4 checked GSM8K step expressions
    ("What is 36/3 and 48+24?") -> one calculator call each, in one list."""
    steps = []
    for row in inputs.gsm8k:
        try:
            steps += [s for s in chain_steps(row) if re.search(r"[-+*/]", s[0].lstrip("-"))]
        except Drop:
            continue
    steps = list(dict.fromkeys(steps))
    pool = inputs.tool_pool()
    for _ in range(min(n, len(steps) // 2)):
        group = [steps[int(i)] for i in rng.choice(len(steps), size=int(rng.choice([2, 2, 3, 4])), replace=False)]
        exprs = [e for e, _ in group]
        listed = ", ".join(exprs[:-1]) + " and " + exprs[-1]
        ask = CALC_ASKS[int(rng.integers(len(CALC_ASKS)))].format(all=listed, list="; ".join(exprs))
        messages = [{"role": "user", "content": ask},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"name": "calculator", "arguments": {"expression": e}} for e in exprs]}]
        messages += [{"role": "tool", "content": r} for _, r in group]
        parts = [f"{e} = {r}" for e, r in group]
        messages.append({"role": "assistant", "content": ", ".join(parts[:-1]) + " and " + parts[-1] + "."})
        tools = [CALCULATOR] + unrelated_tools(ask, pool, rng, int(rng.integers(0, 3)), arithmetic_ok=False)
        yield {"messages": messages, "tools": [tools[int(i)] for i in rng.permutation(len(tools))],
               "source": "parallel-calc"}


# ---- the project's own tools: time, search, pages ------------------------------------------------------
# The calls are right; the results are templated in the tools' own output formats (real results would
# need the network, or today's clock): times are a random instant converted with the real zone rules,
# and the pages and snippets state well-known facts.

CITIES = (("Oslo", "Europe/Oslo"), ("Lima", "America/Lima"), ("Tokyo", "Asia/Tokyo"), ("Paris", "Europe/Paris"),
          ("New York", "America/New_York"), ("Sydney", "Australia/Sydney"), ("London", "Europe/London"),
          ("Los Angeles", "America/Los_Angeles"), ("Mumbai", "Asia/Kolkata"), ("Cairo", "Africa/Cairo"),
          ("Berlin", "Europe/Berlin"), ("Sao Paulo", "America/Sao_Paulo"), ("Singapore", "Asia/Singapore"),
          ("Chicago", "America/Chicago"), ("Nairobi", "Africa/Nairobi"), ("Seoul", "Asia/Seoul"),
          ("Mexico City", "America/Mexico_City"), ("Madrid", "Europe/Madrid"), ("Toronto", "America/Toronto"),
          ("Auckland", "Pacific/Auckland"), ("Istanbul", "Europe/Istanbul"), ("Bangkok", "Asia/Bangkok"),
          ("Dubai", "Asia/Dubai"), ("Reykjavik", "Atlantic/Reykjavik"))
TIME_ASKS = ("What time is it in {c}?", "What's the current time in {c}?", "Can you tell me the time in {c} right now?",
             "What is the date and time in {c} at the moment?", "I need the current local time in {c}.",
             "Is it day or night in {c} now? Tell me the time.")
TIME_ASKS_MANY = ("What time is it in {cs}?", "Tell me the current time in {cs}.",
                  "I have friends in {cs}. What's the local time for each of them?",
                  "Can you check the time in {cs} right now?")
# (query, page title, address, snippet, question asked about it, answer)
FACTS = (
    ("Mount Everest height", "Mount Everest", "https://en.wikipedia.org/wiki/Mount_Everest",
     "Mount Everest is Earth's highest mountain above sea level; its elevation is 8,849 m (29,032 ft).",
     "how tall Mount Everest is", "Mount Everest is 8,849 metres (29,032 feet) tall."),
    ("Eiffel Tower completed year", "Eiffel Tower", "https://en.wikipedia.org/wiki/Eiffel_Tower",
     "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889 for the World's Fair.",
     "when the Eiffel Tower was completed", "The Eiffel Tower was completed in 1889."),
    ("capital of Australia", "Canberra", "https://en.wikipedia.org/wiki/Canberra",
     "Canberra is the capital city of Australia, located in the Australian Capital Territory.",
     "what the capital of Australia is", "The capital of Australia is Canberra."),
    ("speed of light", "Speed of light", "https://en.wikipedia.org/wiki/Speed_of_light",
     "The speed of light in vacuum is exactly 299,792,458 metres per second.",
     "how fast light travels", "Light travels at 299,792,458 metres per second in a vacuum."),
    ("Pride and Prejudice author", "Pride and Prejudice", "https://en.wikipedia.org/wiki/Pride_and_Prejudice",
     "Pride and Prejudice is an 1813 novel by Jane Austen.",
     "who wrote Pride and Prejudice", "Pride and Prejudice was written by Jane Austen and published in 1813."),
    ("Mona Lisa painter", "Mona Lisa", "https://en.wikipedia.org/wiki/Mona_Lisa",
     "The Mona Lisa is a portrait painting by the Italian artist Leonardo da Vinci, kept at the Louvre in Paris.",
     "who painted the Mona Lisa", "The Mona Lisa was painted by Leonardo da Vinci; it hangs in the Louvre."),
    ("largest planet solar system", "Jupiter", "https://en.wikipedia.org/wiki/Jupiter",
     "Jupiter is the fifth planet from the Sun and the largest in the Solar System.",
     "which planet is the largest", "Jupiter is the largest planet in the Solar System."),
    ("first person on the Moon", "Apollo 11", "https://en.wikipedia.org/wiki/Apollo_11",
     "Apollo 11 landed on the Moon on July 20, 1969; Neil Armstrong was the first person to step onto it.",
     "who first walked on the Moon", "Neil Armstrong was the first person on the Moon, on July 20, 1969."),
    ("chemical symbol for gold", "Gold", "https://en.wikipedia.org/wiki/Gold",
     "Gold is a chemical element with the symbol Au and atomic number 79.",
     "what gold's chemical symbol is", "Gold's chemical symbol is Au (atomic number 79)."),
    ("bones in the adult human body", "Human skeleton", "https://en.wikipedia.org/wiki/Human_skeleton",
     "The adult human skeleton is made up of 206 bones.",
     "how many bones an adult has", "An adult human skeleton has 206 bones."),
    ("tallest building in the world", "Burj Khalifa", "https://en.wikipedia.org/wiki/Burj_Khalifa",
     "The Burj Khalifa in Dubai is the world's tallest building, with a height of 828 m.",
     "which building is the tallest", "The tallest building is the Burj Khalifa in Dubai, at 828 metres."),
    ("largest ocean", "Pacific Ocean", "https://en.wikipedia.org/wiki/Pacific_Ocean",
     "The Pacific Ocean is the largest and deepest of Earth's five oceanic divisions.",
     "which ocean is the largest", "The Pacific is the largest and deepest ocean."),
    ("Hamlet author", "Hamlet", "https://en.wikipedia.org/wiki/Hamlet",
     "The Tragedy of Hamlet, Prince of Denmark is a tragedy written by William Shakespeare.",
     "who wrote Hamlet", "Hamlet was written by William Shakespeare."),
    ("currency of Japan", "Japanese yen", "https://en.wikipedia.org/wiki/Japanese_yen",
     "The yen is the official currency of Japan.", "what currency Japan uses", "Japan's currency is the yen."),
    ("boiling point of water", "Water", "https://en.wikipedia.org/wiki/Water",
     "At standard atmospheric pressure, water boils at 100 degrees Celsius (212 degrees Fahrenheit).",
     "at what temperature water boils", "At sea-level pressure, water boils at 100 °C (212 °F)."),
    ("Python programming language creator", "Python (programming language)",
     "https://en.wikipedia.org/wiki/Python_(programming_language)",
     "Python is a high-level programming language created by Guido van Rossum and first released in 1991.",
     "who created Python", "Python was created by Guido van Rossum and first released in 1991."),
    ("distance from Earth to the Moon", "Moon", "https://en.wikipedia.org/wiki/Moon",
     "The Moon orbits Earth at an average distance of about 384,400 km.",
     "how far away the Moon is", "The Moon is about 384,400 km from Earth on average."),
    ("telephone inventor", "Alexander Graham Bell", "https://en.wikipedia.org/wiki/Alexander_Graham_Bell",
     "Alexander Graham Bell was awarded the first US patent for the telephone in 1876.",
     "who invented the telephone", "Alexander Graham Bell received the first patent for the telephone, in 1876."),
)
SEARCH_ASKS = ("Search the web for {q}.", "Look up {q} online.", "Can you search for {q}?",
               "Do a web search: {q}.", "Please find {q} on the web and tell me {ask}.",
               "Use a web search to find out {ask}.")
VISIT_ASKS = ("Read {url} and tell me {ask}.", "What does {url} say about {ask}?", "Open {url} and summarize it.",
              "Visit {url} and find out {ask}.")
CHAIN_ASKS = ("Find a web page about {q}, open it, and tell me {ask}.",
              "Search for {q}, then read the best page and tell me {ask}.")


def time_result(zone: str, instant: datetime) -> tuple[str, datetime]:
    """(get_current_time's output for an instant seen in a zone, the local time)."""
    local = instant.astimezone(zoneinfo.ZoneInfo(zone))
    return f"{local.isoformat(timespec='seconds')} ({local:%A}, {zone})", local


def own_tools(inputs: Inputs, n: int, rng):
    """Right calls to the project's tools: the time (one city or several in one parallel call), a search, a page,
    and a search followed by a visit."""
    pool = inputs.tool_pool()
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for k in range(n):
        kind = int(rng.integers(5))
        if kind <= 1:  # the time, in one city (0) or several (1)
            cities = [CITIES[int(i)] for i in rng.choice(len(CITIES), size=1 if kind == 0 else int(rng.integers(2, 4)),
                                                          replace=False)]
            instant = start + timedelta(seconds=int(rng.integers(0, 2 * 365 * 86400)))
            names = [c for c, _ in cities]
            if kind == 0:
                ask = TIME_ASKS[int(rng.integers(len(TIME_ASKS)))].format(c=names[0])
            else:
                ask = TIME_ASKS_MANY[int(rng.integers(len(TIME_ASKS_MANY)))].format(
                    cs=", ".join(names[:-1]) + " and " + names[-1])
            outs = [time_result(z, instant) for _, z in cities]
            answer = " ".join(f"In {c} it is {loc.hour % 12 or 12}:{loc:%M %p} on {loc:%A, %B} {loc.day}, {loc.year}."
                              for c, (_, loc) in zip(names, outs))
            messages = [{"role": "user", "content": ask},
                        {"role": "assistant", "content": "", "tool_calls": [
                            {"name": "get_current_time", "arguments": {"timezone": z}} for _, z in cities]}]
            messages += [{"role": "tool", "content": text} for text, _ in outs]
            tools = [GET_CURRENT_TIME]
        else:  # search (2), page (3), search then page (4)
            q, title, url, snippet, ask_what, answer = FACTS[int(rng.integers(len(FACTS)))]
            found = f"1. {title} - Wikipedia ({url})\n{snippet}"
            page = f"Title: {title} - Wikipedia\nURL: {url}\n\n# {title}\n{snippet}"
            search = {"name": "web_search", "arguments": {"query": q}}
            visit = {"name": "visit_webpage", "arguments": {"url": url}}
            forms = {2: (SEARCH_ASKS, [(search, found)]), 3: (VISIT_ASKS, [(visit, page)]),
                     4: (CHAIN_ASKS, [(search, found), (visit, page)])}
            asks, steps = forms[kind]
            ask = asks[int(rng.integers(len(asks)))].format(q=q, url=url, ask=ask_what)
            if kind == 3 and "summarize" in ask:
                answer = snippet
            messages = [{"role": "user", "content": ask}]
            for call, result in steps:
                messages += [{"role": "assistant", "content": "", "tool_calls": [call]},
                             {"role": "tool", "content": result}]
            needed = {2: [WEB_SEARCH], 3: [VISIT_WEBPAGE], 4: [WEB_SEARCH, VISIT_WEBPAGE]}[kind]
            tools = [WEB_SEARCH, VISIT_WEBPAGE] if rng.random() < 0.5 else needed
        messages.append({"role": "assistant", "content": answer})
        others = [t for t in OWN_TOOLS if t not in tools] if rng.random() < 0.5 else []
        tools = tools + others[:int(rng.integers(0, len(others) + 1))] + _extra_tools(
            pool, {t["name"] for t in tools}, rng, int(rng.integers(0, 2)))
        yield {"messages": messages, "tools": [tools[int(i)] for i in rng.permutation(len(tools))],
               "source": "own-tools"}


WHY_NOT_MADE = {  # why a derived candidate was not made, for the stats table
    "unreadable step": "a GSM8K step that is not plain arithmetic",
    "step disagrees": "a GSM8K step whose computed value differs from the `=N` it states",
    "no steps": "a GSM8K solution without `<<...>>` steps",
    "last step is not the answer": "a GSM8K solution whose last step is not its `#### N`",
    "no final answer": "a GSM8K `#### N` that is not a number",
    "too many steps": "a GSM8K solution of more calculator steps than a chain holds",
    "no short answer": "a GSM8K solution too long for a short worked answer",
    "no unrelated tool": "no offered tool could be found that does not fit the question",
}

FAMILIES = {"parallel-same": parallel_same, "parallel-mixed": parallel_mixed, "parallel-calc": parallel_calc,
            "nocall-math": nocall_math,
            "nocall-chat": nocall_chat, "ask-missing": ask_missing, "calc-chain": calc_chain, "own-tools": own_tools}


def family_rng(seed: int, family: str) -> np.random.Generator:
    """Each family's own stream, so adding or resizing one family leaves the others' rows unchanged."""
    return np.random.default_rng([seed, sum(ord(c) * 31 ** i for i, c in enumerate(family)) % (2 ** 32)])


def derive(family: str, inputs: Inputs, n: int, seed: int = 0):
    """Up to n rows of one family (chats in the common form, or `Drop`s for candidates that failed)."""
    if family not in FAMILIES:
        raise KeyError(f"unknown derived family {family!r}; choose from {', '.join(FAMILIES)}")
    return FAMILIES[family](inputs, n, family_rng(seed, family))
