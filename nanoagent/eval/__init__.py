"""Evaluation: tool-call accuracy (BFCL-style AST match), instruction following (IFEval, and IFBench's constraints
unseen in training), multi-step tool use (GSM8K test with the calculator), perplexity, and a picture of the results.

    python -m nanoagent.eval toolcall --limit 40      # BFCL simple/multiple/parallel/parallel_multiple/irrelevance
    python -m nanoagent.eval ifeval --limit 40        # IFEval strict and loose
    python -m nanoagent.eval ifbench                  # IFBench's checkable prompts, strict and loose, by kind
    python -m nanoagent.eval chain --limit 100        # the agent with the calculator vs no tools, GSM8K test
    python -m nanoagent.eval ppl --data FILE          # perplexity on a text file or a dataset
    python -m nanoagent.eval plot --reports A.json B.json --names A B --out eval.png

Each evaluation takes any object with `chat(messages, tools=None, **generation) -> str`
(a `nanoagent.Model`, or `nanoagent.agent.ScriptedModel` in tests); `--resume` goes on from the replies
an earlier run remembered (cache.py).
Lesson: lessons/15_data_and_eval/README.md.
"""
from ..data.benchmarks import CATEGORIES, bfcl_data_dir
from .bfcl import bfcl_tools, check_call, check_item, normalize_string, run_toolcall
from .cache import CachedReplies
from .chain import final_number, run_chain
from .ifbench import run_ifbench
from .ifeval import CHECKERS, check_instruction, check_prompt, run_ifeval
from .plot import plot_reports
from .ppl import run_ppl

__all__ = ["CATEGORIES", "bfcl_data_dir", "bfcl_tools", "check_call", "check_item", "normalize_string",
           "run_toolcall", "CachedReplies", "final_number", "run_chain", "CHECKERS", "check_instruction",
           "check_prompt", "run_ifeval", "run_ifbench", "plot_reports", "run_ppl"]
