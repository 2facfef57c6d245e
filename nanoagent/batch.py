"""Decoding many sequences together: one step feeds every running sequence's newest token through
the network at once, so each weight matrix is read once per step for all of them.

Decoding one sequence is bound by reading the weights (540 MB a token in float32), not by
arithmetic; with A sequences a step reads them once and does A times the arithmetic, so the
tokens per second rise nearly A-fold until the arithmetic catches up. Each sequence has a slot
of its own in a `SlotCache` and its own sampling settings, stop ids and length limit; it joins
with a prefill of its prompt into a free slot and leaves, freeing the slot, when it finishes.
A prompt sampled several ways (GRPO's groups) is prefilled once and its slot copied.

Prompts go in together, and never stall the replies being decoded:
  - each step prefills at most `chunk` prompt tokens, shared out among the waiting prompts oldest
    first (a prompt longer than what is left goes on next step), all of them in one forward
    (Model.prefill_rows: each weight matrix read once for the lot, each prompt attending to its own
    slot), then the running sequences take a decoding step; so many short prompts share the cost of
    reading the weights, and a long prompt holds the others up for one chunk at a time;
  - a finished sequence's slot keeps the tokens its cache holds; a new prompt goes to the free
    slot whose tokens share the longest prefix with it and prefills only the rest (an agent sends
    its whole conversation every turn: the system prompt, the tools and the earlier turns are
    already there). A slot is reused, never shared while busy.
Lesson: lessons/08_kv_cache_and_sampling/README.md.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .decode import check_fits, new_slot_cache
from .model import Model
from .sampling import SamplingParams, sample_next


@dataclass
class Sequence:
    """One sequence being decoded: its settings, and what it has made so far."""
    prompt: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    stop_ids: frozenset
    rng: np.random.Generator
    slot: int = -1
    new: list[int] = field(default_factory=list)  # the tokens made, stop token excluded
    logits: np.ndarray | None = None  # (V,) of the next token
    finish_reason: str | None = None  # "stop" (a stop id), "length" (max_new_tokens or the cache is full), "cancelled"
    cached: int = 0  # prompt tokens whose keys and values its slot already held (not prefilled again)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


@dataclass
class Prefill:
    """A group of sequences sharing a prompt, its prompt going into `slot` a chunk at a time (the slot's
    length says how much is in); the other members' slots are `reserved` and get a copy when it is all in."""
    group: list[Sequence]
    slot: int
    reserved: list[int]


def shared_prefix(a: list[int], b: list[int]) -> int:
    """The number of leading tokens a and b have in common."""
    n = min(len(a), len(b))
    same = np.asarray(a[:n]) == np.asarray(b[:n])
    return n if same.all() else int(np.argmin(same))


class BatchDecoder:
    """Up to `slots` sequences decoded together; more wait in a queue for a free slot.

        decoder = BatchDecoder(model, slots=8)
        seqs = [decoder.submit(ids, max_new_tokens=64) for ids in prompts]
        while decoder.busy:
            for seq, token in decoder.step(): ...   # token None: seq finished without one

    `chunk`: the most prompt tokens prefilled in one step, over all the prompts going in (the rest go
    in the next steps).
    `prompt_tokens`, `cached_tokens` and `hits` count, over every prompt admitted, the tokens
    asked for, those a slot already held, and the prompts that found some.
    """

    def __init__(self, model: Model, slots: int = 8, capacity: int | None = None, chunk: int = 256):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self.model, self.cache = model, new_slot_cache(model.config, model.cache_dtype, slots, capacity)
        self.chunk = chunk
        self.free = deque(range(slots))
        self.held: list[list[int]] = [[] for _ in range(slots)]  # the tokens each slot's cache holds
        self.running: list[Sequence] = []
        self.prefilling: deque[Prefill] = deque()  # admitted, their prompts going in, oldest first
        self.waiting: deque[list[Sequence]] = deque()  # groups sharing a prompt join together
        self.prompt_tokens = self.cached_tokens = self.hits = 0

    @property
    def busy(self) -> bool:
        return bool(self.running or self.prefilling or self.waiting)

    def submit(self, prompt_ids, max_new_tokens: int = 256, sampling: SamplingParams = SamplingParams(),
               stop_ids=(), n: int = 1) -> Sequence | list[Sequence]:
        """Queue a prompt (n > 1: n samples of it, sharing one prefill) -> its Sequence(s)."""
        prompt = [int(i) for i in prompt_ids]
        if not prompt:
            raise ValueError("the prompt is empty")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if not 1 <= n <= self.cache.kt.shape[1]:
            raise ValueError(f"n must be between 1 and the number of slots ({self.cache.kt.shape[1]}), got {n}")
        check_fits(len(prompt) + 1, self.cache.capacity, ": the prompt leaves no room for a reply. Shorten it.")
        rngs = np.random.default_rng(sampling.seed).spawn(n) if n > 1 else [np.random.default_rng(sampling.seed)]
        group = [Sequence(prompt, max_new_tokens, sampling, frozenset(stop_ids), rng) for rng in rngs]
        self.waiting.append(group)
        return group if n > 1 else group[0]

    def _take_slot(self, prompt: list[int]) -> int:
        """The free slot whose cache shares the longest prefix with `prompt`; of those, the one holding least
        (longer caches are kept for later prompts)."""
        slot = max(self.free, key=lambda s: (shared_prefix(self.held[s], prompt), -len(self.held[s])))
        self.free.remove(slot)
        return slot

    def _admit(self) -> None:
        """Waiting prompts take free slots, oldest first, while a whole group fits; each starts after the
        prefix its slot already holds (at least its last token is prefilled, for the next token's logits)."""
        while self.waiting and len(self.waiting[0]) <= len(self.free):
            group = self.waiting.popleft()
            prompt = group[0].prompt
            slot = self._take_slot(prompt)
            reserved = [self._take_slot([]) for _ in group[1:]]  # overwritten by a copy: those holding least
            reuse = min(shared_prefix(self.held[slot], prompt), len(prompt) - 1)
            self.cache.lengths[slot], self.held[slot] = reuse, prompt[:reuse]
            for seq in group:
                seq.cached = reuse
            self.prompt_tokens += len(prompt)
            self.cached_tokens += reuse
            self.hits += reuse > 0
            self.prefilling.append(Prefill(group, slot, reserved))

    def _prefill(self) -> None:
        """Up to `chunk` prompt tokens into their slots in one forward (Model.prefill_rows), shared out
        oldest prompt first (one that does not fit goes on next step); a group whose prompt is in
        starts decoding (its other members get a copy of the slot)."""
        budget, jobs, chunks = self.chunk, [], []
        for job in self.prefilling:
            if not budget:
                break
            prompt, filled = job.group[0].prompt, int(self.cache.lengths[job.slot])
            take = min(budget, len(prompt) - filled)
            jobs.append(job)
            chunks.append(prompt[filled:filled + take])
            budget -= take
        if not jobs:
            return
        logits = self.model.prefill_rows(chunks, [job.slot for job in jobs], self.cache)  # (K,V)
        for job, row in zip(jobs, logits):
            prompt, s = job.group[0].prompt, job.slot
            self.held[s] = prompt[:self.cache.lengths[s]]
            if len(self.held[s]) < len(prompt):
                continue
            self.prefilling.remove(job)
            for seq, slot in zip(job.group, [s] + job.reserved):
                if slot != s:
                    self.cache.copy_slot(s, slot)
                    self.held[slot] = list(self.held[s])
                seq.slot, seq.logits = slot, row
                self.running.append(seq)

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.finish_reason, seq.logits = reason, None
        self.running.remove(seq)
        self.held[seq.slot] = (seq.prompt + seq.new)[:self.cache.lengths[seq.slot]]  # what its cache holds
        self.free.append(seq.slot)

    def cancel(self, seq: Sequence) -> None:
        """Stop a sequence before it finishes (no one reads it any more): a running one frees its slot,
        a waiting one leaves the queue, one whose prompt is going in leaves its group (the rest of its
        group still joins; a group left empty frees its slots)."""
        if seq.done:
            return
        if any(s is seq for s in self.running):
            self._finish(seq, "cancelled")
            return
        for job in list(self.prefilling):
            if any(s is seq for s in job.group):
                job.group[:] = [s for s in job.group if s is not seq]
                if job.reserved:
                    self.free.append(job.reserved.pop())
                if not job.group:
                    self.prefilling.remove(job)
                    self.free.append(job.slot)
        for group in self.waiting:
            group[:] = [s for s in group if s is not seq]
        self.waiting = deque(g for g in self.waiting if g)
        seq.finish_reason = "cancelled"

    def step(self) -> list[tuple[Sequence, int | None]]:
        """A chunk of the prompts going in, then each running sequence samples its next token ->
        [(sequence, token or None when it stopped)].

        Sequences that finish leave and free their slot; the rest go through the network together.
        """
        self._admit()
        self._prefill()
        events, feed = [], []
        for seq in list(self.running):
            seen = seq.prompt + seq.new if seq.sampling.repetition_penalty != 1.0 else ()  # only the penalty reads it
            token = sample_next(seq.logits, seq.sampling, seq.rng, seen)
            if token in seq.stop_ids:
                self._finish(seq, "stop")
                events.append((seq, None))
                continue
            seq.new.append(token)
            events.append((seq, token))
            if len(seq.new) == seq.max_new_tokens or self.cache.lengths[seq.slot] == self.cache.capacity:
                self._finish(seq, "length")
            else:
                feed.append(seq)
        if feed:
            logits = self.model.decode_rows([s.new[-1] for s in feed], [s.slot for s in feed], self.cache)
            for seq, row in zip(feed, logits):
                seq.logits = row
        return events


def generate_batch(model: Model, prompts, max_new_tokens: int = 256, sampling: SamplingParams = SamplingParams(),
                   stop_ids=(), slots: int = 8) -> list[list[int]]:
    """The new ids of each prompt's reply, decoded `slots` at a time (each as if decoded alone)."""
    decoder = BatchDecoder(model, min(slots, max(len(prompts), 1)),
                           min(max(len(p) for p in prompts) + max_new_tokens, model.config.max_position_embeddings)
                           if prompts else None)
    seqs = [decoder.submit(p, max_new_tokens, sampling, stop_ids) for p in prompts]
    while decoder.busy:
        decoder.step()
    return [s.new for s in seqs]
