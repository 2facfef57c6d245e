"""The prompts GRPO samples from, and which of them a round takes: tool chats cut before their first
assistant turn with that turn's calls as the reference, or verifiable-instruction items; rounds walk seeded
epochs of them, with --balance by kind of reference (calls or not; BFCL's four kinds) taking turns slot by slot.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..data.batch import epoch_order, row_to_chat
from ..data.io import read_rows
from ..eval.chain import stated_answer
from ..tokenizer import Tokenizer, normalize_tools
from ..toolcalls import normalize_calls
from .rewards import instruction_problem, reference_problem


@dataclass
class ToolPrompt:
    ids: list[int]  # the chat up to the first assistant turn, generation prompt included
    tools: list[dict]  # bare {name, description, parameters}
    reference: list[dict]  # the calls made there, [{"name", "arguments"}]; []: no call is right
    messages: tuple = ()  # the chat before that turn (what a rejection-sampled training row starts with)
    answer: float | None = None  # no call right, and the row's reply states a number as its answer: that number


def first_request(messages: list[dict]) -> str | None:
    """The text of a chat's first user turn (what --exclude compares), or None."""
    return next((str(m.get("content")) for m in messages if m["role"] == "user"), None)


def seen_requests(files: str) -> frozenset[str]:
    """--exclude FILE,FILE,...: the first user turns of those training files' chats."""
    chats = (row_to_chat(row) for f in files.split(",") for row in read_rows(f))
    return frozenset(first_request(chat[0]) for chat in chats if chat is not None)


def tool_prompts(rows, tokenizer: Tokenizer, max_prompt_tokens: int, sources: frozenset | None = None,
                 seen: frozenset[str] = frozenset()) -> tuple[list[ToolPrompt], dict]:
    """Rows -> the prompts GRPO samples from, and counts of the rows skipped and why. With `sources`,
    only rows whose "source" (the family a mix row came from) is one of them; rows whose first user turn
    is in `seen` (requests a fine-tune trained on) are left out."""
    out, skipped = [], Counter()
    for row in rows:
        chat = row_to_chat(row) if isinstance(row, dict) else None
        if chat is None:
            skipped["not a chat"] += 1
            continue
        if sources is not None and row.get("source") not in sources:
            skipped["source not in --sources"] += 1
            continue
        messages, tools = chat
        if first_request(messages) in seen:
            skipped["request seen in --exclude"] += 1
            continue
        try:
            tools = normalize_tools(tools)
        except (TypeError, ValueError):
            skipped["unreadable tools"] += 1
            continue
        first = next((k for k, m in enumerate(messages) if m["role"] == "assistant"), None)
        if not tools:
            skipped["no tools offered"] += 1
            continue
        if first is None or not any(m["role"] == "user" for m in messages[:first]):
            skipped["no user turn before an assistant turn"] += 1
            continue
        reference, errors = normalize_calls(messages[first].get("tool_calls") or [])
        if errors or reference_problem(reference, tools):
            skipped["reference call fails the checker"] += 1
            continue
        ids, _ = tokenizer.encode_chat(messages[:first], tools, add_generation_prompt=True)
        if len(ids) > max_prompt_tokens:
            skipped["prompt longer than --max-prompt-tokens"] += 1
            continue
        answer = None if reference else stated_answer(str(messages[first].get("content") or ""))
        out.append(ToolPrompt(list(ids), tools, reference, tuple(messages[:first]), answer))
    return out, dict(skipped)


@dataclass
class InstructionPrompt:
    ids: list[int]  # the user prompt (after the system prompt) and the generation prompt
    item: dict  # {"key", "prompt", "instruction_id_list", "kwargs"}: what the reply is checked against


def instruction_prompts(rows, tokenizer: Tokenizer, max_prompt_tokens: int,
                        system: str | None = None) -> tuple[list[InstructionPrompt], dict]:
    """IFEval-form rows -> the prompts GRPO samples from (no tools), and counts of the rows skipped and why."""
    out, skipped = [], Counter()
    for row in rows:
        problem = instruction_problem(row)
        if problem is not None:
            skipped[problem] += 1
            continue
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": row["prompt"]}]
        ids, _ = tokenizer.encode_chat(messages, None, add_generation_prompt=True)
        if len(ids) > max_prompt_tokens:
            skipped["prompt longer than --max-prompt-tokens"] += 1
            continue
        item = {k: row.get(k) for k in ("key", "prompt", "instruction_id_list", "kwargs")}
        out.append(InstructionPrompt(list(ids), item))
    return out, dict(skipped)


def fingerprint(prompts: list[ToolPrompt] | list[InstructionPrompt]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(np.asarray(p.ids, dtype=np.int64).tobytes())
        h.update(json.dumps(p.reference if isinstance(p, ToolPrompt) else p.item, sort_keys=True).encode())
    return h.hexdigest()[:16]


def round_prompts(n: int, step: int, per_round: int, seed: int) -> list[int]:
    """The prompts of round `step`: epochs of a seeded order laid end to end (a short last round per epoch)."""
    per_epoch = math.ceil(n / per_round)
    epoch, k = divmod(step, per_epoch)
    return [int(i) for i in epoch_order(n, seed, epoch)[k * per_round:(k + 1) * per_round]]


def stream(n: int, start: int, count: int, seed: int) -> list[int]:
    """Positions start .. start+count of epochs of a seeded order of n laid end to end, without short rounds."""
    return [int(epoch_order(n, seed, j // n)[j % n]) for j in range(start, start + count)]


def kind(p: ToolPrompt, balance: str) -> str:
    """The kind a prompt is balanced by: with "calls", whether its reference makes a call; with "kinds",
    BFCL's four (one call among one tool, one call among several, two or more calls, no call)."""
    if not p.reference:
        return "no call"
    if balance == "calls":
        return "call"
    if len(p.reference) > 1:
        return "parallel"
    return "multiple" if len(p.tools) > 1 else "simple"


BALANCE_KINDS = {"calls": ("call", "no call"), "kinds": ("simple", "multiple", "parallel", "no call")}


def balanced_prompts(prompts: list[ToolPrompt], step: int, per_round: int, seed: int, balance: str) -> list[int]:
    """The prompts of round `step` with --balance: the kinds present take turns, slot by slot across rounds
    (so every round pulls the choices between them, and an odd slot goes to each kind in turn), and each
    kind walks its own seeded order through whole epochs. The turns also order the round, so that with
    --draw the update's first groups that differ are of several kinds."""
    groups = [[i for i, p in enumerate(prompts) if kind(p, balance) == k] for k in BALANCE_KINDS[balance]]
    groups = [g for g in groups if g]
    out = []
    for slot in range(step * per_round, (step + 1) * per_round):
        k, turn = slot % len(groups), slot // len(groups)
        out.append(groups[k][stream(len(groups[k]), turn, 1, seed + k)[0]])
    return out
