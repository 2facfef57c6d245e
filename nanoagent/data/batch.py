"""Rows -> chats -> token ids with a loss mask -> padded batches: what the trainer reads.

A row is a chat in the common form (`{"messages": [...], "tools"?: [...]}`), any schema
the adapters know (glaive's ShareGPT, xlam, hermes, ...), or pre-tokenized `{"ids", "mask"?}`.
Only the assistant's tokens carry loss. The order of examples in an epoch is a function of
(seed, epoch) alone, so a resumed run sees exactly what an unbroken one would.
Lesson: lessons/13_finetune/README.md.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .adapters import to_messages
from .io import DataError, read_rows

CHAT_ROLES = ("system", "user", "assistant", "tool")


def row_to_chat(row: dict) -> tuple[list[dict], list[dict]] | None:
    """One data row -> (messages, tools), or None when it fits no known chat format.

    Rows in the common form, `{"messages": [{"role", "content", "tool_calls"?}], "tools"?}`, are
    used as they are; any other schema (glaive's ShareGPT `conversations` with a `tools` JSON
    string, xlam, hermes, ...) goes through the adapters of `nanoagent.data` (glaive:
    function_call -> an assistant message with `tool_calls`, observation -> a `tool` message).
    """
    messages = row.get("messages")
    if isinstance(messages, list) and messages and all(isinstance(m, dict) and m.get("role") in CHAT_ROLES
                                                       for m in messages):
        tools = row.get("tools") or []
        return messages, json.loads(tools) if isinstance(tools, str) else tools
    chat = to_messages(row)
    return None if chat is None else (chat["messages"], chat.get("tools") or [])


@dataclass
class Example:
    ids: np.ndarray  # (n,) int64: the tokens, at most seq_len + 1 of them
    mask: np.ndarray  # (n,) bool: token i was written by the assistant (carries loss as a target)


def encode_rows(rows, tokenizer, seq_len: int) -> tuple[list[Example], dict]:
    """Rows -> examples cut to seq_len + 1 tokens, and counts of the rows skipped and why.

    A row is a chat (see `row_to_chat`) or pre-tokenized `{"ids": [...], "mask"?: [...]}`.
    Rows that fit no chat format, or keep no assistant token within seq_len + 1, are skipped.
    """
    out, skipped = [], {"not a chat": 0, "no assistant token within --seq-len": 0}
    for n, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise TypeError(f"a row must be a JSON object, got {type(row).__name__}")
            if "ids" in row:
                ids = np.asarray(row["ids"], dtype=np.int64)
                mask = np.asarray(row.get("mask", np.ones(len(ids))), dtype=bool)
                if ids.ndim != 1 or mask.shape != ids.shape:
                    raise ValueError("ids and mask must be two lists of the same length")
            else:
                chat = row_to_chat(row)
                if chat is None:
                    skipped["not a chat"] += 1
                    continue
                if tokenizer is None:
                    raise ValueError("chat rows need a tokenizer.json in the model folder")
                ids, mask = tokenizer.encode_chat(*chat, add_generation_prompt=False)
                ids = np.asarray(ids, dtype=np.int64)
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"data row {n} is malformed ({type(e).__name__}: {e}). Fix or remove it.") from e
        ids, mask = ids[:seq_len + 1], mask[:seq_len + 1]
        if len(ids) < 2 or not mask[1:].any():
            skipped["no assistant token within --seq-len"] += 1
            continue
        out.append(Example(ids, mask))
    return out, {k: v for k, v in skipped.items() if v}


def pack(examples: list[Example], seq_len: int) -> list[Example]:
    """Whole examples laid end to end into rows of at most seq_len + 1 tokens (attention crosses them)."""
    rows, cur = [], []
    for ex in examples:
        if cur and sum(len(e.ids) for e in cur) + len(ex.ids) > seq_len + 1:
            rows.append(cur)
            cur = []
        cur.append(ex)
    if cur:
        rows.append(cur)
    return [Example(np.concatenate([e.ids for e in r]), np.concatenate([e.mask for e in r])) for r in rows]


class Batch(dict):
    """inputs, targets (B,T) int64, mask (B,T) bool: position t reads inputs[:, :t+1] and predicts
    targets[:, t], which counts where mask[:, t]; lengths (B,) the unpadded input lengths."""


def collate(examples: list[Example], pad_id: int) -> Batch:
    """Right-pad to the longest example; padded targets carry no loss (causal attention never sees them)."""
    T = max(len(e.ids) for e in examples) - 1
    ids = np.full((len(examples), T + 1), pad_id, dtype=np.int64)
    mask = np.zeros((len(examples), T + 1), dtype=bool)
    for b, e in enumerate(examples):
        ids[b, :len(e.ids)], mask[b, :len(e.ids)] = e.ids, e.mask
    lengths = np.array([len(e.ids) - 1 for e in examples])
    return Batch(inputs=ids[:, :-1], targets=ids[:, 1:], mask=mask[:, 1:], lengths=lengths)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch: a function of (seed, epoch) only, so a resumed run sees the same."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def micro_batch(examples, j: int, batch_size: int, seed: int, pad_id: int) -> Batch:
    """Micro-batch number j of the whole run (epochs laid end to end; a short last batch per epoch)."""
    per_epoch = math.ceil(len(examples) / batch_size)
    epoch, k = divmod(j, per_epoch)
    order = epoch_order(len(examples), seed, epoch)
    return collate([examples[i] for i in order[k * batch_size:(k + 1) * batch_size]], pad_id)


def fingerprint(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(e.ids.tobytes())
        h.update(e.mask.tobytes())
    return h.hexdigest()[:16]


def split_rows(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """Rows -> (train rows, held-out rows): a `fraction` of them (at least one row stays for training),
    chosen by the seed, each part in its original order."""
    order = np.random.default_rng([seed, 1 << 20]).permutation(len(rows))
    n_eval = min(len(rows) - 1, math.ceil(len(rows) * fraction)) if fraction > 0 else 0
    return [rows[i] for i in sorted(order[n_eval:])], [rows[i] for i in sorted(order[:n_eval])]


def load_examples(spec: str, tokenizer, seq_len: int, eval_spec: str | None = None, eval_fraction: float = 0.05,
                  seed: int = 0, packed: bool = False, split: str = "train", config: str | None = None,
                  replay: Sequence[Sequence] = ()):
    """Data files or a hub dataset -> (train examples, held-out examples, skipped-row counts).

    `replay`, (file, n) pairs: n rows of each file, drawn by `seed`, go after `spec`'s rows, as if the files had
    been laid end to end. The held-out part is `eval_spec`'s rows when given, else a seeded `eval_fraction`
    of all of them. Raises DataError when nothing usable is left.
    """
    rows = read_rows(spec, config, split)
    if not rows:
        raise DataError(f"{spec} holds no rows")
    for file, n in replay:
        earlier = read_rows(file)
        if len(earlier) < n:
            raise DataError(f"--replay {file}:{n}: the file holds {len(earlier)} rows")
        random.Random(seed).shuffle(earlier)
        rows += earlier[:n]
    if eval_spec:
        train_rows, eval_rows = rows, read_rows(eval_spec, config, split)
    else:
        train_rows, eval_rows = split_rows(rows, eval_fraction, seed)
    train, skipped = encode_rows(train_rows, tokenizer, seq_len)
    evals, _ = encode_rows(eval_rows, tokenizer, seq_len)
    if packed:
        train = pack(train, seq_len)
    if not train:
        why = ", ".join(f"{n} {reason}" for reason, n in skipped.items())
        raise DataError(f"no row of {spec} is a usable example ({why}): rows must be chats with an "
                        "assistant turn (messages, ShareGPT conversations, ...) or token ids with a mask.")
    return train, evals, skipped
