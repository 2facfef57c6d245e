"""Perplexity: exp of the mean next-token cross-entropy over token ids, a text file or a dataset.

Plain text is cut into windows of `seq_len + 1` tokens (no overlap); chat rows
(`messages`) count only the assistant's tokens, as in training; rows with a `text` field
(or `question`/`answer`, as GSM8K) count every token.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.adapters import to_messages
from ..data.io import read_rows
from ..loss import log_softmax


def nll_sum(model, ids, mask=None) -> tuple[float, int]:
    """ids (T,) -> (sum of -log p(ids[t+1] | ids[:t+1]) over counted targets, count)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 2:
        return 0.0, 0
    logp = log_softmax(model.logits(ids[:-1]).astype(np.float64))  # (T-1, V)
    nll = -logp[np.arange(len(ids) - 1), ids[1:]]  # (T-1,)
    keep = np.ones(len(ids) - 1, bool) if mask is None else np.asarray(mask[1:], bool)
    return float(nll[keep].sum()), int(keep.sum())


def perplexity(model, ids, window: int = 512) -> float:
    """exp(mean negative log-likelihood) of ids, read in windows of `window` tokens (each window
    predicts its own tokens 1..; the first token of each window is context only)."""
    nll, count = 0.0, 0
    for s in range(0, len(ids) - 1, window):
        window_nll, n = nll_sum(model, ids[s:s + window])
        nll, count = nll + window_nll, count + n
    return math.exp(nll / count)


def sequences(model, source: str, seq_len: int, limit: int | None):
    """(ids, mask) pieces to score from a text file or a dataset (file or hub name)."""
    tok = model.tokenizer
    path = Path(source)
    if path.is_file() and path.suffix.lower() not in (".jsonl", ".json", ".parquet"):
        ids = tok.encode(path.read_text(encoding="utf-8"))
        pieces = [ids[i:i + seq_len + 1] for i in range(0, max(len(ids) - 1, 1), seq_len)]
        for p in pieces[:limit]:
            yield p, None
        return
    for row in read_rows(source, limit=limit):
        if "text" in row and isinstance(row["text"], str):
            yield tok.encode(row["text"])[:seq_len + 1], None
            continue
        chat = to_messages(row)
        if chat is None:
            continue
        ids, mask = tok.encode_chat(chat["messages"], chat.get("tools"), add_generation_prompt=False)
        yield ids[:seq_len + 1], mask[:seq_len + 1]


def run_ppl(model, source: str, seq_len: int = 1024, limit: int | None = None, progress: bool = True) -> dict:
    total, count, n_seq = 0.0, 0, 0
    for ids, mask in tqdm(sequences(model, source, seq_len, limit), desc="ppl", unit="seq",
                          disable=not progress, file=sys.stderr):
        s, n = nll_sum(model, ids, mask)
        total, count, n_seq = total + s, count + n, n_seq + 1
    mean = total / count if count else float("nan")
    return {"summary": {"source": str(source), "sequences": n_seq, "tokens": count, "nll": mean,
                        "perplexity": math.exp(mean) if count else float("nan")}}


def format_table(s: dict) -> str:
    return (f"source      {s['source']}\nsequences   {s['sequences']}\ntokens      {s['tokens']}\n"
            f"mean NLL    {s['nll']:.4f}\nperplexity  {s['perplexity']:.3f}")
