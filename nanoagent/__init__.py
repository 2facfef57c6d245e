"""NanoAgent in NumPy: SmolLM2-135M-Instruct inference, training and a tool-calling agent on a CPU.

    import nanoagent
    model = nanoagent.load()                 # SmolLM2-135M-Instruct, obtained on first use
    print(model.chat([{"role": "user", "content": "What is the capital of France?"}]))

The names below are read from their modules on first use (PEP 562), so that importing the
package imports nothing else, and `python -m nanoagent.generate` (or any other command)
runs its module once rather than beside a copy the package already imported.
"""
from __future__ import annotations

import importlib

_HOMES = {"load": "generate", "ChatModel": "generate", "Model": "model", "ModelConfig": "config",
          "Tokenizer": "tokenizer", "WeightsError": "checkpoint", "parse_tool_calls": "toolcalls",
          "Agent": "agent", "AgentResult": "agent", "Tool": "agent", "tool": "agent"}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'nanoagent' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
