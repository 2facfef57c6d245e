"""Training speed and memory: `python -m nanoagent.bench train` (or `python -m nanoagent.bench.train`).

A full fine-tune step of batch 1 x seq_len tokens (forward, loss through the tied LM head on
every position, backward, global-norm clipping, AdamW) on SmolLM2-135M in float32. Each
sequence length runs in its own process, so each peak resident memory (ru_maxrss) is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from ..data.batch import Example, collate
from ..optim import adamw_init
from ..threads import blas_line
from ..train import load_model, model_folder, train_step


def add_train_args(ap: argparse.ArgumentParser) -> None:
    """The options of the `train` benchmark (for `python -m nanoagent.bench train`)."""
    ap.add_argument("--model", default=None, help="model folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--seq-lens", default="512,1024", help="comma-separated sequence lengths, one process each")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per length, after one warm-up step")
    ap.add_argument("--loss", choices=("sft", "dft"), default="sft")


def measure(model_dir, seq_len: int, steps: int, loss: str) -> dict:
    """In this process: tokens/s of full training steps at batch 1 x seq_len, and the peak RSS."""
    model = load_model(model_folder(model_dir))
    state = adamw_init(model.params)
    rng = np.random.default_rng(0)
    ids = rng.integers(100, model.config.vocab_size, seq_len + 1)
    batch = collate([Example(ids, np.ones(seq_len + 1, dtype=bool))], pad_id=2)
    times, cpu = [], []
    for _ in range(steps + 1):  # the first is the warm-up (kernels compile, pages fault in)
        t0, c0 = time.perf_counter(), time.process_time()
        train_step(model, [batch], state, lr=1e-5, kind=loss)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2 ** 30  # KiB on Linux
    step = statistics.median(times[1:])
    return {"seq_len": seq_len, "tokens_per_s": seq_len / step, "step_s": step, "peak_rss_gib": peak,
            "cpu_s": statistics.median(cpu[1:]), "times": times}


def busy_cores(seconds: float = 1.0) -> tuple[float, str]:
    """How many cores other work keeps busy now: measured over `seconds` from /proc/stat where there
    is one (the load average lags by a minute, so it still counts a benchmark that just ended),
    else the load average."""
    def ticks():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait
    try:
        total0, idle0 = ticks()
        time.sleep(seconds)
        total1, idle1 = ticks()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0], "load average"
    share = 1 - (idle1 - idle0) / max(1, total1 - total0)
    return share * (os.cpu_count() or 1), "cores in use over the last second:"


def bench_train(args) -> None:
    """Print training tokens/s and peak RSS for each sequence length, each measured in a fresh process."""
    print(f"model: {args.model or 'SmolLM2-135M-Instruct'}, float32, full fine-tune, batch 1, loss {args.loss}, "
          f"median of {args.steps} steps after a warm-up")
    busy, what = busy_cores()
    if busy > 0.5 * (os.cpu_count() or 1):
        print(f"note: the machine is busy ({what} {busy:.1f} on {os.cpu_count()} cores); "
              "these figures are lower than on an idle machine")
    print(blas_line())
    for seq_len in seq_lens(args):
        try:
            r = train_worker(args, seq_len)
        except OSError as e:
            print(f"seq {seq_len}: {e}", file=sys.stderr)
            continue
        print(f"train seq {seq_len:5d}: {r['tokens_per_s']:7.1f} tokens/s  ({r['step_s']:.2f} s/step: "
              f"forward + loss + backward + AdamW, {r['cpu_s']:.1f} CPU s)  peak RSS {r['peak_rss_gib']:.2f} GiB")


def seq_lens(args) -> list[int]:
    return [int(s) for s in str(args.seq_lens).split(",")]


def train_worker(args, seq_len: int, env=None) -> dict:
    """`measure` in a fresh process (its own peak RSS, nothing inherited) -> its figures."""
    cmd = [sys.executable, "-m", "nanoagent.bench.train", "--worker", "--seq-lens", str(seq_len),
           "--steps", str(args.steps), "--loss", args.loss] + (["--model", str(args.model)] if args.model else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise OSError(f"the training step failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.bench.train", description=__doc__.splitlines()[0])
    add_train_args(ap)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.model, int(args.seq_lens), args.steps, args.loss)))
    else:
        bench_train(args)


if __name__ == "__main__":
    main()
