"""The model's shape: SmolLM2-135M by default, read from and written to HF `config.json`.

Shape legend, used in every docstring and comment of the package:
    B  batch                    T  new tokens in this call      P  past tokens (KV cache)
    C  hidden size (576)        H  query heads (9)              KV key/value heads (3)
    D  head dim (64)            F  MLP width (1536)             V  vocab (49152)
    L  layers (30)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path


SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "num_key_value_heads", "max_position_embeddings")
TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _is(value, kind: str) -> bool:
    """Whether a JSON value fits a field annotated `kind` ('int', 'float' or 'bool'); true is not a number."""
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, (int, float) if kind == "float" else int) and not isinstance(value, bool)


def _show(value) -> str:
    """A JSON value as config.json spells it, cut short."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 49152  # V
    hidden_size: int = 576  # C
    intermediate_size: int = 1536  # F
    num_hidden_layers: int = 30  # L
    num_attention_heads: int = 9  # H
    num_key_value_heads: int = 3  # KV
    max_position_embeddings: int = 8192
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    bos_token_id: int = 1
    eos_token_id: int = 2

    def __post_init__(self):
        for name in SIZES:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("rope_theta", "rms_norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0, not {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of num_key_value_heads {self.num_key_value_heads}")
        if not self.tie_word_embeddings:
            raise ValueError("only tied input/output embeddings are supported (SmolLM2 ties them)")

    @property
    def head_dim(self) -> int:  # D
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def tiny(cls) -> "ModelConfig":
        """The test config: the same shape family in milliseconds (GQA 4 query heads over 2 KV heads)."""
        return cls(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)

    # ---- HF config.json ----
    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """HF config.json's fields -> ModelConfig; a field of the wrong type or value is a ValueError naming it."""
        if not isinstance(d, dict):
            raise ValueError(f"the config must be a JSON object of fields, not {_show(d)}")
        if d.get("model_type", "llama") != "llama":
            raise ValueError(f"model_type {d.get('model_type')!r} is not a LLaMA-style model")
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {d.get('hidden_act')!r} is not supported (SwiGLU needs silu)")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}  # newer HF configs nest theta here
        if not isinstance(rope, dict):
            raise ValueError(f"rope_parameters must be an object, not {_show(rope)}")
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope type {rope['rope_type']!r} is not supported")
        d = {"rope_theta": rope.get("rope_theta", 100000.0), **d}
        kinds = {f.name: f.type for f in fields(cls)}  # 'int', 'float' or 'bool'
        values = {k: v for k, v in d.items() if k in kinds}
        for name, value in values.items():
            if not _is(value, kinds[name]):
                raise ValueError(f"{name} must be {TYPE_WORDS[kinds[name]]}, not {_show(value)}")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
                "head_dim": self.head_dim, "attention_bias": False, "mlp_bias": False,
                "torch_dtype": "float32", "pad_token_id": self.eos_token_id, **asdict(self)}

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's HF name and shape; the tied LM head is the embedding."""
        C, F, D = self.hidden_size, self.intermediate_size, self.head_dim
        H, KV = self.num_attention_heads, self.num_key_value_heads
        shapes = {"model.embed_tokens.weight": (self.vocab_size, C)}
        for i in range(self.num_hidden_layers):
            p = f"model.layers.{i}."
            shapes |= {
                p + "input_layernorm.weight": (C,),
                p + "self_attn.q_proj.weight": (H * D, C),
                p + "self_attn.k_proj.weight": (KV * D, C),
                p + "self_attn.v_proj.weight": (KV * D, C),
                p + "self_attn.o_proj.weight": (C, H * D),
                p + "post_attention_layernorm.weight": (C,),
                p + "mlp.gate_proj.weight": (F, C),
                p + "mlp.up_proj.weight": (F, C),
                p + "mlp.down_proj.weight": (C, F),
            }
        shapes["model.norm.weight"] = (C,)
        return shapes
