"""Rejection sampling, the comparison arm of GRPO: N replies to each prompt, decoded together, and the reply
kept for training: for verifiable instructions the first that follows every instruction, else (with --repair)
the best one mended by repair.py; for tool calls the first whose calls match the reference (or that calls
nothing where no call is right), with as many rows of each kind as asked. `python -m nanoagent.rl --task
instructions|toolcalls --rejection N [--per-kind K]`.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Callable

from tqdm import tqdm

from ..batch import BatchDecoder
from ..data.batch import epoch_order
from ..model import Model
from ..sampling import SamplingParams
from .prompts import BALANCE_KINDS, InstructionPrompt, ToolPrompt, kind
from .repair import repair
from .rewards import instruction_reward, reward


def sample_replies(model: Model, prompts: list[InstructionPrompt], n: int, max_new_tokens: int,
                   sampling: SamplingParams, stop_id: int, slots: int, seeds: list[int],
                   bar: tqdm | None = None) -> list[list[tuple[list[int], str]]]:
    """n replies to each prompt, decoded together (each prompt prefilled once), prompt i sampling with seed
    `seeds[i]` -> per prompt, n (new ids without the stop token, finish reason); `bar` counts the replies."""
    capacity = min(max(len(p.ids) for p in prompts) + max_new_tokens, model.config.max_position_embeddings)
    decoder = BatchDecoder(model, max(slots, n), capacity)
    groups = []
    for p, s in zip(prompts, seeds, strict=True):
        group = decoder.submit(p.ids, max_new_tokens, replace(sampling, seed=s), (stop_id,), n=n)
        groups.append(group if n > 1 else [group])
    while decoder.busy:
        done = sum(seq.done for seq, _ in decoder.step())
        if bar is not None:
            bar.update(done)
    return [[(seq.new, seq.finish_reason) for seq in group] for group in groups]


# A reply that declines for want of tools (the agent's refusal rows, leaking into tasks that offer none): it can
# pass "do not write these words" as well as any reply, and it teaches declining, so the sampling arms skip it.
DECLINES = re.compile(r"\b(?:tools?|functions?) (?:available to me|i have)\b|\bmy (?:current )?tools\b"
                      r"|\bbeyond the (?:scope of the )?tools?\b|\bdon't have a tool\b|\bcan't help with that\b", re.I)


def best_reply(replies: list[tuple[str, str]], item: dict, mend: bool = False) -> tuple[str, str] | None:
    """Of (text, finish reason) replies, the first that follows all of the item's instructions and ended at
    <|im_end|> with no tool call (the top reward) -> (text, "rejection"); else, with `mend`, the first that
    repair.py mends, taken best reward first (another reply is the second of two responses) ->
    (text, "repaired"); else None. A reply that declines (DECLINES) is never kept."""
    scored = [(instruction_reward(text, reason, item), text) for text, reason in replies if not DECLINES.search(text)]
    for r, text in scored:
        if r.correct == 1.0 and r.format == 1.0:
            return text, "rejection"
    if mend:
        tidy = [text for r, text in sorted(scored, key=lambda rt: -rt[0].correct) if r.format == 1.0]
        for k, text in enumerate(tidy):
            mended = repair(text, item, other=next((t for t in tidy[k + 1:] + tidy[:k] if t != text), None))
            if mended is not None:
                return mended, "repaired"
    return None


def right_call_reply(replies: list[tuple[str, str]], prompt: ToolPrompt) -> tuple[str, str] | None:
    """Of (text, finish reason) replies to a tool prompt, the first with the top reward (the reference calls,
    cleanly written; no call where none is right, and the row's answer where it states one) -> (text,
    "rejection"); else None."""
    for text, reason in replies:
        r = reward(text, reason, prompt.reference, prompt.tools, answer=prompt.answer)
        if r.correct == 1.0 and r.format == 1.0:
            return text, "rejection"
    return None


def right_calls_by_kind(prompts: list[ToolPrompt], per_kind: int | None, seed: int,
                        judge: Callable[[list[ToolPrompt], int], list[tuple[str, str] | None]]
                        ) -> list[tuple[ToolPrompt, tuple[str, str] | None]]:
    """Tool prompts, sampled and judged by `judge(prompts, wave)` (-> each one's kept reply, or None) ->
    (prompt, kept reply or None) for every prompt judged. Without `per_kind`, every prompt once, in one wave.
    With it, K: the kinds (simple, multiple, parallel, no call) keep K rows each, whatever their pass rates:
    each kind's prompts go in a seeded order, and each wave takes, of every kind still short of K, as many
    prompts as it lacks, until it has K or its prompts run out (a kind that passes one time in four takes
    about 4K prompts over the waves, one that always passes K). The waves are a function of the seed and of
    what earlier waves kept, so a resumed run takes the same ones."""
    if per_kind is None:
        return list(zip(prompts, judge(prompts, 0)))
    queues = {}
    for k in BALANCE_KINDS["kinds"]:
        of_kind = [p for p in prompts if kind(p, "kinds") == k]
        queues[k] = [of_kind[i] for i in epoch_order(len(of_kind), seed, 0)]
    judged, kept = [], dict.fromkeys(queues, 0)
    for wave in range(len(prompts)):  # at least one prompt a wave
        batch = []
        for k, queue in queues.items():
            lacking = max(per_kind - kept[k], 0)
            batch, queues[k] = batch + queue[:lacking], queue[lacking:]
        if not batch:
            break
        for p, reply in zip(batch, judge(batch, wave)):
            judged.append((p, reply))
            kept[kind(p, "kinds")] += reply is not None
    return judged
