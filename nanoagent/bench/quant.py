"""`python -m nanoagent.bench quant`: what int8 costs in accuracy, float32 against int8 in groups and per
channel: perplexity on GSM8K test answers, greedy agreement on fixed chat prompts.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .. import quant
from ..data.io import DataError, find_data_dir
from ..eval.agreement import CHECK_PROMPTS, agreement, forced_agreement, greedy_tokens
from ..eval.ppl import perplexity
from ..generate import ChatModel, load
from ..model import Model


def add_quant_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=None,
                    help="GSM8K test.jsonl (default: in $NANOAGENT_DATA or shared/data beside the checkout)")
    ap.add_argument("--tokens", type=int, default=2048, help="held-out tokens for perplexity")
    ap.add_argument("--new-tokens", type=int, default=32, help="greedy tokens per check prompt")


def bench_quant(args) -> None:
    """Perplexity on GSM8K test answers and greedy agreement on CHECK_PROMPTS: float32 against int8."""
    if args.data:
        data = Path(args.data)
    else:
        folder = find_data_dir(required=False)
        if folder is None:
            raise DataError("bench quant reads GSM8K test answers: pass --data FILE (a GSM8K test.jsonl) or set "
                            "NANOAGENT_DATA to a data folder holding gsm8k/test.jsonl")
        data = folder / "gsm8k" / "test.jsonl"
    lm = load(args.model)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    ids = lm.tokenizer.encode("\n\n".join(r["answer"] for r in rows[:300]))[:args.tokens]
    print(f"float32: perplexity and {len(CHECK_PROMPTS)} greedy replies", file=sys.stderr, flush=True)
    ppl32 = perplexity(lm, ids)
    greedy32 = greedy_tokens(lm, CHECK_PROMPTS, args.new_tokens)
    print(f"held-out text: the first {len(ids)} tokens of the GSM8K test answers; "
          f"{len(CHECK_PROMPTS)} chat prompts x {args.new_tokens} greedy tokens")
    print(f"{'weights':24s} {'perplexity':>10s} {'rise':>8s} {'agreement':>10s} {'same prefix':>12s} "
          f"{'forced top-1':>13s}")
    print(f"{'float32':24s} {ppl32:10.4f}", flush=True)
    for group in (quant.GROUP, None):
        name = f"int8, groups of {group}" if group else "int8, per channel"
        print(f"{name}: perplexity and greedy replies", file=sys.stderr, flush=True)
        m8 = ChatModel(Model(lm.config, quant.quantize_params(lm.model.params, group)), lm.tokenizer)
        ppl8 = perplexity(m8, ids)
        greedy8 = greedy_tokens(m8, CHECK_PROMPTS, args.new_tokens)
        prefix = np.mean([next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a)) / len(a)
                          for a, b in zip(greedy32, greedy8)])
        forced = forced_agreement(lm, m8, CHECK_PROMPTS, greedy32)
        print(f"{name:24s} {ppl8:10.4f} {ppl8 / ppl32 - 1:+8.2%} {agreement(greedy32, greedy8):10.1%} "
              f"{prefix:12.1%} {forced:13.1%}", flush=True)
