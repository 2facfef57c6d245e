"""Evaluation: tool-call accuracy (BFCL-style AST match), instruction following (IFEval), perplexity.

    python -m nanoagent.eval toolcall --limit 40      # BFCL simple/multiple/parallel/parallel_multiple/irrelevance
    python -m nanoagent.eval ifeval --limit 40        # IFEval strict and loose
    python -m nanoagent.eval ppl --data FILE          # perplexity on a text file or a dataset

Each evaluation takes any object with `chat(messages, tools=None, **generation) -> str`
(a `nanoagent.Model`, or `nanoagent.agent.ScriptedModel` in tests).
Lesson: lessons/15_data_and_eval/README.md.
"""
from ..data.benchmarks import CATEGORIES, bfcl_data_dir
from .bfcl import bfcl_tools, check_call, check_item, normalize_string, run_toolcall
from .ifeval import CHECKERS, check_instruction, check_prompt, run_ifeval
from .ppl import run_ppl

__all__ = ["CATEGORIES", "bfcl_data_dir", "bfcl_tools", "check_call", "check_item", "normalize_string",
           "run_toolcall", "CHECKERS", "check_instruction", "check_prompt", "run_ifeval", "run_ppl"]
