"""What int8 weights cost: greedy agreement with the float model on fixed chat prompts.

Perplexity on held-out text is the other measure (ppl.py). Both take the object `load()`
returns (a model with its tokenizer). Lesson: lessons/14_int8/README.md.
"""
from __future__ import annotations

import numpy as np

from ..generate import generate_ids

CHECK_PROMPTS = [  # the fixed chat prompts greedy agreement is measured on
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "What is 17 times 23?",
    "Give me three tips for a job interview.",
    "Translate 'good morning' into Spanish.",
    "What is the difference between a list and a tuple in Python?",
    "Summarize the story of Cinderella in one paragraph.",
    "Name five fruits that are red.",
    "How do I boil an egg?",
    "Write a Python function that reverses a string.",
    "Why is the sky blue?",
    "What causes the seasons on Earth?",
    "Suggest a name for a pet turtle.",
    "What is a prime number? Give an example.",
    "Write a short email declining a meeting invitation.",
    "List the planets of the solar system in order.",
    "What are the benefits of regular exercise?",
    "Tell me a fun fact about octopuses.",
    "How many minutes are there in a day? Show your work.",
]


def greedy_tokens(model, prompts, n_tokens: int) -> list[list[int]]:
    """The first n_tokens greedy ids of the reply to each prompt (not stopped at the end of a turn)."""
    tok = model.tokenizer
    return [list(generate_ids(model.model, tok.encode(tok.render_chat([{"role": "user", "content": p}])),
                              n_tokens)) for p in prompts]


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean over replies of the fraction of positions where the two replies have the same token."""
    return float(np.mean([np.mean(np.array(x) == np.array(y)) for x, y in zip(a, b)]))


def forced_agreement(model, other, prompts, replies: list[list[int]]) -> float:
    """The share of reply positions where `other` picks the same top token as `model`, both
    reading the same text (each prompt followed by `model`'s own greedy reply). Unlike
    `agreement`, one flipped near-tie does not carry the rest of a reply away with it."""
    tok = model.tokenizer
    same = []
    for p, reply in zip(prompts, replies):
        ids = tok.encode(tok.render_chat([{"role": "user", "content": p}]))
        text = np.array(ids + list(reply))
        at = slice(len(ids) - 1, len(text) - 1)  # the positions that predict the reply's tokens
        same.append(model.logits(text)[at].argmax(-1) == other.logits(text)[at].argmax(-1))
    return float(np.mean(np.concatenate(same)))
