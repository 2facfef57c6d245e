"""`python -m nanoagent.bench generate --compare-llamacpp`: our prefill and decode speed beside
llama.cpp's on the same weights, in one command (and `bench train --compare-torch`: a training
step beside PyTorch's, at the end).

The project exports its own weights to GGUF (F32 for float32, Q8_0 for int8) and llama.cpp
(through llama-cpp-python, the optional `bench` extra) runs them on as many threads as we do.
Each figure comes from a process of its own, so that no run inherits another's caches, threads
or memory, and both sides are fed the same token ids and do the same work: a 512-token prefill
whose last position alone gets logits, and greedy decoding of 128 tokens after a chat prompt
("decode") and after the 512-token prompt ("decode-long").
The ratio is ours / llama.cpp's: 1.0 is parity.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .train import seq_lens, train_worker
from ..export import export_gguf
from ..kernels_int8 import kernel_line
from ..threads import blas_line
from ..weights import resolve

BLAS_SETTINGS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # set on some machines for old OpenBLAS builds


def thread_count() -> int:
    """The threads both sides run on: NUMBA_NUM_THREADS if set, else every core (Numba's default)."""
    return int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)


def threads_phrase() -> str:
    n = thread_count()
    return f"{n} thread{'s' if n > 1 else ''}"


def batch_worker(model: str | None, precision: str, batch: int, new_tokens: int, repeats: int) -> dict:
    """`bench generate --batch-worker`: `batch` sequences decoded together in a fresh process ->
    {"rates": tokens/s of each repeat (prefill excluded), "peak_rss_gib"}."""
    cmd = [sys.executable, "-m", "nanoagent.bench", "generate", "--batch-worker", str(batch), "--precision", precision,
           "--new-tokens", str(new_tokens), "--repeats", str(repeats)] + (["--model", model] if model else [])
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def chat_prompt(tok) -> list[int]:
    """The chat prompt every decoding figure starts from."""
    return tok.encode(tok.render_chat([{"role": "user", "content": "Tell me a long story about a robot."}]))


def bench_prompts(tok, prompt_tokens: int) -> tuple[list[int], list[int]]:
    """-> a prompt of ordinary tokens for prefill (seeded), and the chat prompt decoding starts from."""
    return np.random.default_rng(0).integers(100, tok.vocab_size, prompt_tokens).tolist(), chat_prompt(tok)


def llamacpp_rates(gguf: Path, long_prompt, chat, new_tokens: int, repeats: int) -> dict:
    """Prefill and greedy-decode tokens/s of llama.cpp on a GGUF file (the same work as ours)."""
    try:
        from llama_cpp import Llama, llama_get_logits_ith
    except ImportError as e:
        raise OSError("--compare-llamacpp needs llama-cpp-python: pip install 'nanoagent[bench]'") from e
    n = thread_count()
    llm = Llama(model_path=str(gguf), n_ctx=len(long_prompt) + new_tokens + 8, n_batch=512,
                n_ubatch=512, n_threads=n, n_threads_batch=n, logits_all=False, verbose=False)

    def prefill_rate():
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(long_prompt)
        return len(long_prompt) / (time.perf_counter() - t0)

    vocab = llm.n_vocab()

    def decode_rate(prompt):
        llm.reset()
        llm.eval(prompt)
        t0 = time.perf_counter()
        for i in range(new_tokens):  # as generate_ids: pick a token, then run it (all but the last)
            token = int(np.argmax(np.ctypeslib.as_array(llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))))
            if i + 1 < new_tokens:
                llm.eval([token])
        return new_tokens / (time.perf_counter() - t0)

    prefill_rate(), decode_rate(chat)  # warm-up
    return {"prefill": [prefill_rate() for _ in range(repeats)], "decode": [decode_rate(chat) for _ in range(repeats)],
            "decode_long": [decode_rate(long_prompt) for _ in range(repeats)]}


def run_worker(args, extra: list[str], env=None) -> dict:
    """One measurement (after a warm-up) in a fresh process: ours, or llama.cpp's with --llamacpp-worker."""
    cmd = [sys.executable, "-m", "nanoagent.bench", "generate", "--prompt-tokens", str(args.prompt_tokens),
           "--new-tokens", str(args.new_tokens), "--repeats", "1"] + \
        (["--model", args.model] if args.model else []) + extra
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise OSError(f"{' '.join(cmd[3:])} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.splitlines()[-1])


FIGURES = (("prefill", "prefill"), ("decode", "decode"), ("decode_long", "decode-long"))


def paired_rounds(repeats: int, ours: Callable[[], dict], theirs: Callable[[], dict], figure: str
                  ) -> list[tuple[dict, dict]]:
    """`repeats` rounds, each measuring both sides once (each call a fresh process), in turn (who
    goes first alternates): this machine's speed drifts over the minutes a comparison takes, and
    a round's ratio compares two runs made a few seconds apart. `figure` names the result's entry
    the progress line shows."""
    rounds = []
    for r in range(repeats):
        if r % 2:
            b = theirs()
            rounds.append((ours(), b))
        else:
            a = ours()
            rounds.append((a, theirs()))
        shown = [side[figure][0] if isinstance(side[figure], list) else side[figure] for side in rounds[-1]]
        print(f"  round {r + 1} of {repeats}: {figure} {shown[0]:.1f} vs {shown[1]:.1f} tokens/s", file=sys.stderr,
              flush=True)
    return rounds


def compare_llamacpp(args) -> None:
    """Float32 against GGUF F32 and int8 against Q8_0, in paired rounds of fresh processes, and the ratios."""
    folder = resolve(args.model)
    settings = {k: os.environ[k] for k in BLAS_SETTINGS if k in os.environ}
    print(f"model: {args.model or 'SmolLM2-135M-Instruct'}; {threads_phrase()} on both sides; "
          f"prefill of {args.prompt_tokens} tokens, decode of {args.new_tokens} greedy tokens after a chat prompt "
          f"(decode-long: after the {args.prompt_tokens} tokens); "
          f"{args.repeats} rounds, each measuring both sides once in fresh processes; medians, and the ratio the "
          f"median of the rounds' ratios\n{blas_line()}\n{kernel_line()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nanoagent-bench-") as tmp:
        for precision, qtype in (("float32", "f32"), ("int8", "q8_0")):
            print(f"exporting {qtype.upper()} and measuring {precision}", file=sys.stderr, flush=True)
            gguf = export_gguf(folder, Path(tmp) / f"model-{qtype}.gguf", qtype)
            ours, theirs = ["--compare-worker", "--precision", precision], ["--llamacpp-worker", str(gguf)]
            variants = [("", None)]
            if settings:  # the machine's BLAS setting, and the same runs with it removed for this command alone
                variants.append((f", {'/'.join(settings)} unset",
                                 {k: v for k, v in os.environ.items() if k not in BLAS_SETTINGS}))
            for label, env in variants:
                rounds = paired_rounds(args.repeats, lambda: run_worker(args, ours, env),
                                       lambda: run_worker(args, theirs, env), "decode")
                for figure, name in FIGURES:
                    a, b = (statistics.median(side[figure][0] for side in sides) for sides in zip(*rounds))
                    ratio = statistics.median(x[figure][0] / y[figure][0] for x, y in rounds)
                    rows.append((f"{name} {precision}{label}", a, f"{b:.1f} ({qtype.upper()})", ratio,
                                 max(x["peak_rss_gib"] for x, _ in rounds), max(y["peak_rss_gib"] for _, y in rounds)))
            os.unlink(gguf)
    print(f"{'figure':36s} {'ours tok/s':>10s} {'llama.cpp tok/s':>18s} {'ratio':>6s} {'RSS ours':>9s} "
          f"{'RSS l.cpp':>9s}")
    for name, a, b, ratio, rss_a, rss_b in rows:
        print(f"{name:36s} {a:10.1f} {b:>18s} {ratio:6.2f} {rss_a:8.2f}G {rss_b:8.2f}G")
    if settings:
        print(f"(this machine sets {', '.join(f'{k}={v}' for k, v in settings.items())}; "
              f"'unset' rows ran without it)")


# ---- a training step beside PyTorch's -----------------------------------------------------------------

TORCH_PEER = Path(__file__).with_name("torch_peer.py")  # run as a script, never imported: no torch here


def torch_worker(python: str, folder: Path, seq_len: int, steps: int, peer: str = "transformers") -> dict:
    """The same training step in PyTorch, in a fresh process of `python` (an interpreter with torch)."""
    cmd = [python, str(TORCH_PEER), str(folder), str(seq_len), str(steps), str(thread_count()), peer]
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    except OSError as e:
        raise OSError(f"--compare-torch {python}: {e.strerror}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        hint = (f" (pip install torch safetensors{' transformers' if peer == 'transformers' else ''} there, "
                "or --torch-peer plain)") if "ModuleNotFoundError" in last else ""
        raise OSError(f"the PyTorch peer under {python} failed: {last}{hint}")
    return json.loads(done.stdout.splitlines()[-1])


def compare_torch(args) -> None:
    """Our training step against PyTorch's on the same weights, in paired rounds of fresh processes."""
    folder = resolve(args.model)
    settings = {k: os.environ[k] for k in BLAS_SETTINGS if k in os.environ}
    probe = torch_worker(args.compare_torch, folder, 16, 1, args.torch_peer)  # fails early, names the torch build
    print(f"model: {args.model or 'SmolLM2-135M-Instruct'}, float32, full fine-tune, batch 1, loss {args.loss}; "
          f"PyTorch {probe['torch']} ({probe['peer']}, {probe.get('blas', 'its own BLAS')}, "
          f"under {args.compare_torch}); "
          f"{threads_phrase()} on both sides; {args.repeats} rounds, each measuring both sides once in fresh "
          f"processes (median of {args.steps} steps after a warm-up); the ratio is the median of the rounds' "
          f"ratios\n{blas_line()}", flush=True)
    variants = [("", None)]
    if settings:  # the machine's BLAS setting, and our runs with it removed for this command alone
        variants.append((f", {'/'.join(settings)} unset",
                         {k: v for k, v in os.environ.items() if k not in BLAS_SETTINGS}))
    rows = []
    for seq_len in seq_lens(args):
        for label, env in variants:
            rounds = paired_rounds(args.repeats, lambda: train_worker(args, seq_len, env),
                                   lambda: torch_worker(args.compare_torch, folder, seq_len, args.steps,
                                                        args.torch_peer),
                                   "tokens_per_s")
            ours, theirs = ([side["tokens_per_s"] for side in sides] for sides in zip(*rounds))
            rows.append((f"train seq {seq_len}{label}", statistics.median(ours), statistics.median(theirs),
                         statistics.median(a / b for a, b in zip(ours, theirs)),
                         max(x["peak_rss_gib"] for x, _ in rounds), max(y["peak_rss_gib"] for _, y in rounds)))
    print(f"{'figure':36s} {'ours tok/s':>10s} {'PyTorch tok/s':>14s} {'ratio':>6s} {'RSS ours':>9s} {'RSS torch':>9s}")
    for name, a, b, ratio, rss_a, rss_b in rows:
        print(f"{name:36s} {a:10.1f} {b:14.1f} {ratio:6.2f} {rss_a:8.2f}G {rss_b:8.2f}G")
    if settings:
        print(f"(this machine sets {', '.join(f'{k}={v}' for k, v in settings.items())}; "
              f"'unset' rows ran ours without it)")
