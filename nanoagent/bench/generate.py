"""`python -m nanoagent.bench generate`: prefill and decode tokens/s and peak RSS, one sequence or a batch,
float32 or int8, alone or beside llama.cpp on the same weights (compare.py), and where one token's time goes.

Each figure is the median of several runs in this process, after a warm-up run, so the numbers are
comparable within one command on a noisy machine. `--int8` runs the float32 and the int8 model each in a
process of its own, so each has its own peak RSS.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from .. import kernels_int8
from ..batch import BatchDecoder
from ..checkpoint import read_tokenizer
from ..generate import ChatModel, GenerationStats, generate_ids, load, peak_rss_gib
from ..threads import blas_line
from ..weights import resolve
from .compare import batch_worker, bench_prompts, chat_prompt, compare_llamacpp, llamacpp_rates


def add_generate_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", choices=("float32", "int8"), default="float32",
                    help="weights to run in this process (int8: quantized while loading a float folder)")
    ap.add_argument("--int8", action="store_true", help="float32 and int8 figures side by side, one process each")
    ap.add_argument("--batch", default=None, metavar="B,B,...",
                    help="batched decoding: aggregate tokens/s and peak RSS for each batch size (e.g. 1,4,8,16)")
    ap.add_argument("--batch-worker", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--compare-llamacpp", action="store_true",
                    help="beside llama.cpp on the same weights (GGUF F32 and Q8_0 exported here), with the ratios; "
                         "needs llama-cpp-python (the bench extra)")
    ap.add_argument("--profile", action="store_true",
                    help="where one decoding token's time goes: a table of milliseconds by part of the network")
    ap.add_argument("--compare-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--llamacpp-worker", default=None, help=argparse.SUPPRESS)


def bench_generate(args) -> None:
    if args.compare_llamacpp:
        return compare_llamacpp(args)
    if args.compare_worker or args.llamacpp_worker:
        return compare_worker(args)
    if args.batch or args.batch_worker:
        return bench_batch(args)
    if args.int8:  # float32, then int8, each in a fresh process: separate peak RSS, no shared caches
        for precision in ("float32", "int8"):
            cmd = [sys.executable, "-m", "nanoagent.bench", "generate", "--precision", precision,
                   "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens),
                   "--repeats", str(args.repeats)] + (["--model", args.model] if args.model else [])
            subprocess.run(cmd, check=True)
        return
    print(f"loading {args.model or 'SmolLM2-135M-Instruct'} ({args.precision})", file=sys.stderr, flush=True)
    lm = load(args.model, int8=args.precision == "int8")
    if args.profile:
        return profile_decode(lm, args)
    rates = measure_generate(lm, args)
    prefill, decode, decode_long = rates["prefill"], rates["decode"], rates["decode_long"]
    print(f"model: {args.model or 'SmolLM2-135M-Instruct'}, {args.precision}, {lm.model.num_params() / 1e6:.1f}M parameters")
    print(blas_line())
    if args.precision == "int8":
        print(kernels_int8.kernel_line())
    print(f"KV cache: {np.dtype(lm.model.cache_dtype).name}")
    print(f"prefill: {statistics.median(prefill):7.1f} tokens/s  ({args.prompt_tokens}-token prompt, "
          f"median of {args.repeats}: {', '.join(f'{r:.0f}' for r in prefill)})")
    print(f"decode:  {statistics.median(decode):7.1f} tokens/s  ({args.new_tokens} new tokens after a "
          f"{rates['chat_tokens']}-token chat prompt, median of {args.repeats}: {', '.join(f'{r:.1f}' for r in decode)})")
    shares = [long / short for short, long in zip(decode, decode_long)]  # each round ran both, one after the other
    print(f"         {statistics.median(decode_long):7.1f} tokens/s  after the {args.prompt_tokens}-token prompt "
          f"({', '.join(f'{r:.1f}' for r in decode_long)}): {statistics.median(shares):.0%} of the speed above, "
          f"the median of the rounds' ratios ({', '.join(f'{r:.0%}' for r in shares)})")
    print(f"peak RSS: {peak_rss_gib():.3f} GiB")


def compare_worker(args) -> None:
    """One side of --compare-llamacpp in this process (ours, or llama.cpp on a GGUF file) -> one JSON line."""
    if args.llamacpp_worker:
        long_prompt, chat = bench_prompts(read_tokenizer(resolve(args.model)), args.prompt_tokens)
        rates = llamacpp_rates(Path(args.llamacpp_worker), long_prompt, chat, args.new_tokens, args.repeats)
    else:
        rates = measure_generate(load(args.model, int8=args.precision == "int8"), args)
    print(json.dumps({**rates, "peak_rss_gib": peak_rss_gib()}))


def measure_generate(lm: ChatModel, args) -> dict:
    """Prefill tokens/s of a long prompt and greedy decode tokens/s after a chat prompt, `repeats` of each."""
    model = lm.model
    long_prompt, chat_prompt = bench_prompts(lm.tokenizer, args.prompt_tokens)

    def prefill_rate():
        kv = model.new_kv_cache(len(long_prompt) + 1)
        t0 = time.perf_counter()
        model.prefill(long_prompt, kv)
        return len(long_prompt) / (time.perf_counter() - t0)

    def decode_rate(prompt):
        stats = GenerationStats()
        for _ in generate_ids(model, prompt, args.new_tokens, stop_ids=(), stats=stats):
            pass
        return stats.generated_tokens / stats.generate_seconds

    print("warming up (compiles the kernels on a first run)", file=sys.stderr, flush=True)
    prefill_rate(), decode_rate(chat_prompt)  # warm-up: compiled kernels, BLAS threads, page cache
    print(f"measuring prefill ({args.prompt_tokens} tokens) and decode ({args.new_tokens} tokens, after the chat "
          f"prompt and after the long one), {args.repeats} times each", file=sys.stderr, flush=True)
    prefill = [prefill_rate() for _ in range(args.repeats)]
    # the two decodes side by side in each round: the long prompt's cost is the ratio within a round,
    # which the machine's drift moves less than it moves two blocks of runs minutes apart
    rounds = [(decode_rate(chat_prompt), decode_rate(long_prompt)) for _ in range(args.repeats)]
    return {"prefill": prefill, "decode": [short for short, _ in rounds], "decode_long": [long for _, long in rounds],
            "chat_tokens": len(chat_prompt)}


# Where a decoding token's time goes: each compiled kernel's own time, by the part of the network it is.
PARTS = {"_matmul_rows": "matrix products in the layers", "_matmul_int8": "matrix products in the layers",
         "_decode_float": "one call: the layers and the head",
         "_decode_layer_int8": "one compiled call per layer", "_lm_head_int8": "the LM head",
         "_attend_cache": "attention over the KV cache", "_rmsnorm": "RMSNorm, RoPE, SwiGLU gate",
         "_rope": "RMSNorm, RoPE, SwiGLU gate", "_silu_gate": "RMSNorm, RoPE, SwiGLU gate"}


def profile_decode(lm: ChatModel, args) -> None:
    """Where one greedy decoding token's milliseconds go, two ways: `decode_step` (float32, one
    compiled call for the whole network; int8, a call per layer and one for the head) and `forward`
    on one token (a kernel call per operation, the way a training step runs: its rows split the
    network's time by part).
    Each is timed plain, then profiled: the kernels' own times, and what they leave of the profiled
    wall time, the Python and NumPy between them (which also carries the profiler's cost)."""
    model = lm.model
    prompt = chat_prompt(lm.tokenizer)
    n = args.new_tokens

    def decode(step, profiler=None) -> float:
        """ms a token of `n` greedy tokens after the prompt (its prefill is not timed)"""
        kv = model.new_kv_cache(len(prompt) + n)
        logits = model.prefill(prompt, kv)
        if profiler is not None:
            profiler.enable()
        t0 = time.perf_counter()
        for _ in range(n):
            logits = step(int(np.argmax(logits)), kv)
        seconds = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
        return seconds * 1e3 / n

    print(f"model: {args.model or 'SmolLM2-135M-Instruct'}, {args.precision}; {blas_line()}\n"
          f"one greedy decoding token, {n} tokens after a {len(prompt)}-token chat prompt (median of {args.repeats}):")
    ways = {"decode_step: compiled": model.decode_step,
            "forward on one token: a kernel call per operation": lambda t, kv: model.prefill([t], kv)}
    for way, step in ways.items():
        decode(step)  # warm-up
        plain = statistics.median(decode(step) for _ in range(args.repeats))
        profiler = cProfile.Profile()
        wall = decode(step, profiler)
        ms = Counter()
        for (_, _, name), (_, _, own, _, callers) in pstats.Stats(profiler).stats.items():
            if name in PARTS:
                ms[PARTS[name]] += own * 1e3 / n
            if name == "linear_forward":  # the tied LM head is one more product: told apart by its caller
                head = sum(c[3] for (_, _, caller), c in callers.items() if caller == "lm_head") * 1e3 / n
                ms["matrix products in the layers"] -= head
                ms["the LM head"] += head
        ms["Python and NumPy between the kernels"] = wall - sum(ms.values())
        print(f"{way}: {plain:.2f} ms ({1e3 / plain:.1f} tokens/s); profiled {wall:.2f} ms, of which")
        for part, t in sorted(ms.items(), key=lambda kv: -kv[1]):
            print(f"  {part:40s} {t:6.2f} ms  {t / wall:6.1%}")


def batch_rate(model, prompt, batch: int, new_tokens: int) -> float:
    """Aggregate decoding tokens/s of `batch` copies of a prompt decoded together (prefill excluded)."""
    decoder = BatchDecoder(model, slots=batch, capacity=len(prompt) + new_tokens)
    for _ in range(batch):
        decoder.submit(prompt, new_tokens)
    decoder.step()  # prefills every slot and samples the first tokens
    t0 = time.perf_counter()
    while decoder.busy:
        decoder.step()
    return batch * (new_tokens - 1) / (time.perf_counter() - t0)


def bench_batch(args) -> None:
    """Decoding tokens/s and peak RSS for each batch size, each run in a fresh process, the sizes taken in turn."""
    if args.batch_worker:
        lm = load(args.model, int8=args.precision == "int8")
        prompt = chat_prompt(lm.tokenizer)
        batch_rate(lm.model, prompt, min(args.batch_worker, 2), 4)  # warm-up: compiled kernels, page cache
        rates = [batch_rate(lm.model, prompt, args.batch_worker, args.new_tokens) for _ in range(args.repeats)]
        print(json.dumps({"rates": rates, "peak_rss_gib": peak_rss_gib()}))
        return
    sizes = [int(x) for x in args.batch.split(",")]
    print(f"model: {args.model or 'SmolLM2-135M-Instruct'}, {args.precision}; {args.new_tokens} tokens per sequence "
          f"after a chat prompt; {args.repeats} rounds, each round every batch size in turn, each in a fresh process; "
          f"the ratios are the median of the rounds' ratios (so the machine's drift between rounds does not move them)"
          f"\n{blas_line()}")
    rates, peaks = {b: [] for b in sizes}, {b: 0.0 for b in sizes}
    for i in range(args.repeats):
        for b in sizes:
            print(f"round {i + 1}/{args.repeats}: batch {b}", file=sys.stderr, flush=True)
            r = batch_worker(args.model, args.precision, b, args.new_tokens, 1)
            rates[b] += r["rates"]
            peaks[b] = max(peaks[b], r["peak_rss_gib"])
    base = sizes[0]
    for b in sizes:
        ratio = statistics.median(x / y for x, y in zip(rates[b], rates[base]))
        print(f"batch {b:3d}: {statistics.median(rates[b]):7.1f} tokens/s  ({ratio:4.1f}x batch {base})  "
              f"peak RSS {peaks[b]:.2f} GiB  (runs: {', '.join(f'{x:.1f}' for x in rates[b])})", flush=True)
