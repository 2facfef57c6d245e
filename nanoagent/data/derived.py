"""Derived training examples: chats built from the glaive sample and GSM8K train that teach what the
sources alone do not (measured: a glaive-only fine-tune learns no parallel calls, calls tools when none
fits, and writes bare numbers instead of calculator expressions).

    parallel-same   2-4 requests for the same function, joined into one turn -> one list of calls
    parallel-mixed  2-4 requests, at least two functions, sometimes more tools offered than called
    parallel-values one request whose argument is given 2-4 values in one sentence ("the weather in Oslo and
                    Lima") -> one call per value; the row ends at the calls (no result is known for a value
                    no glaive chat called with)
    several-args    the contrast to parallel-values: one request whose several numbers fill different
                    arguments of one function ("... with loan amount 200000, interest rate 5 and loan term
                    30") -> one call
    parallel-calc   2-4 checked GSM8K step expressions asked in one sentence -> one calculator call each
    nocall-math     a GSM8K question with 1-4 unrelated, non-arithmetic tools -> a short worked answer
    nocall-chat     a glaive question asked without tools (or refused by its own tools), offered
                    1-4 tools that do not fit -> the original answer, no call
    decline         a glaive request for a call, offered only 1-3 tools that do not fit -> "I can't do that
                    with these tools; they ..." (the same requests are answered by calls elsewhere)
    near-miss       one or two tools that compute something, but not what is asked (BFCL's irrelevance
                    items are of this kind: a triangle's area offered a BMI tool): a GSM8K question
                    -> its short worked answer, a glaive request -> a refusal; no call
    near-miss-specs, decline-specs  the same, offered tools of the tool-calling sets' specs (Seal-Tools' 4,076,
                    toolsets.py) instead of glaive's 64 functions
    parallel-values-specs, several-args-specs, parallel-mixed-specs  the same, from the tool-calling sets' single
                    calls (thousands of functions) instead of glaive's; the rows end at the calls (the sets hold
                    no results for them)
    ask-missing     glaive's "a fitting tool, but a required argument is missing -> ask for it", alone
    calc-chain      a GSM8K solution's `<<48/2=24>>` steps as calls to the calculator, one round of
                    calls per group of independent steps, each result fed back, then "The answer is N."
    own-tools       the project's get_current_time, web_search and visit_webpage, with right calls

The chains live in chains.py, the project's own tools in own_tools.py, the families by name in
families.py. A family is a function (inputs, n, rng) -> up to n chats, each yielded as a chat in the common form or a
`Drop` (a candidate that did not work out, counted by the mix's stats). GSM8K test, BFCL and IFEval
are never read; glaive chats and GSM8K rows whose prompt is an evaluation prompt are removed from the
inputs (`Inputs.make`), so no joined request can carry one either.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations

from .adapters import glaive
from .clean import normalize_text
from .common import Drop
from .own_tools import extra_tools



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
    specs: list = field(default_factory=list)  # tools of the tool-calling sets (Seal-Tools' 4,076), for *-specs
    calls: list = field(default_factory=list)  # the sets' single calls as Episodes (no result), for *-specs

    @classmethod
    def make(cls, glaive_rows, gsm8k_rows, blocked=frozenset(), specs=(), call_chats=()) -> "Inputs":
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
        calls = [e for e in single_calls(call_chats) if normalize_text(e.request) not in blocked]
        return cls(chats, rows, list(specs), calls)

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


def single_calls(chats) -> list[Episode]:
    """Chats that open with a request answered by one call of an offered tool -> Episodes (request and call;
    result and answer empty: the tool-calling sets end there), kept when the request names every value."""
    out, seen = [], set()
    for chat in chats:
        ms = [m for m in chat["messages"] if m["role"] != "system"]
        if len(ms) < 2 or ms[0]["role"] != "user" or len(ms[1].get("tool_calls") or []) != 1:
            continue
        call, tools = ms[1]["tool_calls"][0], {t["name"]: t for t in chat.get("tools") or []}
        key = (call["name"], normalize_text(ms[0]["content"]))
        if call["name"] in tools and key not in seen and self_contained(ms[0]["content"], call["arguments"]):
            seen.add(key)
            out.append(Episode(ms[0]["content"].strip(), call, tools[call["name"]], "", ""))
    return out


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
            if not any(re.search(rf"(?<![\d.]){re.escape(f)}(?![\d])", text) for f in number_forms(v)):
                return False
        elif str(v).lower() not in text:
            return False
    return bool(values)


def number_forms(v) -> list[str]:
    """The ways a number may be written in a request, longest first: 1500.0 -> "1500.0", "1500"."""
    return sorted({str(v), f"{v:g}"} | ({str(int(v))} if float(v).is_integer() else set()), key=len, reverse=True)


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
    """Episodes -> one request, one list of calls, the results in call order, one answer using every result
    (the row ends at the calls when the episodes have no results: the tool-calling sets' single calls)."""
    messages = [{"role": "user", "content": join_requests([e.request for e in eps], rng)},
                {"role": "assistant", "content": "", "tool_calls": [e.call for e in eps]}]
    if all(e.result for e in eps):
        messages += [{"role": "tool", "content": e.result} for e in eps]
        messages.append({"role": "assistant", "content": join_answers([e.answer for e in eps], rng)})
    return {"messages": messages, "tools": tools, "source": source}


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
        tools = [eps[0].tool] + extra_tools(pool, {eps[0].tool["name"]}, rng, int(rng.integers(0, 3)))
        yield parallel_chat(eps, tools, rng, "parallel-same")


def parallel_mixed(inputs: Inputs, n: int, rng, eps: list[Episode] | None = None, pool: list[dict] | None = None,
                   source: str = "parallel-mixed"):
    """At least two functions: 2-4 requests from different chats; half the time more tools than called.
    `eps` and `pool` are glaive's episodes and tools unless given."""
    eps = inputs.episodes() if eps is None else eps
    pool, made, tries = inputs.tool_pool() if pool is None else pool, set(), 0
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
            tools += extra_tools(pool, set(names), rng, int(rng.integers(1, 3)))
        tools = [tools[int(i)] for i in rng.permutation(len(tools))]
        yield parallel_chat([chosen[int(i)] for i in rng.permutation(len(chosen))], tools, rng, source)


def parallel_mixed_specs(inputs: Inputs, n: int, rng):
    """parallel-mixed from the tool-calling sets' single calls (BFCL's parallel_multiple items ask this way: two
    to four tasks, each for its own function, in one turn); the row ends at the calls."""
    yield from parallel_mixed(inputs, n, rng, inputs.calls, inputs.specs, "parallel-mixed-specs")


def _value_span(request: str, value, words: bool = False) -> str | None:
    """The one place where `value` is written in `request`: a string in any case (with its quotes), a number as
    written with its "$" or "%" ("$100", "15%"); None when it is written nowhere or more than once. With `words`,
    a string is found only as whole words (off for glaive's rows, so that the recorded recipes build as they did)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
        return None
    if isinstance(value, str):
        whole = words and value[0].isalnum() and value[-1].isalnum()  # "CA", not the "Ca" of "California"
        found = list(re.finditer(rf"(?<!\w){re.escape(value)}(?!\w)" if whole else re.escape(value), request, re.I))
    else:
        forms = "|".join(map(re.escape, number_forms(value)))
        found = list(re.finditer(rf"(?<![\d.,])(?:{forms})(?![\d]|[.,]\d)", request))
    if len(found) != 1:
        return None
    start, end = found[0].span()
    quote = request[start - 1:start]
    if isinstance(value, str):
        if quote in ("'", '"') and request[end:end + 1] == quote:
            start, end = start - 1, end + 1  # 'Queen' -> 'Queen' and 'Muse'
    else:
        start -= request[start - 1:start] == "$"
        end += request[end:end + 1] == "%"
    span = request[start:end]
    return span if request.count(span) == 1 else None


def _written(span: str, value) -> str:
    """Another value as it reads where `span` stood: after "$100", "$50"; after "15%", "20%"; quoted after a quote."""
    if isinstance(value, str):
        return span[0] + value + span[0] if span[:1] in ("'", '"') and span[-1:] == span[:1] and len(span) > 1 \
            else value
    return ("$" if span.startswith("$") else "") + (f"{value:g}" if isinstance(value, float) else str(value)) \
        + ("%" if span.endswith("%") else "")


def _other_numbers(value, rng, k: int) -> list:
    """k plausible other values of a number: years stay years, small counts stay small, decimals keep their places."""
    if isinstance(value, int) and 1900 <= value <= 2100:
        cands = [value + d for d in range(-12, 4) if d]
    elif isinstance(value, int) and abs(value) <= 12:
        cands = [v for v in range(1, 25) if v != value]
    else:
        places = 0 if isinstance(value, int) or float(value).is_integer() else len(f"{value:g}".split(".")[-1])
        cands = sorted({round(value * f, places) for f in (0.25, 0.4, 0.5, 0.6, 0.75, 1.2, 1.25, 1.5, 2, 2.5, 3, 4)}
                       - {round(value, places), 0})
        cands = [int(c) if isinstance(value, int) else c for c in cands]
    picks = rng.choice(len(cands), size=min(k, len(cands)), replace=False)
    return [cands[int(i)] for i in picks]


LIST_TWO = ("{0} and {1}", "{0} as well as {1}", "{0} and also {1}", "{0} and {1}")  # plain "and" drawn twice as often
LIST_MANY = ("{head} and {last}", "{head}, and {last}")
BOUND = re.compile(r"min|max|start|end|lower|upper|from|to$", re.I)
AGAIN = ("{request} Do the same for {rest}.", "{request} Then do it again for {rest}.", "{request} And for {rest} too.",
         "{request} Repeat that for {rest}.", "{request} I need the same for {rest}.")


def _spoken(values: list[str], rng, again: bool = False) -> str:
    """["Oslo", "Lima", "Rome"] -> "Oslo, Lima and Rome"; after "Do the same for" (again), sometimes
    "both"/"each of" first."""
    lead = rng.choice(["", "both " if len(values) == 2 else "each of "]) if again else ""
    if len(values) == 2:
        return lead + LIST_TWO[int(rng.integers(len(LIST_TWO)))].format(*values)
    return lead + LIST_MANY[int(rng.integers(len(LIST_MANY)))].format(head=", ".join(values[:-1]), last=values[-1])


# Argument names too general to share values across functions (a "name" may be a person's or a file's).
GENERIC_ARG = re.compile(r"(?i)name|query|text|content|description|title|message|data|value|input|type|keyword|"
                         r"term|info|details|request|criteria|format|mode|option|status|param")


def _shape(v) -> tuple[bool, bool]:  # a city is not replaced by a code or a common word, nor a code by a city
    return any(c.isdigit() for c in str(v)), str(v)[:1].isupper()


def parallel_values(inputs: Inputs, n: int, rng, eps: list[Episode] | None = None, pool: list[dict] | None = None,
                    source: str = "parallel-values", across: bool = False):
    """One request, one of its arguments given 2-4 values in one sentence -> the same call once per value, in
    the order named (BFCL's parallel items ask this way: "the resistance for copper and for aluminium").
    The other values are the argument's values in other glaive calls of the same function, else (numbers)
    values near the original; a bound of a range (min, max, ...) is never varied alone. The row ends at the
    list of calls. `eps` and `pool` are glaive's episodes and tools unless given; `across` takes the other
    values from any function's argument of the same name (the sets call most functions once)."""
    eps = inputs.episodes() if eps is None else eps
    pool, seen = inputs.tool_pool() if pool is None else pool, {}
    for e in eps:  # the values each argument was called with; with `across`, any function's argument of that name
        for k, v in e.call["arguments"].items():
            if isinstance(v, (str, int, float)) and not isinstance(v, bool):
                if not (across and GENERIC_ARG.fullmatch(k)):
                    seen.setdefault(("" if across else e.call["name"], k), set()).add(v)
    cands = [(e, k, span) for e in eps for k, v in e.call["arguments"].items()
             if not BOUND.search(k) and (span := _value_span(e.request, v, words=across)) is not None]
    for i in rng.permutation(len(cands))[:n]:
        e, key, span = cands[int(i)]
        value, size = e.call["arguments"][key], int(rng.choice([2, 2, 3, 3, 4]))
        taken = {normalize_text(str(v)) for v in e.call["arguments"].values()}  # no "500 USD and EUR to EUR"
        same_kind = sorted((v for v in seen.get(("" if across else e.call["name"], key), ()) if type(v) is type(value)
                            and normalize_text(str(v)) not in taken and (not across or _shape(v) == _shape(value))), key=str)
        others = [same_kind[int(j)] for j in rng.permutation(len(same_kind))[:size - 1]]
        if len(others) < size - 1 and isinstance(value, (int, float)):
            others += [v for v in _other_numbers(value, rng, size - 1)
                       if v not in others and normalize_text(str(v)) not in taken][:size - 1 - len(others)]
        if not others:
            yield Drop("no other value")
            continue
        spoken = [span] + [_written(span, v) for v in others]
        if rng.random() < 0.65:
            request = e.request.replace(span, _spoken(spoken, rng), 1)
        else:
            request = AGAIN[int(rng.integers(len(AGAIN)))].format(
                request=e.request, rest=_spoken(spoken[1:], rng, again=True) if len(spoken) > 2 else spoken[1])
        calls = [{"name": e.call["name"], "arguments": {**e.call["arguments"], key: v}} for v in [value] + others]
        tools = [e.tool] + extra_tools(pool, {e.tool["name"]}, rng, int(rng.integers(0, 3)))
        yield {"messages": [{"role": "user", "content": request}, {"role": "assistant", "content": "", "tool_calls": calls}],
               "tools": [tools[int(j)] for j in rng.permutation(len(tools))], "source": source}


def parallel_values_specs(inputs: Inputs, n: int, rng):
    """parallel-values from the tool-calling sets' single calls, offered more of their tools beside."""
    yield from parallel_values(inputs, n, rng, inputs.calls, inputs.specs, "parallel-values-specs", across=True)


NAMED = ("{name} {value}", "{name} = {value}", "{name} of {value}", "{name} {value}")  # the bare form drawn twice
SEVERAL = ("{task} with {named}.", "{task} for {named}.", "Please {task_lower} using {named}.", "{task}: {named}.",
           "Can you {task_lower} with {named}?", "I need to {task_lower}, with {named}.")


def imperative(description: str) -> str:
    """A tool's description as a task: "Calculates the area" -> "Calculate the area", "Fetches" -> "Fetch"."""
    word, _, rest = description.partition(" ")
    if re.fullmatch(r"[A-Z][a-z]+(ch|sh|ss|x|z)es", word):
        word = word[:-2]
    elif re.fullmatch(r"[A-Z][a-z]+[^isu]s", word):
        word = word[:-1]
    return f"{word} {rest}" if rest else word


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def several_args(inputs: Inputs, n: int, rng, eps: list[Episode] | None = None, pool: list[dict] | None = None,
                 source: str = "several-args"):
    """The contrast to parallel-values (which taught a 135M model "several numbers, several calls"): one
    request whose numbers are values of *different* arguments -> one call. A glaive single call with two or
    more numeric arguments is asked again in BFCL's manner, the tool's description as the task and every
    argument named beside its value ("Calculate monthly loan payment amount with loan amount 200000,
    interest rate 5 and loan term 30."). Half the rows keep the call's own values and go on to its result
    and answer (when the episode has them); the others take values near them (a bound of a range keeps its
    own) and end at the call. `eps` and `pool` are glaive's episodes and tools unless given."""
    eps = [e for e in (inputs.episodes() if eps is None else eps) if sum(map(_number, e.call["arguments"].values())) >= 2]
    pool, made, tries = inputs.tool_pool() if pool is None else pool, set(), 0
    while len(made) < n and tries < 20 * n and eps:
        tries += 1
        e = eps[int(rng.integers(len(eps)))]
        args = dict(e.call["arguments"])
        if rng.random() >= 0.5:  # other values
            args = {k: v if not _number(v) or BOUND.search(k) else _other_numbers(v, rng, 1)[0]
                    for k, v in args.items()}
        plain, form = rng.random() < 0.7, NAMED[int(rng.integers(len(NAMED)))]  # "loan amount" (else "loan_amount")
        named = _spoken([form.format(name=k.replace("_", " ") if plain else k,
                                     value=f"{v:g}" if isinstance(v, float) else v) for k, v in args.items()], rng)
        task = imperative(e.tool["description"].strip().rstrip("."))
        task_lower = task[:1].lower() + task[1:] if task[:2].istitle() else task  # "Calculate" -> "calculate"
        request = SEVERAL[int(rng.integers(len(SEVERAL)))].format(task=task, task_lower=task_lower, named=named)
        if normalize_text(request) in made:
            continue
        made.add(normalize_text(request))
        call = {"name": e.call["name"], "arguments": args}
        messages = [{"role": "user", "content": request}, {"role": "assistant", "content": "", "tool_calls": [call]}]
        if args == e.call["arguments"] and e.result:  # its own values (or only bounds to vary): the result holds
            messages += [{"role": "tool", "content": e.result}, {"role": "assistant", "content": e.answer}]
        tools = [e.tool] + extra_tools(pool, {e.tool["name"]}, rng, int(rng.integers(0, 3)))
        yield {"messages": messages, "tools": [tools[int(j)] for j in rng.permutation(len(tools))],
               "source": source}


def several_args_specs(inputs: Inputs, n: int, rng):
    """several-args from the tool-calling sets' single calls, offered more of their tools beside."""
    yield from several_args(inputs, n, rng, inputs.calls, inputs.specs, "several-args-specs")


# ---- no call when no tool fits ------------------------------------------------------------------------

STOP = set("the a an and or of to for in on with by from is are be can you your my me i it this that what how "
           "get find give make given based about into when which who will would could should please".split())
ARITHMETIC = re.compile(r"calculat|comput|math|convert|tip|discount|loan|interest|tax|percent|age|bmi|area|number|"
                        r"fibonacci|sum|average|price|cost|mortgage|salary|budget|split|currency|distance|random|"
                        r"stock|time|date|unit|volume|speed|weight|count|measure|score|rate", re.I)


@lru_cache(maxsize=1 << 16)  # a tool's words are asked for once per row that may be offered it
def content_words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z]+", text.lower().replace("_", " ")) if len(w) > 2 and w not in STOP)


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
        yield answered(row, unrelated_tools(row["question"], pool, rng, int(rng.integers(1, 5)), arithmetic_ok=False),
                       "nocall-math")


def answered(row: dict, tools: list[dict], source: str):
    """A GSM8K question offered `tools` (none fits) -> its short worked answer, no call; or a `Drop`."""
    answer = worked_answer(row["answer"])
    if answer is None or not tools:
        return Drop("no short answer" if answer is None else "no unrelated tool")
    return {"messages": [{"role": "user", "content": row["question"].strip()}, {"role": "assistant", "content": answer}],
            "tools": tools, "source": source}


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


DECLINE = ("I'm sorry, but I can't help with that: the only {tool} I have can {what}.",
           "Unfortunately, none of my tools can do that. They can {what}.",
           "I'm afraid that is beyond the {tool} available to me, which can {what}. Is there anything else I can do?",
           "Sorry, I don't have a tool for that request. What I can do here is {what}.",
           "I can't do that with the functions I have; they only {what}.",
           "That isn't something my current tools support. I can {what}, if that helps.")


def _capability(tool: dict) -> str:
    """A tool's description as something the assistant can do: "Search for recipes" -> "search for recipes"."""
    text = tool["description"].strip().rstrip(".")
    return text[:1].lower() + text[1:]


def refusal(tools: list[dict], rng) -> str:
    """A short "none of my tools does that", saying what the offered tools do."""
    what = [_capability(t) for t in tools]
    what = what[0] if len(what) == 1 else ", ".join(what[:-1]) + " or " + what[-1]
    return DECLINE[int(rng.integers(len(DECLINE)))].format(tool="tool" if len(tools) == 1 else "tools", what=what)


def decline(inputs: Inputs, n: int, rng, pool: list[dict] | None = None, source: str = "decline"):
    """Requests that glaive answers with a call, offered instead 1-3 tools (of `pool`, glaive's own by default)
    that neither share a content word with the request nor take its arguments -> a short refusal saying what the
    offered tools do, no call. The same request with its fitting tool is a call in glaive and the parallel
    families: only the tools differ."""
    pool, eps = inputs.tool_pool() if pool is None else pool, inputs.episodes()
    for k in rng.permutation(len(eps))[:n]:
        yield declined(eps[int(k)], pool, rng, int(rng.integers(1, 4)), source)


def decline_specs(inputs: Inputs, n: int, rng):
    """decline, offered tools of the tool-calling sets' thousands of specs rather than glaive's 64 functions."""
    yield from decline(inputs, n, rng, inputs.specs, "decline-specs")


def declined(e: Episode, pool: list[dict], rng, k: int, source: str):
    """Episode e's request offered up to k tools of `pool` that neither share a content word with it nor take
    its arguments -> a refusal saying what they do, no call; or a `Drop`."""
    others = [t for t in pool if t["name"] != e.call["name"] and not _fits(e.call["arguments"], t)]
    tools = unrelated_tools(e.request, others, rng, k)
    if not tools:
        return Drop("no unrelated tool")
    return {"messages": [{"role": "user", "content": e.request}, {"role": "assistant", "content": refusal(tools, rng)}],
            "tools": tools, "source": source}


# Tools that could answer almost any arithmetic question: never offered as a near miss.
GENERAL = re.compile(r"percentage|average|calculator|expression|evaluate|random_number", re.I)


def near_miss(inputs: Inputs, n: int, rng, pool: list[dict] | None = None, source: str = "near-miss"):
    """Questions offered one or two specific computing tools (of `pool`, glaive's own by default) that do not fit
    (no shared content word, the request's arguments do not fit them) -> answered directly (GSM8K, from the end
    of train, which the other families do not reach) or refused (glaive requests), no call."""
    pool = [t for t in (inputs.tool_pool() if pool is None else pool)
            if ARITHMETIC.search(t["name"] + " " + t["description"])
            and not GENERAL.search(t["name"] + " " + t["description"])]
    eps, rows = inputs.episodes(), inputs.gsm8k[::-1]
    for i in range(n):
        k = int(rng.integers(1, 3)) if rng.random() < 0.3 else 1
        if i % 2 == 0 and i // 2 < len(rows):
            row = rows[i // 2]
            yield answered(row, unrelated_tools(row["question"], pool, rng, k), source)
        elif eps:
            yield declined(eps[int(rng.integers(len(eps)))], pool, rng, k, source)


def near_miss_specs(inputs: Inputs, n: int, rng):
    """near-miss, offered computing tools of the tool-calling sets' specs (hundreds, where glaive has a dozen)."""
    yield from near_miss(inputs, n, rng, inputs.specs, "near-miss-specs")


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
        tools = tools + extra_tools(pool, {t["name"] for t in tools}, rng, int(rng.integers(0, 3)))
        yield {"messages": messages, "tools": [tools[int(i)] for i in rng.permutation(len(tools))],
               "source": "ask-missing"}
