"""`python -m nanoagent.quantize --model DIR --out DIR`: write an int8 checkpoint.

Every linear layer and the tied embedding become int8 with float32 scales (one per group of
64 inputs of a row, or one per row with `--group channel`); norms stay float32. The folder
is written atomically and loads with `nanoagent.load(DIR)` or `--model DIR` like any other.
Lesson: lessons/14_int8/README.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .checkpoint import WeightsError, is_int8_folder, quantize_tensors, read_config, save_folder
from .cli import one_line_errors
from .quant import GROUP
from .weights import log, resolve


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def quantize_folder(src: str | Path, dest: str | Path, group: int | None = GROUP) -> Path:
    """A float model folder -> an int8 model folder (written atomically), one tensor in memory at a time."""
    src = Path(src)
    if is_int8_folder(src):
        raise WeightsError(f"{src} is already an int8 folder; quantize the float folder it was made from.")
    config = read_config(src)
    params = quantize_tensors(src, config, group)
    extra = {n: (src / n).read_text() for n in ("tokenizer_config.json", "generation_config.json")
             if (src / n).exists()}
    return save_folder(dest, config, params, src / "tokenizer.json", extra)


def group_arg(text: str) -> int | None:
    """--group: a positive number of inputs per scale, or 'channel' (None: one scale per row)."""
    if text == "channel":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of inputs or 'channel', not {text!r}")
    return int(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.quantize", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a float model folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--out", required=True, type=Path, help="the int8 folder to write")
    ap.add_argument("--group", type=group_arg, default=GROUP,
                    help=f"inputs per scale, or 'channel' for one scale per output row (default {GROUP})")
    args = ap.parse_args(argv)
    with one_line_errors(WeightsError, ValueError, OSError):
        src = resolve(args.model)
        t0 = time.perf_counter()
        out = quantize_folder(src, args.out, args.group)
    log(f"Wrote {out}: {folder_bytes(out) / 1e6:.1f} MB (from {folder_bytes(src) / 1e6:.1f} MB) "
        f"in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
