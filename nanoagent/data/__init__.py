"""Data: one adapter per source into the common chat form, cleaning, and the training mix.

    python -m nanoagent.data build --recipe local --out mix.jsonl
    python -m nanoagent.data build --recipe agent --out mix.jsonl    # the public tool-calling sets + derived families
    python -m nanoagent.train --data mix.jsonl ...

Lesson: lessons/15_data_and_eval/README.md.
"""
from .adapters import ADAPTERS, Drop, sharegpt_to_chat, to_messages
from .derived import Inputs
from .families import FAMILIES, derive
from .clean import ExactDedup, MinHashLSH, jaccard, normalize_text, shorten_casual, vary_tools
from .io import DataError, find_data_dir, read_rows
from .mix import AGENT, LOCAL, NANOAGENT, RECIPES, Options, Source, build, stats_table

__all__ = ["ADAPTERS", "Drop", "sharegpt_to_chat", "to_messages", "FAMILIES", "Inputs", "derive", "ExactDedup",
           "MinHashLSH", "jaccard", "normalize_text", "shorten_casual", "vary_tools", "DataError", "find_data_dir",
           "read_rows", "AGENT", "LOCAL", "NANOAGENT", "RECIPES", "Options", "Source", "build", "stats_table"]
