"""Cleaning a pile of chats: exact and near-duplicate removal, length and short-answer filters,
and the rendering variety NanoAgent trained with (shuffled tools, distractor tools, system prompts).

Near duplicates are found with MinHash + LSH, written here in NumPy:
  - a chat's text becomes a set of word 5-gram shingles, each hashed to 32 bits;
  - K random hash functions h_k(x) = (a_k x + b_k) mod p (p = 2^31 - 1); the signature is
    min over shingles of each h_k, and P(sig_k(A) == sig_k(B)) = Jaccard(A, B);
  - the K values are cut into bands of r rows; two chats that agree on a whole band land in
    the same bucket and become candidates, confirmed by the share of equal signature values.
Lesson: lessons/15_data_and_eval/README.md.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import defaultdict

import numpy as np

# ---- text of a chat ------------------------------------------------------------------------------


def normalize_text(s: str) -> str:
    """For comparing texts: Unicode NFKC, lowercase, punctuation dropped, runs of spaces as one."""
    s = unicodedata.normalize("NFKC", s).lower()
    s = re.sub(r"[^\w\s]", " ", s)
    return re.sub(r"\s+", " ", s).strip()


def chat_text(row: dict) -> str:
    """Everything a chat says, calls included, as one string (for dedup)."""
    parts = []
    for m in row["messages"]:
        parts.append(m.get("content") or "")
        for c in m.get("tool_calls") or []:
            parts.append(c["name"] + " " + json.dumps(c["arguments"], sort_keys=True, ensure_ascii=False))
    return "\n".join(parts)


def user_prompts(row: dict) -> list[str]:
    return [m["content"] for m in row["messages"] if m["role"] == "user" and m.get("content")]


# ---- exact duplicates --------------------------------------------------------------------------------

def text_key(s: str) -> str:
    return hashlib.blake2b(normalize_text(s).encode(), digest_size=16).hexdigest()


class ExactDedup:
    """Remembers the normalized text of what it has seen; `seen(text)` is True the second time."""

    def __init__(self):
        self.keys: set[str] = set()

    def seen(self, text: str) -> bool:
        k = text_key(text)
        if k in self.keys:
            return True
        self.keys.add(k)
        return False


# ---- near duplicates: MinHash + LSH -------------------------------------------------------------------

MERSENNE = np.uint64((1 << 31) - 1)


def shingles(text: str, n: int = 5) -> np.ndarray:
    """The distinct word n-grams of the normalized text, hashed to 32-bit ints (uint64 array)."""
    words = normalize_text(text).split()
    grams = {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))} if words else {""}
    return np.array([int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little")
                     for g in grams], dtype=np.uint64)


class MinHashLSH:
    """Near-duplicate detector: `add(text)` returns True (and keeps nothing) if a kept text is similar."""

    def __init__(self, num_perm: int = 128, bands: int = 16, threshold: float = 0.8, ngram: int = 5, seed: int = 0):
        if num_perm % bands:
            raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, int(MERSENNE), num_perm, dtype=np.uint64)  # (K,)
        self.b = rng.integers(0, int(MERSENNE), num_perm, dtype=np.uint64)  # (K,)
        self.bands, self.rows = bands, num_perm // bands
        self.threshold, self.ngram = threshold, ngram
        self.buckets: list[dict] = [defaultdict(list) for _ in range(bands)]
        self.signatures: list[np.ndarray] = []

    def signature(self, text: str) -> np.ndarray:
        """text -> (K,) MinHash signature: min over shingles x of (a_k x + b_k) mod p."""
        x = shingles(text, self.ngram)  # (S,) values < 2^32; with a < 2^31 the product fits in 63 bits
        x = x % MERSENNE
        h = (x[:, None] * self.a[None, :] + self.b[None, :]) % MERSENNE  # (S, K)
        return h.min(axis=0)

    def similar(self, sig: np.ndarray) -> int | None:
        """Index of a kept text whose estimated Jaccard with `sig` reaches the threshold, else None."""
        seen = set()
        for band in range(self.bands):
            key = sig[band * self.rows:(band + 1) * self.rows].tobytes()
            for j in self.buckets[band].get(key, ()):
                if j not in seen:
                    seen.add(j)
                    if np.mean(self.signatures[j] == sig) >= self.threshold:
                        return j
        return None

    def add(self, text: str) -> bool:
        """True if `text` nearly duplicates a kept one (then it is not kept); else keep it, return False."""
        sig = self.signature(text)
        if self.similar(sig) is not None:
            return True
        j = len(self.signatures)
        self.signatures.append(sig)
        for band in range(self.bands):
            self.buckets[band][sig[band * self.rows:(band + 1) * self.rows].tobytes()].append(j)
        return False


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    """The exact Jaccard similarity of two texts' shingle sets (what MinHash estimates)."""
    x, y = set(shingles(a, ngram).tolist()), set(shingles(b, ngram).tolist())
    return len(x & y) / max(len(x | y), 1)


# ---- filters -------------------------------------------------------------------------------------------

def count_words(s: str) -> int:
    return len(re.findall(r"\w+", s))


def shorten_casual(row: dict, max_words: int = 120) -> dict | None:
    """Keep short answers: cut a chat after its last assistant reply before the first long one.

    A small model copes better with short replies; NanoAgent kept casual chats whose answers
    are short. Returns the (possibly shortened) chat, or None when its first reply is long.
    """
    msgs = row["messages"]
    keep = 0
    for i, m in enumerate(msgs):
        if m["role"] == "assistant":
            if count_words(m.get("content") or "") > max_words and not m.get("tool_calls"):
                break
            keep = i + 1
    if keep == 0:
        return None
    return {**row, "messages": msgs[:keep]}


# ---- rendering variety -----------------------------------------------------------------------------------

SYSTEM_PROMPTS = (
    None,  # the tools prompt's own preamble
    "You are a helpful assistant.",
    "You are NanoAgent, a small assistant that can call tools.",
    "You are a helpful assistant with access to tools. Use them when they help; otherwise answer directly.",
    "You are an AI assistant. Answer the user's questions, calling functions when needed.",
)


def vary_tools(row: dict, rng: np.random.Generator, pool: list[dict] = (), p_distractor: float = 0.5,
               max_distractors: int = 2, p_system: float = 0.5) -> dict:
    """Shuffle the tool list, sometimes add distractor tools from other rows, sometimes vary the system prompt."""
    tools = list(row.get("tools") or [])
    if not tools:
        return row
    names = {t["name"] for t in tools}
    if pool and rng.random() < p_distractor:
        for k in rng.choice(len(pool), size=min(len(pool), int(rng.integers(1, max_distractors + 1))), replace=False):
            if pool[k]["name"] not in names:
                tools.append(pool[k])
                names.add(pool[k]["name"])
    order = rng.permutation(len(tools))
    tools = [tools[i] for i in order]
    messages = row["messages"]
    if messages[0]["role"] != "system" and rng.random() < p_system:
        system = SYSTEM_PROMPTS[int(rng.integers(1, len(SYSTEM_PROMPTS)))]
        messages = [{"role": "system", "content": system}] + messages
    return {**row, "messages": messages, "tools": tools}
