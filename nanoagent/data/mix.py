"""The training mix: sources, per-source limits and weights, cleaning, and a stats table.

    python -m nanoagent.data build --recipe local --out mix.jsonl       # the shared data folder (else the hub)
    python -m nanoagent.data build --recipe nanoagent --out mix.jsonl   # every source, from the hub
    python -m nanoagent.data build --recipe agent --out mix.jsonl       # the tool-calling sets + derived families
    python -m nanoagent.data build --recipe agent-glaive --out mix.jsonl  # glaive + derived families + GSM8K
    python -m nanoagent.data build --recipe agent-parallel --out mix.jsonl  # that, with parallel-values and near misses

A recipe is a list of `Source`s. Each is read (a local file, or a hub dataset streamed up to
`limit` rows), converted by its adapter, cleaned (exact and near duplicates across the whole
mix, eval prompts, length in tokens, short answers for casual chats), given rendering variety
(shuffled and distractor tools, varied system prompts), and kept `weight` times (a weight
below 1 keeps that share of the rows). Every dropped row is counted under its reason.
A derived source (adapter "derived", spec the family's name) makes its rows from the glaive and
GSM8K train inputs (derived.py), a tool-calling set (adapter "toolset", spec the set's name) reads
the data folder's toolcalls/ (toolsets.py); both go through the same checks. The mix prints its
rows and tokens by kind of row (single call, parallel, no call, ask, chain, chat): the shares a
recipe chooses.
"""
from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .adapters import ADAPTERS, Drop
from .derived import Inputs
from .families import WHY_NOT_MADE, derive, family_rng
from .toolsets import read_toolset, tool_specs
from .clean import ExactDedup, MinHashLSH, chat_text, normalize_text, shorten_casual, user_prompts, vary_tools
from ..tokenizer import render_chat_spans
from .io import DataError, iter_rows


@dataclass
class Source:
    name: str  # the name in the stats table and the rows' "source"
    spec: str  # a hub dataset name, or a path relative to the data folder
    adapter: str  # a key of ADAPTERS
    limit: int | None = None  # rows read
    weight: float = 1.0  # times each kept row goes into the mix (below 1: the share kept)
    config: str | None = None  # hub config
    split: str = "train"
    casual: bool = False  # apply the short-answer filter
    local: bool = False  # spec is relative to the data folder
    hub: str | None = None  # a local source's dataset on the hub, read when there is no data folder
    hub_config: str | None = None
    distractors: bool = True  # may get distractor tools from other rows (derived rows choose their own)
    only_calls: bool = False  # keep only chats with a tool call

    def where(self, data_dir: Path | None) -> tuple[str, str | None]:
        """(file or hub name, hub config) to read: a local source's file in the data folder, else its hub dataset."""
        if not self.local:
            return self.spec, self.config
        if data_dir is not None:
            return str(data_dir / self.spec), self.config
        if self.hub is None:
            raise DataError(f"{self.name}: no local data folder (pass --data-dir or set NANOAGENT_DATA)")
        return self.hub, self.hub_config


# ---- the recipes --------------------------------------------------------------------------------------

# The shared data folder's files; without one, the datasets they were taken from, on the hub.
GLAIVE = Source("glaive", "glaive/glaive_toolcall_en_demo.json", "glaive", limit=300, local=True,
                hub="glaiveai/glaive-function-calling-v2")
GSM8K = Source("gsm8k", "gsm8k/train.jsonl", "gsm8k", local=True, hub="openai/gsm8k", hub_config="main")  # train only
LOCAL = [GLAIVE, replace(GSM8K, limit=200)]

# What NanoAgent trained on, sized for a laptop (about 60k chats, a few days of CPU at 1024 tokens).
# Configs and splits follow the datasets' public cards; the schemas of xLAM, hermes, Locutusque,
# smoltalk, gsm8k_decomposed, orca-math, agentinstruct and tulu are described in the shared data
# README, the others (smoltalk2's traces, code-act, Code-Feedback, the thinking derivative of hermes,
# glaive's raw hub form) come from their public schemas and are tested on hand-written rows only.
NANOAGENT = [
    Source("xlam", "Salesforce/xlam-function-calling-60k", "xlam", limit=15000),
    Source("hermes", "NousResearch/hermes-function-calling-v1", "hermes", limit=4000, config="func_calling_singleturn"),
    Source("hermes-multiturn", "NousResearch/hermes-function-calling-v1", "hermes", limit=2000, config="func_calling"),
    Source("hermes-thinking", "Jofthomas/hermes-function-calling-thinking-V1", "hermes", limit=2000),
    Source("locutusque", "Locutusque/function-calling-chatml", "locutusque", limit=4000),
    Source("glaive", "glaiveai/glaive-function-calling-v2", "glaive", limit=5000),
    Source("apigen", "HuggingFaceTB/smoltalk", "chat", limit=6000, config="apigen-80k"),
    Source("everyday", "HuggingFaceTB/smoltalk", "chat", limit=2260, config="everyday-conversations", casual=True),
    Source("magpie", "HuggingFaceTB/smoltalk", "chat", limit=5000, config="smol-magpie-ultra", casual=True),
    Source("smolagents", "HuggingFaceTB/smoltalk2", "chat", limit=2000, config="SFT",
           split="smolagents_toolcalling_traces_think"),
    Source("gsm8k-decomposed", "weijie210/gsm8k_decomposed", "gsm8k-decomposed", limit=3000),
    Source("gsm8k", "openai/gsm8k", "gsm8k", limit=3000, config="main"),
    Source("orca-math", "microsoft/orca-math-word-problems-200k", "orca-math", limit=3000),
    Source("agentinstruct", "microsoft/orca-agentinstruct-1M-v1", "chat", limit=2000, split="creative_content"),
    Source("tulu-if", "allenai/tulu-3-sft-personas-instruction-following", "tulu-if", limit=3000),
    Source("code-act", "xingyaoww/code-act", "chat", limit=2000, split="codeact"),
    Source("code-feedback", "m-a-p/Code-Feedback", "chat", limit=2000),
]

# What derived sources are made from: the glaive sample and GSM8K *train* (never its test split); the *-specs
# families also take Seal-Tools' specs and the single calls of these tool-calling sets (BFCL-like requests that
# name their values; HammerBench's and API-Bank's rows lean on a dialogue or a missing value).
DERIVED_INPUTS = {"glaive": GLAIVE, "gsm8k": GSM8K}
CALL_INPUTS = ("seal-tools:single", "toolrl", "callnavi:single")


def derived(family: str, n: int, weight: float = 1.0) -> Source:
    return Source(family, family, "derived", limit=n, weight=weight, distractors=False)


def revised(recipe: list[Source], limits: dict[str, int], after: dict[str, Source]) -> list[Source]:
    """`recipe` with other limits for the sources named in `limits`, and each source of `after` added
    right after the one it is keyed by (the order is kept: it decides which duplicate survives)."""
    out = []
    for src in recipe:
        out.append(replace(src, limit=limits.get(src.name, src.limit)))
        if src.name in after:
            out.append(after[src.name])
    return out


# An agent for this machine: one SFT epoch is about 245K tokens, about 40 minutes on 2 cores. Glaive's
# single calls, then what it lacks: parallel calls (the same function, several functions, more tools than
# called); no call when no tool fits, about 40% of the rows (a first mix with 16% made a model that called a
# tool for nearly every question): questions answered directly, glaive's requests declined when only
# unrelated tools are offered, asking for a missing argument (math questions are never offered a
# calculator-like tool there, and calc-chain shows the calculator in use); calculator chains, the
# project's own tools, and a share of plain GSM8K.
AGENT_GLAIVE = [
    replace(GLAIVE, weight=0.8, only_calls=True),  # its tool-less chats: see nocall-chat
    derived("parallel-same", 45),
    derived("parallel-mixed", 32),
    derived("parallel-calc", 20),
    derived("nocall-chat", 55),
    derived("nocall-math", 40),
    derived("decline", 80),
    derived("ask-missing", 25),
    derived("calc-chain", 30),
    derived("own-tools", 28),
    replace(GSM8K, limit=15),
]

# The agent recipe with what BFCL's parallel items ask for and the agent SFT lacked (one request naming
# several values of one argument -> one call per value: parallel-values) and with the near misses in the
# one stage; fewer easy no-call rows. About 300K tokens, about 46 minutes on 2 cores. Alone it calls too
# often (a request with two numbers gets two calls); with the near-miss stage after it, merged half and
# half with agent SFT + near-miss stage, it makes the best model measured (docs/results.md).
AGENT_PARALLEL = revised(AGENT_GLAIVE, {"nocall-math": 30, "decline": 50},
                         after={"parallel-mixed": derived("parallel-values", 130), "decline": derived("near-miss", 100)})

# A second, shorter SFT stage on top of an agent fine-tune: an agent SFT with 40% easy no-call rows
# still called the one ill-fitting tool of nearly every BFCL irrelevance item; here near misses,
# with about as many call rows again so that fitting tools keep being called.
NEAR_MISS_STAGE = [
    derived("near-miss", 100),
    replace(GLAIVE, limit=150, only_calls=True),
    derived("parallel-same", 25),
    derived("parallel-mixed", 20),
]

# The near-miss stage with a few parallel-values rows (40 asked, 28 made), a stage on top of the agent SFT,
# which never saw them: 96 in one stage had taught "two numbers, two calls". Measured, these few taught it
# too (simple_python 55 -> 30%); kept so that docs/results.md's fifth attempt can be rebuilt.
PARALLEL_STAGE = NEAR_MISS_STAGE + [derived("parallel-values", 40)]

# The parallel stage with its contrast: as many rows again whose several numbers fill different arguments of
# one call (several-args), so that "several values of one argument -> several calls" has "several arguments
# -> one call" beside it.
CONTRAST_STAGE = PARALLEL_STAGE + [derived("several-args", 60)]


def toolset(name: str, n: int) -> Source:
    """A public tool-calling set of the data folder's toolcalls/ (toolsets.py); "name:single" / "name:parallel"
    for its rows of one call / several calls."""
    return Source(name.replace(":", "-"), name, "toolset", limit=n, local=True)


# The agent on real tool-calling data (toolsets.py): 1,217 chats, 711K tokens, one SFT epoch in about
# 148 minutes on 2 cores (7.7 s a step). Shares by kind of row, chosen on purpose (the mix prints them):
# - single calls with several tools offered, from every set (Seal-Tools, HammerBench, API-Bank, CallNavi,
#   NESTFUL's first steps, ToolACE/xLAM): BFCL's simple and multiple items;
# - parallel calls, about a fifth of the call rows: Seal-Tools answers 76% of its requests with several
#   calls, and a probe with that share split single requests into two calls; ToolRL's parallel rows are
#   kept whole;
# - no call, about a third of the rows: HammerBench's questions with the right tool removed (refusals
#   beside their twins), the project's near misses and declines (a probe with 100 refusals among 680
#   rows called a tool for 39 of 40 irrelevance items), direct answers;
# - asking for a missing value (HammerBench slot filling), chains that read results (ComplexFuncBench's
#   real responses, glaive's result turns, the calculator and the project's own tools) and a little
#   plain math, so that the agent still answers from what a tool returned.
AGENT = [
    toolset("seal-tools:single", 220),
    toolset("seal-tools:parallel", 80),
    toolset("toolrl", 150),
    toolset("hammer-single", 160),
    toolset("hammer-ask", 40),
    toolset("apibank", 60),
    toolset("callnavi:single", 80),
    toolset("nestful", 40),
    toolset("complexfuncbench", 150),
    replace(GLAIVE, weight=0.5, only_calls=True),
    derived("near-miss", 150),
    derived("decline", 60),
    derived("nocall-chat", 40),
    derived("nocall-math", 30),
    derived("calc-chain", 30),
    derived("own-tools", 28),
    replace(GSM8K, limit=15),
]

# The same shares from about three times the rows (every row of the smaller sets; 3,855 chats, 2.3M tokens),
# for a user's overnight run: about 7 hours on 2 cores at the 88 tokens/s a 1024-token SFT step runs here.
AGENT_LARGE = revised(AGENT, {"seal-tools-single": 700, "seal-tools-parallel": 250, "toolrl": 400, "hammer-single": 600,
                              "hammer-ask": 200, "apibank": 300, "callnavi-single": 400, "nestful": 300,
                              "complexfuncbench": 600, "near-miss": 450, "decline": 180, "nocall-chat": 120,
                              "nocall-math": 90, "calc-chain": 90, "own-tools": 80, "gsm8k": 45}, after={})

# The agent recipe with its near misses and declines offered tools of Seal-Tools' 4,076 specs instead of glaive's
# 64 functions, and with parallel-values and several-args made from the sets' single calls (one request naming
# several values of one argument -> one call per value; several arguments -> one call): an arm of the ablation
# (does the variety of the refused tools matter? do BFCL-worded parallel requests?).
AGENT_SPECS = revised([derived(s.spec + "-specs", s.limit) if s.spec in ("near-miss", "decline") else s for s in AGENT],
                      {}, after={"seal-tools-parallel": derived("parallel-values-specs", 60),
                                 "toolrl": derived("several-args-specs", 30)})

# A second, shorter SFT stage on top of the agent SFT: its first epoch (runs/agent-real) wrote one call for 53
# of BFCL's first 100 parallel requests that needed two, and called the ill-fitting tool of 80 of 100
# irrelevance items. Here the last thing learned is those two: near misses (glaive's computing tools and the
# sets' specs), requests naming several values of one argument (parallel-values-specs) and the sets' parallel
# calls, beside single calls and their contrast (several-args-specs) so that single requests stay single.
REAL_STAGE = [
    derived("near-miss", 60),
    derived("near-miss-specs", 60),
    derived("parallel-values-specs", 60),
    toolset("seal-tools:parallel", 40),
    toolset("seal-tools:single", 50),
    toolset("toolrl", 30),
    derived("several-args-specs", 20),
]

# A third stage, on top of the second (runs/agent-real-stage): that model still wrote one call, or one call with
# its keys written twice, for 29 of BFCL's first 100 parallel requests that needed two (and 30 parallel_multiple
# ones). Here requests naming several values of one argument weigh most (the sets' single calls with other values
# of the same argument, glaive's computing tools, ToolACE / xLAM's parallel rows), each beside its contrast
# (several arguments -> one call, the sets' single calls) and near misses, so that single requests stay single
# and ill-fitting tools stay uncalled.
PARALLEL_REAL_STAGE = [
    derived("parallel-values-specs", 200),
    derived("parallel-values", 40),
    toolset("toolrl:parallel", 60),
    toolset("seal-tools:parallel", 30),
    derived("several-args-specs", 40),
    toolset("seal-tools:single", 40),
    toolset("toolrl:single", 30),
    derived("near-miss", 40),
    derived("near-miss-specs", 40),
]

# A fourth stage, on top of the third (runs/agent-par-stage): in use that model declined "What is 17 * 23 + 4?"
# with the calculator offered, called no calculator on GSM8K's questions, and after a tool's error sent the same
# call again. Here the project's own tools weigh most: bare sums asked of the calculator (calc-ask), wrong calls
# mended after the agent's error (recovery: the wrong call shown, not learned, the mended call copied from the
# error's "did you mean"), calculator chains and the other tools' calls, the time said as the clock gives it
# (own-tools-24h); beside them questions answered without a tool though tools are offered, near misses, answers
# without the calculator, and the sets' single and parallel calls, so that what the three stages taught holds.
# (The first run of this stage, before the errors had hints, had 80 recovery rows, 12-hour times and no
# nocall-chat rows: docs/results.md.)
TOOLS_STAGE = [
    derived("calc-ask", 50),
    derived("recovery", 100),
    derived("calc-chain", 30),
    derived("own-tools-24h", 28),
    derived("nocall-chat", 30),
    derived("near-miss", 40),
    derived("near-miss-specs", 20),
    derived("nocall-math", 15),
    derived("parallel-values-specs", 40),
    toolset("seal-tools:single", 30),
    toolset("toolrl:parallel", 20),
]

# Prompts for rejection sampling's parallel kind (not a training mix: the sampled replies that make these calls
# are the rows): BFCL's parallel items name several values of one argument, its parallel_multiple items ask two to
# four tasks of different functions in one turn; the agent-large pool (seed 31) holds 152 parallel requests in all.
PARALLEL_PROMPTS = [
    derived("parallel-mixed-specs", 300),
    derived("parallel-values-specs", 200),
    toolset("toolrl:parallel", 100),
    toolset("seal-tools:parallel", 100),
]

# Arms of the ablation: the agent recipe's real tool-calling sets alone, and its other sources alone (glaive, the
# derived families, the project's tools, GSM8K) at the same limits.
AGENT_REAL_ONLY = [s for s in AGENT if s.adapter == "toolset"]
AGENT_OWN_ONLY = [s for s in AGENT if s.adapter != "toolset"]

RECIPES = {"local": LOCAL, "nanoagent": NANOAGENT, "agent": AGENT, "agent-large": AGENT_LARGE,
           "agent-specs": AGENT_SPECS, "agent-real-only": AGENT_REAL_ONLY, "agent-own-only": AGENT_OWN_ONLY,
           "real-stage": REAL_STAGE, "parallel-real-stage": PARALLEL_REAL_STAGE, "tools-stage": TOOLS_STAGE,
           "agent-glaive": AGENT_GLAIVE,
           "agent-parallel": AGENT_PARALLEL,
           "near-miss-stage": NEAR_MISS_STAGE, "parallel-stage": PARALLEL_STAGE,
           "contrast-stage": CONTRAST_STAGE, "parallel-prompts": PARALLEL_PROMPTS}


@dataclass
class Options:
    max_tokens: int = 1024  # longest chat kept (rendered, in tokens)
    min_tokens: int = 16
    near_dup_threshold: float = 0.8
    short_answer_words: int = 120
    p_distractor: float = 0.5
    p_system: float = 0.5
    seed: int = 0
    decontaminate: bool = True


@dataclass
class Stats:
    read: int = 0
    kept: int = 0
    written: int = 0
    tokens: int = 0  # tokens written (each copy counted)
    assistant_tokens: int = 0
    dropped: dict = field(default_factory=dict)
    kinds: dict = field(default_factory=dict)  # kind of row -> [rows, tokens] written

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


# ---- building -----------------------------------------------------------------------------------------

def token_counter(tokenizer):
    """chat -> (tokens, assistant tokens); without a tokenizer, about 4 characters a token."""
    if tokenizer is None:

        def approx(row):
            text, spans = render_chat_spans(row["messages"], row.get("tools"), add_generation_prompt=False)
            return math.ceil(len(text) / 4), math.ceil(sum(b - a for a, b in spans) / 4)
        return approx

    def count(row):
        ids, mask = tokenizer.encode_chat(row["messages"], row.get("tools"), add_generation_prompt=False)
        return len(ids), int(mask.sum())
    return count


class Checks:
    """The checks a converted chat goes through, in order; the duplicate finders remember every chat kept."""

    def __init__(self, options: Options, blocked_prompts, count):
        self.options, self.blocked, self.count = options, blocked_prompts, count
        self.exact = ExactDedup()
        self.near = MinHashLSH(threshold=options.near_dup_threshold, seed=options.seed)

    def __call__(self, chat: dict, casual: bool) -> tuple[dict, int, int]:
        """chat -> (chat, tokens, assistant tokens) as kept; raises Drop(reason) when it is not."""
        if casual and not chat.get("tools"):
            chat = shorten_casual(chat, self.options.short_answer_words)
            if chat is None:
                raise Drop("long answer")
        if self.options.decontaminate and any(normalize_text(p) in self.blocked for p in user_prompts(chat)):
            raise Drop("eval prompt")
        text = chat_text(chat)
        if self.exact.seen(text):
            raise Drop("exact duplicate")
        n_tok, n_asst = self.count(chat)
        if n_tok > self.options.max_tokens:
            raise Drop("too long")
        if n_tok < self.options.min_tokens or n_asst == 0:
            raise Drop("too short")
        if self.near.add(text):
            raise Drop("near duplicate")
        return chat, n_tok, n_asst


def read_inputs(recipe: list[Source], data_dir: Path | None, blocked) -> Inputs:
    """The derived sources' inputs: the glaive sample and GSM8K train past the rows the recipe uses plainly."""
    rows = {}
    for key, src in DERIVED_INPUTS.items():
        try:
            spec, config = src.where(data_dir)
            rows[key] = list(itertools.islice(iter_rows(spec, config, src.split), src.limit))
        except DataError as e:
            print(f"warning: derived inputs: {key}: {e}", file=sys.stderr)
            rows[key] = []
    plain = sum(s.limit or 0 for s in recipe if s.adapter == "gsm8k")
    specs, calls = [], []
    if data_dir is not None and any(s.adapter == "derived" and s.spec.endswith("-specs") for s in recipe):
        try:
            specs = tool_specs(data_dir)
            calls = [c for name in CALL_INPUTS for c in read_toolset(name, data_dir, family_rng(0, name))
                     if not isinstance(c, Drop)]
        except DataError as e:
            print(f"warning: derived inputs: tool-calling sets: {e}", file=sys.stderr)
    return Inputs.make(rows["glaive"], rows["gsm8k"][plain:], blocked, specs, calls)


def read_source(src: Source, data_dir: Path | None, limit: int | None, checks: Checks, st: Stats,
                progress: bool = False, inputs: Inputs | None = None, seed: int = 0) -> list[tuple[dict, int, int]]:
    """One source's rows, converted by its adapter (or made by its derived family) and checked ->
    [(chat, tokens, assistant tokens)] kept; every row counted in `st`, as kept or under the reason it was dropped."""
    made = src.adapter in ("derived", "toolset")
    adapter = (lambda chat, _: chat) if made else ADAPTERS[src.adapter]
    n = min((x for x in (src.limit, limit) if x is not None), default=None)  # None: every row
    kept = []
    try:
        if src.adapter == "derived":  # a family makes up to n rows (and yields a Drop for each candidate that failed)
            rows = derive(src.spec, inputs, src.limit if n is None else n, seed)
        elif src.adapter == "toolset":  # a public tool-calling set, its rows in a random order
            rows = itertools.islice(read_toolset(src.spec, data_dir, family_rng(seed, src.spec)), n)
        else:
            spec, config = src.where(data_dir)
            rows = itertools.islice(iter_rows(spec, config, src.split), n)
        for row in tqdm(rows, desc=src.name, total=n, disable=not progress, file=sys.stderr):
            st.read += 1
            try:
                if isinstance(row, Drop):
                    raise row
                chat = adapter(row, src.name)
                if src.only_calls and not any(m.get("tool_calls") for m in chat["messages"]):
                    raise Drop("no call")
            except Drop as e:
                st.drop(e.reason)
                continue
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                st.drop(f"malformed ({type(e).__name__})")
                continue
            try:
                kept.append(checks(chat, src.casual))
            except Drop as e:
                st.drop(e.reason)
                continue
            st.kept += 1
    except DataError as e:
        print(f"warning: {src.name}: {e}", file=sys.stderr)
        st.drop("source unavailable")
    return kept


def build(recipe: list[Source], data_dir: Path | None = None, tokenizer=None, options: Options = Options(),
          blocked_prompts: set[str] = frozenset(), limit: int | None = None, progress: bool = False):
    """-> (rows, {source: Stats}). `limit` caps every source's rows read (for quick runs)."""
    rng = np.random.default_rng(options.seed)
    count = token_counter(tokenizer)
    checks = Checks(options, blocked_prompts, count)
    stats: dict[str, Stats] = {}
    kept: list[tuple[Source, dict, int, int]] = []
    inputs = read_inputs(recipe, data_dir, blocked_prompts) if any(s.adapter == "derived" for s in recipe) else None
    for src in recipe:
        st = stats.setdefault(src.name, Stats())
        kept += [(src, *k) for k in read_source(src, data_dir, limit, checks, st, progress, inputs, options.seed)]
    # distractor tools come from the tools of every kept row
    pool = list({t["name"]: t for _, c, _, _ in kept for t in c.get("tools") or []}.values())
    out = []
    for src, chat, n_tok, n_asst in kept:
        copies = int(src.weight) + (rng.random() < src.weight % 1)
        for _ in range(copies):
            row = vary_tools(chat, rng, pool, options.p_distractor if src.distractors else 0.0,
                             p_system=options.p_system)
            if row is not chat:
                n_tok, n_asst = count(row)
            st = stats[src.name]
            st.written, st.tokens, st.assistant_tokens = st.written + 1, st.tokens + n_tok, st.assistant_tokens + n_asst
            kind = st.kinds.setdefault(row_kind(row), [0, 0])
            kind[0], kind[1] = kind[0] + 1, kind[1] + n_tok
            out.append(row)
    order = rng.permutation(len(out))
    return [out[i] for i in order], stats


KINDS = ("single", "single, several offered", "parallel", "no call", "ask", "chain", "chat")


def row_kind(chat: dict) -> str:
    """What a written row teaches (the mix's shares are chosen by these): a single call with one tool or with
    several offered, several calls in one reply, no call although tools are offered, asking before calling,
    a chain that reads tool results, or plain chat and math without tools."""
    ms = chat["messages"]
    if not chat.get("tools"):
        return "chat"
    if any(m["role"] == "tool" for m in ms):
        return "chain"
    first = next((i for i, m in enumerate(ms) if m.get("tool_calls")), None)
    if first is None:
        return "no call"
    if any(m["role"] == "assistant" for m in ms[:first]):
        return "ask"
    if len(ms[first]["tool_calls"]) > 1:
        return "parallel"
    return "single" if len(chat["tools"]) == 1 else "single, several offered"


def kinds_table(stats: dict[str, Stats]) -> str:
    """The written rows and tokens by kind of row, with their shares of the mix."""
    rows = {k: [0, 0] for k in KINDS}
    for s in stats.values():
        for k, (n, t) in s.kinds.items():
            rows[k][0] += n
            rows[k][1] += t
    n_all, t_all = max(1, sum(r[0] for r in rows.values())), max(1, sum(r[1] for r in rows.values()))
    lines = [f"{'kind of row':26s} {'rows':>6s} {'share':>6s} {'tokens':>9s} {'share':>6s}"]
    lines += [f"{k:26s} {n:6d} {n / n_all:6.1%} {t:9d} {t / t_all:6.1%}" for k, (n, t) in rows.items()]
    return "\n".join(lines)


def stats_table(stats: dict[str, Stats]) -> str:
    reasons = sorted({r for s in stats.values() for r in s.dropped})
    head = ["source", "read", "kept", "written", "tokens", "asst tokens"] + reasons
    rows = [[name, s.read, s.kept, s.written, s.tokens, s.assistant_tokens] + [s.dropped.get(r, 0) for r in reasons]
            for name, s in stats.items()]
    total = ["total"] + [sum(r[i] for r in rows) for i in range(1, len(head))]
    rows = [head] + [[str(x) for x in r] for r in rows + [total]]
    w = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    if reasons:
        lines.append("Rows read but not kept, by reason (the columns after 'asst tokens'):")
        lines += [f"  {r.ljust(max(map(len, reasons)))}  {why_dropped(r)}" for r in reasons]
    return "\n".join(lines)


WHY_DROPPED = {  # the checks' reasons; derived families' are WHY_NOT_MADE; the rest are the adapters'
    # (a row that does not fit its source's format)
    "long answer": "a casual chat whose reply runs past short_answer_words",
    "eval prompt": "its prompt is an IFEval, IFBench or BFCL prompt (kept out of training)",
    "exact duplicate": "the same text as a chat already kept",
    "near duplicate": "nearly the same text as a chat already kept (MinHash)",
    "too long": "more tokens than max_tokens",
    "too short": "fewer tokens than min_tokens, or no assistant reply",
    "no call": "a chat without a tool call, from a source that keeps only calls",
    "source unavailable": "the source could not be read (counted once; see the warning)",
}


def why_dropped(reason: str) -> str:
    if reason in WHY_DROPPED or reason in WHY_NOT_MADE:
        return WHY_DROPPED.get(reason) or WHY_NOT_MADE[reason]
    if reason.startswith("malformed"):
        return "a field the adapter reads is missing or of the wrong type"
    return "the row does not fit its source's format"


def write_jsonl(rows: list[dict], path: Path) -> None:
    """All rows, one JSON object a line, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # only there when writing failed or was interrupted
