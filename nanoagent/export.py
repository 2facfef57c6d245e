"""Export a model folder to GGUF, the file llama.cpp and Ollama run, as NanoAgent itself ships.

`python -m nanoagent.export --model DIR --gguf OUT.gguf --type f16|q8_0` writes the model
(float or int8 folder) with the metadata llama.cpp reads: the LLaMA hyper-parameters, the
byte-level BPE vocabulary from the folder's tokenizer.json (tokens, token types, merges,
pre-tokenizer 'smollm', special ids), NanoAgent's chat template (tokenizer.CHAT_TEMPLATE, the one
every model folder carries), and every tensor under its GGUF name.
Two conventions differ from HF's:
  - Q and K rows are permuted within each head for llama.cpp's RoPE, which rotates adjacent
    pairs (2i, 2i+1) where HF rotates (i, i + D/2); `weights.unpermute_qk` is the inverse.
  - the LM head is the token embedding (tied): no `output.weight` tensor is written.
Norms stay float32; f16 stores the matrices in float16, q8_0 in llama.cpp's Q8_0 blocks
(32 int8 values and one float16 scale). `weights.convert_gguf` reads the file back.
Lesson: lessons/14_int8/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType
from gguf.quants import quantize as gguf_quantize

from .checkpoint import WeightsError, read_params
from .cli import one_line_errors
from .config import ModelConfig
from .quant import Int8Weight, dequantize
from .tokenizer import CHAT_TEMPLATE
from .weights import GGUF_NAMES, log, resolve

TYPES = ("f32", "f16", "q8_0")



def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's Q/K rows -> llama.cpp's: within each head, row (half, i) moves to (i, half), i < D/2."""
    rows, cols = w.shape
    D = rows // n_heads
    return w.reshape(n_heads, 2, D // 2, cols).swapaxes(1, 2).reshape(rows, cols)  # (H*D, C)


def gguf_name(hf: str) -> str:
    """An HF tensor name -> its GGUF name (the inverse of weights.hf_name)."""
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    kinds = {v: k for k, v in GGUF_NAMES.items()}
    _, _, i, *kind = hf.split(".")  # model.layers.{i}.{kind}.weight
    return f"blk.{i}.{kinds['.'.join(kind[:-1])]}.weight"


# ---- the tokenizer, from tokenizer.json ------------------------------------------------------

def gguf_vocab(folder: Path, config: ModelConfig) -> dict:
    """tokens, token types, merges and special ids as llama.cpp's BPE ('gpt2') tokenizer wants them."""
    tj = json.loads((folder / "tokenizer.json").read_text())
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise WeightsError(f"{folder / 'tokenizer.json'} is not a byte-level BPE tokenizer; GGUF export needs one.")
    vocab = dict(model["vocab"])
    added = {t["id"]: t for t in tj.get("added_tokens", [])}
    for i, t in added.items():
        vocab[t["content"]] = i
    by_id = {i: s for s, i in vocab.items()}
    tokens, types = [], []
    for i in range(config.vocab_size):  # ids the tokenizer lacks are padding rows of the embedding
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        if i not in by_id:
            types.append(TokenType.UNUSED)
        elif i in added:
            types.append(TokenType.CONTROL if added[i]["special"] else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    tok_config = {}
    if (folder / "tokenizer_config.json").exists():
        tok_config = json.loads((folder / "tokenizer_config.json").read_text())

    def special(key: str, default: int) -> int:
        t = tok_config.get(key)
        t = t.get("content") if isinstance(t, dict) else t
        return vocab.get(t, default) if t else default

    return {"tokens": tokens, "types": [int(t) for t in types], "merges": merges,
            "bos": config.bos_token_id, "eos": config.eos_token_id,
            "unk": special("unk_token", vocab.get("<|endoftext|>", 0)), "pad": special("pad_token", config.eos_token_id),
            "chat_template": CHAT_TEMPLATE}  # ours, whatever an older folder holds: llama.cpp renders tools as we do


# ---- writing the file ---------------------------------------------------------------------------

def float_params(folder: Path) -> tuple[ModelConfig, dict]:
    """The folder's parameters as float32 (an int8 folder is dequantized tensor by tensor)."""
    config, params = read_params(folder)
    return config, {k: dequantize(v) if isinstance(v, Int8Weight) else np.asarray(v, np.float32)
                    for k, v in params.items()}


def export_gguf(folder: str | Path, out: str | Path, qtype: str = "q8_0", name: str | None = None) -> Path:
    """A model folder -> a GGUF file (written to a temporary name, renamed into place when complete)."""
    if qtype not in TYPES:
        raise ValueError(f"--type must be one of {', '.join(TYPES)}, got {qtype!r}")
    folder, out = Path(folder), Path(out)
    config, params = float_params(folder)
    vocab = gguf_vocab(folder, config)
    H, KV = config.num_attention_heads, config.num_key_value_heads

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        w = GGUFWriter(str(tmp), "llama")
        w.add_type("model")
        w.add_name(name or folder.resolve().name)
        w.add_file_type({"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16}.get(qtype, LlamaFileType.MOSTLY_Q8_0))
        w.add_quantization_version(2)
        w.add_vocab_size(config.vocab_size)
        w.add_context_length(config.max_position_embeddings)
        w.add_embedding_length(config.hidden_size)
        w.add_feed_forward_length(config.intermediate_size)
        w.add_block_count(config.num_hidden_layers)
        w.add_head_count(H)
        w.add_head_count_kv(KV)
        w.add_rope_dimension_count(config.head_dim)
        w.add_rope_freq_base(config.rope_theta)
        w.add_layer_norm_rms_eps(config.rms_norm_eps)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(vocab["tokens"])
        w.add_token_types(vocab["types"])
        w.add_token_merges(vocab["merges"])
        w.add_bos_token_id(vocab["bos"])
        w.add_eos_token_id(vocab["eos"])
        w.add_unk_token_id(vocab["unk"])
        w.add_pad_token_id(vocab["pad"])
        w.add_add_bos_token(False)  # the chat template writes every special token itself
        w.add_add_space_prefix(False)
        w.add_chat_template(vocab["chat_template"])

        for hf, a in params.items():
            if hf.endswith("q_proj.weight"):
                a = permute_qk(a, H)
            elif hf.endswith("k_proj.weight"):
                a = permute_qk(a, KV)
            if a.ndim == 1 or qtype == "f32":  # norms stay float32
                w.add_tensor(gguf_name(hf), np.ascontiguousarray(a, np.float32))
            elif qtype == "q8_0" and a.shape[1] % 32 == 0:
                w.add_tensor(gguf_name(hf), gguf_quantize(a, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
            else:
                w.add_tensor(gguf_name(hf), a.astype(np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.export",
                                 description="Write a model folder as a GGUF file for llama.cpp and Ollama.")
    ap.add_argument("--model", default=None, help="a model folder, float or int8 (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--gguf", required=True, type=Path, help="the GGUF file to write")
    ap.add_argument("--type", default="q8_0", choices=TYPES, help="how matrices are stored (default q8_0)")
    ap.add_argument("--name", default=None, help="general.name in the file (default: the folder's name)")
    args = ap.parse_args(argv)
    with one_line_errors(WeightsError, ValueError, OSError):
        out = export_gguf(resolve(args.model), args.gguf, args.type, args.name)
    log(f"Wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {args.type}). Run it with llama.cpp "
        f"(llama-cli -m {out}) or Ollama (a Modelfile with `FROM ./{out.name}`).")


if __name__ == "__main__":
    main()
