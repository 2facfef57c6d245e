"""int8 weights: quantize, multiply, save, load, and measure what it costs.

Every linear layer and the tied embedding/LM head become an `Int8Weight`: int8 values q
(Cout,Cin) and scales (Cout,G), one per group of `group` = Cin/G consecutive inputs of a row
(float16 values, held as float32), so w ~ q * scale with |w - q*scale| <= scale/2. Norms
stay float32. An `Int8Weight` sits in the params dict where the float array was;
`layers.linear_forward` and `layers.embedding_forward` dispatch on it, so the model code
is the same for both.

A matmul of a few rows (decoding) quantizes its input on the fly to int16 over the same
groups and sums each group's products exactly in int32 (kernels.matmul_int8): no float copy
of a weight matrix is ever made. Many rows at once (a prompt) go through BLAS instead, one
block of weight rows dequantized into a small buffer at a time: the same weights, and the
same function but for the int16 rounding of the input (about 1e-5 of its size).

On disk: `model.safetensors` holds `NAME` (int8) and `NAME_scale` (float16) for each
quantized tensor, and config.json says so under "quantization".
Lesson: lessons/14_int8/README.md.   Command line: `python -m nanoagent.quantize --help`.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import kernels
from .config import ModelConfig

GROUP = 32  # inputs per scale: the default, measured against 64 and one per row (lesson 14)
WEIGHT_LIMIT = 127  # int8 values in [-127, 127]: symmetric, so 0 is exact and -w is -q
BLAS_ROWS = 8  # from this many input rows on, a matmul goes through BLAS block by block
BLOCK_FLOATS = 1 << 20  # the float32 buffer of one block of weight rows: 4 MiB (a layer's matrix)
SCALE_SUFFIX = "_scale"


class Int8Weight(NamedTuple):
    """A weight matrix in int8: w[o, i] ~ q[o, i] * scale[o, i // group]."""
    q: np.ndarray  # (Cout, Cin) int8
    scale: np.ndarray  # (Cout, G) float32, G = Cin // group

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape

    @property
    def group(self) -> int:
        return self.q.shape[1] // self.scale.shape[1]

    @property
    def dtype(self):  # the float type it computes in
        return self.scale.dtype

    @property
    def size(self) -> int:  # parameters, as for an array
        return self.q.size

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.scale.nbytes


# ---- quantizing and back ---------------------------------------------------------------

def quantize(w, group: int | None = GROUP) -> Int8Weight:
    """w (Cout,Cin) float -> Int8Weight; group=None gives one scale per output channel (row).

    Each scale is max|w| / 127 over its group, rounded to float16 (as stored on disk and in
    llama.cpp's Q8_0); the weights are rounded onto that scale, so |w - q*s| <= s/2 still holds.
    """
    gs = w.shape[1] if group is None else group
    if w.ndim != 2 or w.shape[1] % gs:
        raise ValueError(f"cannot quantize a {w.shape} tensor in groups of {gs} inputs")
    _, scale = kernels.quantize_rows(w, gs, WEIGHT_LIMIT, np.int8)  # (Cout,G) max|w| / 127
    scale = scale.astype(np.float16).astype(np.float32)
    return Int8Weight(kernels.round_rows(w, scale, WEIGHT_LIMIT, np.int8), scale)


def dequantize(w: Int8Weight) -> np.ndarray:
    """Int8Weight -> (Cout,Cin) float32 (for tests and lessons; the model never needs it whole)."""
    return kernels.dequantize_rows(w.q, w.scale)


def activation_limit(gs: int) -> int:
    """The int16 range for activations summed in groups of gs: gs * 127 * limit must stay below 2^31."""
    return int(kernels.int16_limit(gs))


def group_for(cin: int, group: int | None = GROUP) -> int | None:
    """The largest group size <= `group` that divides a row of cin inputs (None: the whole row)."""
    return None if group is None else max(g for g in range(1, min(group, cin) + 1) if cin % g == 0)


def quantize_params(params: dict, group: int | None = GROUP) -> dict:
    """Every 2-D tensor (linear layers, the embedding) -> Int8Weight; norms stay as they are."""
    return {k: quantize(v, group_for(v.shape[1], group)) if getattr(v, "ndim", 0) == 2 else v
            for k, v in params.items()}


# ---- the two ways int8 weights are used --------------------------------------------------

def linear(x, w: Int8Weight) -> np.ndarray:
    """x (N,Cin) float -> x @ w.T (N,Cout) float32, without a float copy of w."""
    if x.shape[0] < BLAS_ROWS:  # few rows: bound by reading the weights, so read them as int8
        xq, sx = kernels.quantize_rows(x, w.group, activation_limit(w.group), np.int16)  # (N,Cin), (N,G)
        return kernels.matmul_int8(xq, sx, w.q, w.scale)
    # many rows: bound by arithmetic, so BLAS on one dequantized block of weight rows at a time
    # (on the float input itself: the kernel's int16 rounding of it is ~1e-5 of its size)
    Cout, Cin = w.shape
    rows = max(1, BLOCK_FLOATS // Cin)
    buf = np.empty((min(rows, Cout), Cin), np.float32)
    out = np.empty((x.shape[0], Cout), np.float32)
    for r0 in range(0, Cout, rows):
        r1 = min(r0 + rows, Cout)
        wb = kernels.dequantize_rows(w.q[r0:r1], w.scale[r0:r1], buf[:r1 - r0])  # (R,Cin)
        out[:, r0:r1] = x @ wb.T  # (N,Cin) @ (Cin,R)
    return out


def embedding(ids, w: Int8Weight) -> np.ndarray:
    """ids (...) int -> rows (...,C) float32: only the looked-up rows are dequantized."""
    flat = np.asarray(ids).reshape(-1)
    return kernels.dequantize_rows(w.q[flat], w.scale[flat]).reshape(*np.shape(ids), w.shape[1])


# ---- int8 checkpoints ----------------------------------------------------------------------

def quantization_entry(params: dict) -> dict:
    """What config.json says about an int8 checkpoint."""
    per_row = all(w.scale.shape[1] == 1 for w in params.values() if isinstance(w, Int8Weight))
    groups = {w.group for w in params.values() if isinstance(w, Int8Weight)}
    return {"method": "nanoagent-int8", "bits": 8, "symmetric": True,
            "group_size": "channel" if per_row else groups.pop() if len(groups) == 1 else None,
            "scales": "float16, one per group of group_size inputs of each row (NAME_scale)",
            "activations": "int16, quantized per group while computing", "norms": "float32"}


def is_int8_folder(folder: str | Path) -> bool:
    try:
        return "quantization" in json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False


def save_int8(dest: str | Path, config: ModelConfig, params: dict, tokenizer_json: str | Path,
              extra_files: dict[str, str] | None = None) -> Path:
    """Write an int8 checkpoint folder atomically: config.json (with "quantization"),
    model.safetensors (NAME int8 + NAME_scale float32, norms float32), tokenizer.json."""
    from safetensors.numpy import save_file
    from .weights import atomic_dir
    tensors = {}
    for name, w in params.items():
        if isinstance(w, Int8Weight):
            tensors[name], tensors[name + SCALE_SUFFIX] = w.q, w.scale.astype(np.float16)  # exact: see quantize
        else:
            tensors[name] = np.asarray(w, dtype=np.float32)
    with atomic_dir(Path(dest)) as tmp:
        cfg = {**config.to_dict(), "quantization": quantization_entry(params)}
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "nanoagent-int8"})
        shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return Path(dest)


def read_int8_params(folder: str | Path, config: ModelConfig) -> dict:
    """An int8 checkpoint's tensors, memory-mapped (no copy), checked against the config."""
    from .weights import WeightsError, read_safetensors
    path = Path(folder) / "model.safetensors"
    raw = read_safetensors(path, copied=lambda name: name.endswith(SCALE_SUFFIX))  # float16, widened below
    fix = "Write it again with `python -m nanoagent.quantize`."
    params = {}
    for name, shape in config.param_shapes().items():
        if name not in raw:
            raise WeightsError(f"{path} has no tensor {name}: it does not match its config.json. {fix}")
        a, scale = raw[name], raw.get(name + SCALE_SUFFIX)
        if a.shape != shape:
            raise WeightsError(f"{path}: tensor {name} has shape {a.shape}, config.json says {shape}. {fix}")
        if scale is None:
            params[name] = a if a.dtype == np.float32 else a.astype(np.float32)
        elif a.dtype != np.int8 or scale.ndim != 2 or scale.shape[0] != shape[0] or \
                scale.shape[1] == 0 or shape[1] % scale.shape[1]:
            raise WeightsError(f"{path}: {name} ({a.dtype}) and its scale {scale.shape} are not an int8 "
                               f"weight of shape {shape} with one scale per group of inputs. {fix}")
        else:
            params[name] = Int8Weight(a, scale if scale.dtype == np.float32 else scale.astype(np.float32))
    return params


def float_tensors(folder: str | Path):
    """Yield (name, float32 array) from a float checkpoint one tensor at a time, each read into
    memory of its own (no memory map), so quantizing never holds the whole float model."""
    from .weights import _ST_DTYPES, WeightsError, bf16_to_f32
    path = Path(folder) / "model.safetensors"
    fix = f"Delete {path.parent} and obtain it again."
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                begin, end = info["data_offsets"]
                dtype = _ST_DTYPES[info["dtype"]]
                f.seek(8 + n + begin)
                a = np.fromfile(f, dtype=dtype, count=(end - begin) // np.dtype(dtype).itemsize)
                if a.nbytes != end - begin:
                    raise ValueError(f"tensor {name} runs past the end of the file")
                a = bf16_to_f32(a) if info["dtype"] == "BF16" else a.astype(np.float32, copy=False)
                yield name, a.reshape(info["shape"])
    except (OSError, ValueError, KeyError) as e:
        raise WeightsError(f"{path} is not a readable float safetensors file ({e}). {fix}") from e


def quantize_checkpoint(folder: str | Path, group: int | None = GROUP) -> tuple[ModelConfig, dict]:
    """A float checkpoint folder -> (config, int8 params), reading one float tensor at a time."""
    from .weights import WeightsError, check_params
    folder = Path(folder)
    config = ModelConfig.from_json(folder / "config.json")
    shapes = config.param_shapes()
    params = {}
    for name, a in float_tensors(folder):
        if name in shapes and a.shape != shapes[name]:
            raise WeightsError(f"{folder / 'model.safetensors'}: tensor {name} has shape {a.shape}, "
                               f"config.json says {shapes[name]}.")
        if name in shapes:
            params[name] = quantize(a, group_for(a.shape[1], group)) if a.ndim == 2 else a
    check_params({k: v for k, v in params.items() if not isinstance(v, Int8Weight)} |
                 {k: np.empty(v.shape, np.float32) for k, v in params.items() if isinstance(v, Int8Weight)},
                 config, folder / "model.safetensors")
    return config, params


def load_int8(folder: str | Path, group: int | None = GROUP):
    """An int8 folder as it is, or a float folder quantized while it loads -> Model."""
    from .model import Model
    from .tokenizer import Tokenizer
    folder = Path(folder)
    if is_int8_folder(folder):
        return Model.from_folder(folder)
    config, params = quantize_checkpoint(folder, group)
    tok = Tokenizer.from_file(folder / "tokenizer.json") if (folder / "tokenizer.json").exists() else None
    return Model(config, params, tok)


def quantize_folder(src: str | Path, dest: str | Path, group: int | None = GROUP) -> Path:
    """A float checkpoint folder -> an int8 checkpoint folder (written atomically)."""
    src = Path(src)
    config, params = quantize_checkpoint(src, group)
    extra = {n: (src / n).read_text() for n in ("tokenizer_config.json", "generation_config.json")
             if (src / n).exists()}
    return save_int8(dest, config, params, src / "tokenizer.json", extra)


# ---- what int8 costs: perplexity and greedy agreement --------------------------------------

def perplexity(model, ids, window: int = 512) -> float:
    """exp(mean negative log-likelihood) of ids, read in windows of `window` tokens (each window
    predicts its own tokens 1..; the first token of each window is context only)."""
    ids = np.asarray(ids)
    nll, count = 0.0, 0
    for s in range(0, len(ids) - 1, window):
        chunk = ids[s:s + window]
        if len(chunk) < 2:
            break
        logits = model.logits(chunk).astype(np.float64)  # (T,V)
        m = logits.max(axis=-1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))  # stable log-softmax
        nll -= logp[np.arange(len(chunk) - 1), chunk[1:]].sum()
        count += len(chunk) - 1
    return math.exp(nll / count)


CHECK_PROMPTS = [  # the fixed chat prompts greedy agreement is measured on
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "What is 17 times 23?",
    "Give me three tips for a job interview.",
    "Translate 'good morning' into Spanish.",
    "What is the difference between a list and a tuple in Python?",
    "Summarize the story of Cinderella in one paragraph.",
    "Name five fruits that are red.",
    "How do I boil an egg?",
    "Write a Python function that reverses a string.",
    "Why is the sky blue?",
    "What causes the seasons on Earth?",
    "Suggest a name for a pet turtle.",
    "What is a prime number? Give an example.",
    "Write a short email declining a meeting invitation.",
    "List the planets of the solar system in order.",
    "What are the benefits of regular exercise?",
    "Tell me a fun fact about octopuses.",
    "How many minutes are there in a day? Show your work.",
]


def greedy_replies(model, prompts, n_tokens: int) -> list[list[int]]:
    """The first n_tokens greedy ids of the reply to each prompt (not stopped at the end of a turn)."""
    from .generate import generate_ids
    tok = model.tokenizer
    return [list(generate_ids(model, tok.encode(tok.render_chat([{"role": "user", "content": p}])),
                              n_tokens, stop_ids=())) for p in prompts]


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean over replies of the fraction of positions where the two replies have the same token."""
    return float(np.mean([np.mean(np.array(x) == np.array(y)) for x, y in zip(a, b)]))


def forced_agreement(model, other, prompts, replies: list[list[int]]) -> float:
    """The share of reply positions where `other` picks the same top token as `model`, both
    reading the same text (each prompt followed by `model`'s own greedy reply). Unlike
    `agreement`, one flipped near-tie does not carry the rest of a reply away with it."""
    tok = model.tokenizer
    same = []
    for p, reply in zip(prompts, replies):
        ids = tok.encode(tok.render_chat([{"role": "user", "content": p}]))
        text = np.array(ids + list(reply))
        at = slice(len(ids) - 1, len(text) - 1)  # the positions that predict the reply's tokens
        same.append(model.logits(text)[at].argmax(-1) == other.logits(text)[at].argmax(-1))
    return float(np.mean(np.concatenate(same)))
