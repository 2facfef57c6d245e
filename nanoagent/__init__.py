"""NanoAgent in NumPy: SmolLM2-135M-Instruct inference, training and a tool-calling agent on a CPU.

    import nanoagent
    model = nanoagent.load()                 # SmolLM2-135M-Instruct, obtained on first use
    print(model.chat([{"role": "user", "content": "What is the capital of France?"}]))
"""
from __future__ import annotations

from .agent import Agent, AgentResult, Tool, parse_tool_calls, tool
from .config import ModelConfig
from .model import Model
from .tokenizer import Tokenizer
from .weights import WeightsError

__all__ = ["load", "Model", "ModelConfig", "Tokenizer", "WeightsError",
           "Agent", "AgentResult", "Tool", "parse_tool_calls", "tool"]


def load(path=None, int8: bool = False) -> Model:
    """An HF model folder -> Model with its tokenizer; `None` means SmolLM2-135M-Instruct, obtained on first use.

    int8=True quantizes a float folder's weights to int8 while loading; an int8 folder (written by
    `python -m nanoagent.quantize`) loads as int8 either way.
    """
    from .weights import resolve
    if int8:
        from .quant import load_int8
        return load_int8(resolve(path))
    return Model.from_folder(resolve(path))
