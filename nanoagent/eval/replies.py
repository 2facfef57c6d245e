"""Greedy replies for an evaluation: many conversations, decoded `batch` at a time when the model
can (`ChatModel.chat_batch`, the same replies as one by one), with a progress bar."""
from __future__ import annotations

import sys

from tqdm import tqdm


def greedy_replies(model, conversations: list[list[dict]], tools: list | None = None, max_new_tokens: int = 256,
                   batch: int = 8, progress: bool = True, desc: str = "") -> list[str]:
    """The greedy reply to each conversation; `tools`: a tool list (or None) per conversation."""
    tools = tools or [None] * len(conversations)
    batched = batch > 1 and hasattr(model, "chat_batch")
    step = 4 * batch if batched else 1  # a few slot-fulls at a time: the progress bar moves, slots stay busy
    out: list[str] = []
    with tqdm(total=len(conversations), desc=desc, unit="item", disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(conversations), step):
            chats, ts = conversations[i:i + step], tools[i:i + step]
            if batched:
                out += model.chat_batch(chats, ts, max_new_tokens=max_new_tokens, slots=batch, temperature=0.0)
            else:
                out += [model.chat(c, tools=t, max_new_tokens=max_new_tokens, temperature=0.0) for c, t in zip(chats, ts)]
            bar.update(len(chats))
    return out
