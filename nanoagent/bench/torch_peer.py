"""The PyTorch peer of `python -m nanoagent.bench train --compare-torch`: the same training step in
PyTorch float32, so that the ratio is measured in one command.

Never imported by the package (the project runs without torch): `bench train` runs this file
in a process of its own, under an interpreter that has torch and safetensors, and reads the
JSON line it prints. Two peers:
- "transformers" (the default): transformers' own `LlamaForCausalLM` loaded from the model folder,
  as users fine-tune it (its default attention, `labels=` for the loss);
- "plain": SmolLM2 written plainly in eager PyTorch (a Llama: RMSNorm, rotary positions,
  grouped-query attention through `scaled_dot_product_attention`, SwiGLU, the LM head tied to the
  embedding), for an interpreter without transformers.
The step is ours: batch 1 x seq_len tokens, cross-entropy on every position, backward, global-norm
clipping at 1.0, AdamW (betas 0.9, 0.95).

    python nanoagent/bench/torch_peer.py MODEL_FOLDER SEQ_LEN STEPS THREADS [transformers|plain]
"""
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def rotary(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def forward(p: dict, cfg: dict, ids):
    """ids (1, T) -> logits (1, T, V)."""
    d, heads, kv_heads = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, t = d // heads, cfg["rms_norm_eps"], ids.shape[1]

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    inv = 1.0 / cfg.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    angles = torch.outer(torch.arange(t, dtype=torch.float32), inv).repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()
    x = p["embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        w = {k.removeprefix(f"layers.{i}."): v for k, v in p.items() if k.startswith(f"layers.{i}.")}
        h = norm(x, w["input_layernorm.weight"])
        q = F.linear(h, w["self_attn.q_proj.weight"]).view(1, t, heads, hd).transpose(1, 2)
        k = F.linear(h, w["self_attn.k_proj.weight"]).view(1, t, kv_heads, hd).transpose(1, 2)
        v = F.linear(h, w["self_attn.v_proj.weight"]).view(1, t, kv_heads, hd).transpose(1, 2)
        a = F.scaled_dot_product_attention(rotary(q, cos, sin), rotary(k, cos, sin), v, is_causal=True,
                                           enable_gqa=True)
        x = x + F.linear(a.transpose(1, 2).reshape(1, t, d), w["self_attn.o_proj.weight"])
        h = norm(x, w["post_attention_layernorm.weight"])
        x = x + F.linear(F.silu(F.linear(h, w["mlp.gate_proj.weight"])) * F.linear(h, w["mlp.up_proj.weight"]),
                         w["mlp.down_proj.weight"])
    return F.linear(norm(x, p["norm.weight"]), p["embed_tokens.weight"])


def plain_model(folder: Path):
    """-> (parameters, ids (1, T+1) -> loss, a name) of the plain SmolLM2 above."""
    cfg = json.loads((folder / "config.json").read_text())
    p = {k.removeprefix("model."): torch.nn.Parameter(v.float())
         for k, v in load_file(folder / "model.safetensors").items() if k != "lm_head.weight"}

    def loss(ids):
        return F.cross_entropy(forward(p, cfg, ids[:, :-1])[0], ids[0, 1:])
    return list(p.values()), loss, "a plain SmolLM2, eager"


def transformers_model(folder: Path):
    """-> (parameters, ids (1, T+1) -> loss, a name) of transformers' LlamaForCausalLM on the folder."""
    import transformers
    model = transformers.LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.train()

    def loss(ids):
        return model(input_ids=ids[:, :-1], labels=ids[:, :-1]).loss  # (it shifts the labels itself)
    return (list(model.parameters()), loss,
            f"transformers {transformers.__version__} LlamaForCausalLM, {model.config._attn_implementation} attention")


PEERS = {"transformers": transformers_model, "plain": plain_model}


def measure(folder: Path, seq_len: int, steps: int, threads: int, peer: str = "transformers") -> dict:
    torch.set_num_threads(threads)
    params, loss_of, name = PEERS[peer](folder)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
    ids = torch.randint(100, vocab, (1, seq_len + 1), generator=torch.Generator().manual_seed(0))
    times, cpu = [], []
    for _ in range(steps + 1):  # the first is the warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        loss = loss_of(ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        del loss
    step = statistics.median(times[1:])
    return {"seq_len": seq_len, "tokens_per_s": seq_len / step, "step_s": step, "cpu_s": statistics.median(cpu[1:]),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "times": times,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "peer": name,
            "blas": "MKL" if torch.backends.mkl.is_available() else "its own BLAS"}


if __name__ == "__main__":
    folder, seq_len, steps, threads = sys.argv[1:5]
    print(json.dumps(measure(Path(folder), int(seq_len), int(steps), int(threads), *sys.argv[5:6])))
