"""The training mix: sources, per-source limits and weights, cleaning, and a stats table.

    python -m nanoagent.data build --recipe local --out mix.jsonl       # the shared data folder only
    python -m nanoagent.data build --recipe nanoagent --out mix.jsonl   # every source, from the hub

A recipe is a list of `Source`s. Each is read (a local file, or a hub dataset streamed up to
`limit` rows), converted by its adapter, cleaned (exact and near duplicates across the whole
mix, eval prompts, length in tokens, short answers for casual chats), given rendering variety
(shuffled and distractor tools, varied system prompts), and kept `weight` times (a weight
below 1 keeps that share of the rows). Every dropped row is counted under its reason.
"""
from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .adapters import ADAPTERS, Drop
from .clean import ExactDedup, MinHashLSH, chat_text, normalize_text, shorten_casual, user_prompts, vary_tools
from ..tokenizer import render_chat_spans
from .io import DataError, find_data_dir, iter_rows


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

    def resolve(self, data_dir: Path | None) -> str:
        if not self.local:
            return self.spec
        if data_dir is None:
            raise DataError(f"{self.name}: no local data folder (pass --data-dir or set NANOAGENT_DATA)")
        return str(data_dir / self.spec)


# ---- the recipes --------------------------------------------------------------------------------------

LOCAL = [
    Source("glaive", "glaive/glaive_toolcall_en_demo.json", "glaive", local=True),
    Source("gsm8k", "gsm8k/train.jsonl", "gsm8k", limit=200, local=True),
]

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

RECIPES = {"local": LOCAL, "nanoagent": NANOAGENT}


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


def build(recipe: list[Source], data_dir: Path | None = None, tokenizer=None, options: Options = Options(),
          blocked_prompts: set[str] = frozenset(), limit: int | None = None, progress: bool = False):
    """-> (rows, {source: Stats}). `limit` caps every source's rows read (for quick runs)."""
    rng = np.random.default_rng(options.seed)
    exact, near = ExactDedup(), MinHashLSH(threshold=options.near_dup_threshold, seed=options.seed)
    count = token_counter(tokenizer)
    stats: dict[str, Stats] = {}
    kept: list[tuple[Source, dict, int, int]] = []
    for src in recipe:
        st = stats.setdefault(src.name, Stats())
        adapter = ADAPTERS[src.adapter]
        n = min((x for x in (src.limit, limit) if x is not None), default=None)  # None: every row
        try:
            rows = itertools.islice(iter_rows(src.resolve(data_dir), src.config, src.split), n)
            for row in tqdm(rows, desc=src.name, total=n, disable=not progress, file=sys.stderr):
                st.read += 1
                try:
                    chat = adapter(row, src.name)
                except Drop as e:
                    st.drop(e.reason)
                    continue
                except (KeyError, TypeError, AttributeError, ValueError) as e:
                    st.drop(f"malformed ({type(e).__name__})")
                    continue
                if src.casual and not chat.get("tools"):
                    chat = shorten_casual(chat, options.short_answer_words)
                    if chat is None:
                        st.drop("long answer")
                        continue
                if options.decontaminate and any(normalize_text(p) in blocked_prompts for p in user_prompts(chat)):
                    st.drop("eval prompt")
                    continue
                text = chat_text(chat)
                if exact.seen(text):
                    st.drop("exact duplicate")
                    continue
                n_tok, n_asst = count(chat)
                if n_tok > options.max_tokens:
                    st.drop("too long")
                    continue
                if n_tok < options.min_tokens or n_asst == 0:
                    st.drop("too short")
                    continue
                if near.add(text):
                    st.drop("near duplicate")
                    continue
                st.kept += 1
                kept.append((src, chat, n_tok, n_asst))
        except DataError as e:
            print(f"warning: {src.name}: {e}", file=sys.stderr)
            st.drop("source unavailable")
    # distractor tools come from the tools of every kept row
    pool = list({t["name"]: t for _, c, _, _ in kept for t in c.get("tools") or []}.values())
    out = []
    for src, chat, n_tok, n_asst in kept:
        copies = int(src.weight) + (rng.random() < src.weight % 1)
        for _ in range(copies):
            row = vary_tools(chat, rng, pool, options.p_distractor, p_system=options.p_system)
            if row is not chat:
                n_tok, n_asst = count(row)
            st = stats[src.name]
            st.written, st.tokens, st.assistant_tokens = st.written + 1, st.tokens + n_tok, st.assistant_tokens + n_asst
            out.append(row)
    order = rng.permutation(len(out))
    return [out[i] for i in order], stats


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
    return "\n".join(lines) + ("\n(dropped columns: " + ", ".join(reasons) + ")" if reasons else "")


def write_jsonl(rows: list[dict], path: Path) -> None:
    """All rows, one JSON object a line, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
