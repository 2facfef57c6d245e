"""The derived families by name (derived.py, chains.py, own_tools.py, recovery.py), each with its own random stream."""
from __future__ import annotations

from functools import partial

import numpy as np

from .chains import calc_ask, calc_chain, parallel_calc
from .derived import (Inputs, ask_missing, decline, decline_specs, near_miss, near_miss_specs, nocall_chat, nocall_math,
                      parallel_mixed, parallel_mixed_specs, parallel_same, parallel_values, parallel_values_specs,
                      several_args, several_args_specs)
from .own_tools import own_tools
from .recovery import recovery

WHY_NOT_MADE = {  # why a derived candidate was not made, for the stats table
    "unreadable step": "a GSM8K step that is not plain arithmetic",
    "step disagrees": "a GSM8K step whose computed value differs from the `=N` it states",
    "no steps": "a GSM8K solution without `<<...>>` steps",
    "last step is not the answer": "a GSM8K solution whose last step is not its `#### N`",
    "no final answer": "a GSM8K `#### N` that is not a number",
    "too many steps": "a GSM8K solution of more calculator steps than a chain holds",
    "no short answer": "a GSM8K solution too long for a short worked answer",
    "no unrelated tool": "no offered tool could be found that does not fit the question",
    "no other value": "an argument for which no other value could be found",
}

FAMILIES = {"parallel-same": parallel_same, "parallel-mixed": parallel_mixed, "parallel-values": parallel_values,
            "several-args": several_args, "parallel-calc": parallel_calc,
            "nocall-math": nocall_math, "decline": decline, "near-miss": near_miss,
            "decline-specs": decline_specs, "near-miss-specs": near_miss_specs,
            "parallel-values-specs": parallel_values_specs,
            "parallel-mixed-specs": parallel_mixed_specs, "several-args-specs": several_args_specs,
            "nocall-chat": nocall_chat, "ask-missing": ask_missing, "calc-chain": calc_chain, "own-tools": own_tools,
            "own-tools-24h": partial(own_tools, hours=24), "calc-ask": calc_ask, "recovery": recovery}


def family_rng(seed: int, family: str) -> np.random.Generator:
    """Each family's own stream, so adding or resizing one family leaves the others' rows unchanged."""
    return np.random.default_rng([seed, sum(ord(c) * 31 ** i for i, c in enumerate(family)) % (2 ** 32)])


def derive(family: str, inputs: Inputs, n: int, seed: int = 0):
    """Up to n rows of one family (chats in the common form, or `Drop`s for candidates that failed)."""
    if family not in FAMILIES:
        raise KeyError(f"unknown derived family {family!r}; choose from {', '.join(FAMILIES)}")
    return FAMILIES[family](inputs, n, family_rng(seed, family))
