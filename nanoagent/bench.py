"""Speed and memory figures: `python -m nanoagent.bench generate` (and `train`).

Each figure is the median of several runs in this process, after a warm-up run, so the
numbers are comparable within one command on a noisy machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from .generate import GenerationStats, generate_ids, peak_rss_gb


def bench_generate(args) -> None:
    from . import load
    model = load(args.model)
    tok = model.tokenizer
    rng = np.random.default_rng(0)
    long_prompt = rng.integers(100, tok.vocab_size, args.prompt_tokens).tolist()  # (T,) ordinary tokens
    chat_prompt = tok.encode(tok.render_chat([{"role": "user", "content": "Tell me a long story about a robot."}]))

    def prefill_rate():
        kv = model.new_kv_cache(len(long_prompt) + 1)
        t0 = time.perf_counter()
        model.prefill(long_prompt, kv)
        return len(long_prompt) / (time.perf_counter() - t0)

    def decode_rate():
        stats = GenerationStats()
        for _ in generate_ids(model, chat_prompt, args.new_tokens, stop_ids=(), stats=stats):
            pass
        return stats.generated_tokens / stats.generate_seconds

    prefill_rate(), decode_rate()  # warm-up: compiled kernels, BLAS threads, page cache
    prefill = [prefill_rate() for _ in range(args.repeats)]
    decode = [decode_rate() for _ in range(args.repeats)]
    print(f"model: {args.model or 'SmolLM2-135M-Instruct'}, float32, {model.num_params() / 1e6:.1f}M parameters")
    print(f"prefill: {statistics.median(prefill):7.1f} tokens/s  ({args.prompt_tokens}-token prompt, "
          f"median of {args.repeats}: {', '.join(f'{r:.0f}' for r in prefill)})")
    print(f"decode:  {statistics.median(decode):7.1f} tokens/s  ({args.new_tokens} new tokens after a "
          f"{len(chat_prompt)}-token chat prompt, median of {args.repeats}: {', '.join(f'{r:.1f}' for r in decode)})")
    print(f"peak RSS: {peak_rss_gb():.3f} GiB")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.bench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    g = sub.add_parser("generate", help="prefill and decode tokens/s, peak RSS")
    g.add_argument("--model", default=None)
    g.add_argument("--prompt-tokens", type=int, default=512)
    g.add_argument("--new-tokens", type=int, default=128)
    g.add_argument("--repeats", type=int, default=5)
    g.set_defaults(run=bench_generate)
    args = ap.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
