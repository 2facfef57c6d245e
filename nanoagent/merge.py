"""`python -m nanoagent.merge --models A B --weights 0.7 0.3 --out DIR`: merge fine-tunes into one HF folder.

A merge mixes models of the same architecture tensor by tensor, with no training:
    linear  θ = Σ_i w_i θ_i                        (the weights are scaled to sum to 1)
    slerp   two models: θ_A and θ_B interpolated along the great circle between them, t = w_B / (w_A + w_B);
            per tensor, with the angle Ω between the flattened tensors,
                θ = sin((1-t)Ω)/sin Ω · θ_A + sin(tΩ)/sin Ω · θ_B
            and the linear mix where the two are nearly parallel (sin Ω ~ 0) or one is zero
    ties    TIES-merging (Yadav et al., 2023) of fine-tunes of one --base: the task vectors τ_i = θ_i - θ_base,
            each trimmed to its `density` share of largest magnitudes; per entry the sign with the larger
            weighted mass is elected, γ = sign(Σ_i w_i τ̂_i); the disjoint mean averages only the τ̂_i that
            agree with it, τ = Σ_agree w_i τ̂_i / Σ_agree w_i; and θ = θ_base + τ
The use here: trade a fine-tune's tool skill against the base model's general skill, e.g.
    python -m nanoagent.merge --models runs/agent-sft weights/SmolLM2-135M-Instruct --weights 0.7 0.3 --out runs/merged
Float folders only (an int8 folder holds rounded weights: merge the float ones it was made from). The first
model's tokenizer (tokenizer.json, tokenizer_config.json, generation_config.json) goes with the result, and a
merge.json records how it was made. The folder is written atomically: bad input leaves nothing behind.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .checkpoint import WeightsError, is_int8_folder, read_params, save_folder
from .cli import one_line_errors
from .config import ModelConfig
from .weights import log, resolve

METHODS = ("linear", "slerp", "ties")
PARALLEL = 0.9995  # |cos Ω| above this: the tensors are nearly parallel and slerp falls back to the linear mix


# ---- the math, one tensor at a time (float64 inside, the inputs' dtype out) ----------------------

def linear(tensors: list[np.ndarray], weights) -> np.ndarray:
    """M tensors of one shape, weights (M,) summing to 1 -> Σ_i w_i θ_i."""
    out = np.zeros(tensors[0].shape, np.float64)
    for w, x in zip(weights, tensors):
        out += w * x.astype(np.float64)
    return out.astype(tensors[0].dtype)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """a, b of one shape, t in [0, 1] -> the spherical interpolation from a (t=0) to b (t=1).

    The angle is that of the flattened tensors; the coefficients apply to a and b as they are,
    so equal norms stay equal (|slerp| = |a| for |a| = |b|), where the linear mix shrinks it by cos(Ω/2).
    """
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    cos = float(a64 @ b64 / (na * nb)) if na > 0 and nb > 0 else 1.0
    if abs(cos) > PARALLEL:  # sin Ω ~ 0: the formula divides by almost nothing; the lines nearly coincide
        return linear([a, b], (1 - t, t))
    omega = math.acos(min(1.0, max(-1.0, cos)))
    s = math.sin(omega)
    out = (math.sin((1 - t) * omega) / s) * a64 + (math.sin(t * omega) / s) * b64
    return out.reshape(a.shape).astype(a.dtype)


def trim(tau: np.ndarray, density: float) -> np.ndarray:
    """A task vector -> a copy keeping its ceil(density·n) largest-magnitude entries, the rest zero."""
    n = tau.size
    k = math.ceil(density * n)
    if k >= n:
        return tau.copy()
    flat = tau.ravel()
    keep = np.argpartition(np.abs(flat), n - k)[n - k:]  # exactly k entries, ties broken arbitrarily
    out = np.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(tau.shape)


def ties(base: np.ndarray, tensors: list[np.ndarray], weights, density: float) -> np.ndarray:
    """θ_base and M fine-tuned tensors of one shape, weights (M,), density in (0, 1] -> the TIES merge."""
    b64 = base.astype(np.float64)
    taus = [trim(x.astype(np.float64) - b64, density) for x in tensors]  # trimmed task vectors τ̂_i
    elected = np.sign(sum(w * tau for w, tau in zip(weights, taus)))  # γ: the sign of the larger weighted mass
    total, mass = np.zeros_like(b64), np.zeros_like(b64)
    for w, tau in zip(weights, taus):
        agree = (np.sign(tau) == elected) & (tau != 0)  # the disjoint set: only entries that agree with γ
        total += np.where(agree, w * tau, 0.0)
        mass += np.where(agree, w, 0.0)
    merged = np.divide(total, mass, out=np.zeros_like(total), where=mass > 0)
    return (b64 + merged).astype(base.dtype)


# ---- whole models ----------------------------------------------------------------------------------

def normalized(weights) -> np.ndarray:
    """Weights -> the same scaled to sum to 1; ValueError unless all are >= 0 with a positive sum."""
    w = np.asarray(weights, np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"--weights must be numbers >= 0 with a positive sum, not {' '.join(map(str, weights))}")
    return w / w.sum()


def merge_params(models: list[dict], method: str, weights, base: dict | None = None, density: float = 0.2,
                 progress: bool = True) -> dict:
    """M params dicts of one architecture -> the merged params dict, one tensor at a time (see the module doc)."""
    w = normalized(weights)
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose from {', '.join(METHODS)}")
    if method == "slerp" and len(models) != 2:
        raise ValueError(f"slerp merges exactly two models, not {len(models)}")
    if method == "ties" and base is None:
        raise ValueError("ties needs the base model the fine-tunes started from (--base)")
    if method == "ties" and not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], not {density}")
    out = {}
    for name in tqdm(list(models[0]), desc=f"merge ({method})", unit="tensor", disable=not progress,
                     file=sys.stderr):
        xs = [m[name] for m in models]
        if method == "linear":
            out[name] = linear(xs, w)
        elif method == "slerp":
            out[name] = slerp(xs[0], xs[1], float(w[1]))
        else:
            out[name] = ties(base[name], xs, w, density)
    return out


def config_difference(a: ModelConfig, b: ModelConfig) -> str:
    """The fields two configs disagree on, as `name x vs y, ...`."""
    return ", ".join(f"{f.name} {getattr(a, f.name)} vs {getattr(b, f.name)}" for f in fields(ModelConfig)
                     if getattr(a, f.name) != getattr(b, f.name))


def read_float_folder(folder: str | Path) -> tuple[Path, ModelConfig, dict]:
    """A model folder -> (its path, config, float32 params), memory-mapped; WeightsError for an int8 one."""
    path = resolve(folder)
    if is_int8_folder(path):
        raise WeightsError(f"{path} is an int8 folder: its weights are rounded, so merge the float folders "
                           "it was made from")
    return (path, *read_params(path, np.float32))


def merge_folders(models: list, out: str | Path, method: str = "linear", weights=None, base=None,
                  density: float = 0.2, progress: bool = True) -> Path:
    """Model folders -> the merged model folder `out`, written atomically; everything is checked first."""
    weights = [1.0] * len(models) if weights is None else list(weights)
    if len(weights) != len(models):
        raise ValueError(f"{len(weights)} weights for {len(models)} models: give one weight per model")
    read = [read_float_folder(m) for m in models]
    base_read = read_float_folder(base) if base is not None else None
    first_path, config, _ = read[0]
    for path, cfg, _ in read[1:] + ([base_read] if base_read else []):
        if cfg != config:
            raise WeightsError(f"{path} does not have the architecture of {first_path} "
                               f"({config_difference(config, cfg)}): only models of one shape merge")
    out = Path(out)
    if any(out.resolve() == p.resolve() for p, _, _ in read + ([base_read] if base_read else [])):
        raise ValueError(f"--out {out} is one of the models being merged; write the merge to a new folder")
    tokenizer = first_path / "tokenizer.json"
    for path, _, _ in read[1:]:
        if (path / "tokenizer.json").read_bytes() != tokenizer.read_bytes():
            log(f"note: {path}'s tokenizer.json differs from {first_path}'s; the merge carries {first_path}'s")
    if progress:
        log(f"Merging {len(models)} models ({method}) into {out}")
    params = merge_params([p for _, _, p in read], method, weights, base_read[2] if base_read else None, density,
                          progress)
    record = {"method": method, "models": [str(m) for m in models], "weights": [float(w) for w in weights],
              "base": str(base) if base is not None else None, "density": density if method == "ties" else None}
    return save_folder(out, config, params, tokenizer, {"merge.json": json.dumps(record, indent=2) + "\n"})


# ---- command line ----------------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (the flag and what is wrong), status 2, as the other commands answer them."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def density_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {text}")
    return value


def weight_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def parse_args(argv=None):
    ap = OneLineParser(prog="python -m nanoagent.merge", description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True, metavar="DIR", help="float model folders of one architecture")
    ap.add_argument("--weights", nargs="+", type=weight_arg, default=None, metavar="W",
                    help="one weight >= 0 per model, scaled to sum to 1 (default: equal); "
                         "slerp's t is the second's share")
    ap.add_argument("--method", choices=METHODS, default="linear", help="linear (default), slerp (two models) or ties")
    ap.add_argument("--base", default=None, metavar="DIR", help="ties: the model the fine-tunes started from")
    ap.add_argument("--density", type=density_arg, default=0.2,
                    help="ties: the share of each task vector's largest entries kept, in (0, 1] (default 0.2)")
    ap.add_argument("--out", required=True, type=Path, metavar="DIR", help="the merged model folder to write")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.weights is not None and len(args.weights) != len(args.models):
        ap.error(f"--weights: {len(args.weights)} weights for {len(args.models)} models; give one per model")
    if args.weights is not None and sum(args.weights) <= 0:
        ap.error("--weights: at least one weight must be above 0")
    if args.method == "slerp" and len(args.models) != 2:
        ap.error(f"--method slerp merges exactly two models, not {len(args.models)}")
    if args.method == "ties" and args.base is None:
        ap.error("--method ties needs --base, the model the fine-tunes started from")
    if args.method != "ties" and args.base is not None:
        ap.error(f"--base is for --method ties; {args.method} does not use it")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    with one_line_errors(WeightsError, ValueError, OSError):
        t0 = time.perf_counter()
        out = merge_folders(args.models, args.out, args.method, args.weights, args.base, args.density,
                            progress=not args.quiet)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    log(f"Wrote {out}: {size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
