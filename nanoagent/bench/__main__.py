"""Speed and memory figures: `python -m nanoagent.bench generate` (and `train`, `grpo`, `quant`, `serve`).

One module a benchmark: generate.py (prefill and decode, batched decoding, beside llama.cpp through
compare.py), train.py (a fine-tune step, beside PyTorch through compare.py and torch_peer.py), grpo.py (a
GRPO update), quant.py (what int8 costs in accuracy) and serve.py (`python -m nanoagent.serve` under
concurrent clients, an agent's conversation, long prompts joining; with `--minutes N` a soak under load and
faults). This file is the command.
"""
from __future__ import annotations

import argparse
import sys

from ..checkpoint import WeightsError
from ..cli import one_line_errors
from ..data.io import DataError
from .compare import compare_torch
from .generate import add_generate_args, bench_generate
from .grpo import add_grpo_args, bench_grpo
from .quant import add_quant_args, bench_quant
from .serve import add_serve_args, bench_serve
from .train import add_train_args, bench_train


def train_figures(args) -> None:
    """`bench train`: our figures alone, or beside PyTorch's with --compare-torch."""
    if args.compare_torch:
        compare_torch(args)
    else:
        bench_train(args)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.bench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    g = sub.add_parser("generate", help="prefill and decode tokens/s, peak RSS")
    add_generate_args(g)
    g.set_defaults(run=bench_generate)
    t = sub.add_parser("train", help="training tokens/s and peak RSS (full fine-tune, batch 1)")
    add_train_args(t)
    t.add_argument("--compare-torch", nargs="?", const=sys.executable, default=None, metavar="PYTHON",
                   help="beside the same step in PyTorch, with the ratios: PYTHON is an interpreter that has torch, "
                        "safetensors and transformers (default: this one)")
    t.add_argument("--torch-peer", choices=("transformers", "plain"), default="transformers",
                   help="the PyTorch side: transformers' LlamaForCausalLM, as users fine-tune it (default), or a plain "
                        "SmolLM2 in eager PyTorch (nanoagent/bench/torch_peer.py), without transformers")
    t.add_argument("--repeats", type=int, default=3, help="paired rounds of --compare-torch (default 3)")
    t.set_defaults(run=train_figures)
    r = sub.add_parser("grpo", help="seconds per GRPO update, the prompt once per group against whole rows")
    add_grpo_args(r)
    r.set_defaults(run=bench_grpo)
    q = sub.add_parser("quant", help="what int8 costs: perplexity and greedy agreement against float32")
    add_quant_args(q)
    q.set_defaults(run=bench_quant)
    s = sub.add_parser("serve", help="requests/s and p50/p95 latency of the server under concurrent clients; "
                       "--minutes N: a soak under load and faults")
    add_serve_args(s)
    s.set_defaults(run=bench_serve)
    args = ap.parse_args(argv)
    with one_line_errors(DataError, WeightsError, OSError):
        args.run(args)


if __name__ == "__main__":
    main()
