"""`python -m nanoagent.quantize --model DIR --out DIR`: write an int8 checkpoint.

Every linear layer and the tied embedding become int8 with float32 scales (one per group of
64 inputs of a row, or one per row with `--group channel`); norms stay float32. The folder
is written atomically and loads with `nanoagent.load(DIR)` or `--model DIR` like any other.
Lesson: lessons/14_int8/README.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .quant import GROUP, quantize_folder
from .weights import WeightsError, log, resolve


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.quantize", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a float model folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--out", required=True, type=Path, help="the int8 folder to write")
    ap.add_argument("--group", default=str(GROUP),
                    help=f"inputs per scale, or 'channel' for one scale per output row (default {GROUP})")
    args = ap.parse_args(argv)
    try:
        group = None if args.group == "channel" else int(args.group)
        src = resolve(args.model)
        t0 = time.perf_counter()
        out = quantize_folder(src, args.out, group)
    except (WeightsError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    log(f"Wrote {out}: {folder_bytes(out) / 1e6:.1f} MB (from {folder_bytes(src) / 1e6:.1f} MB) "
        f"in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
