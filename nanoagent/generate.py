"""Generation: prefill the prompt in one batched forward, then decode one token at a time.

The KV cache is allocated once for prompt + new tokens, so the prompt is never recomputed.
`python -m nanoagent.generate --prompt TEXT` streams a reply and prints speed to stderr.
Lesson: lessons/08_kv_cache_and_sampling/README.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .model import ContextLengthError, Model
from .sampling import SamplingParams, sample_next


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    generated_tokens: int = 0
    generate_seconds: float = 0.0

    def report(self) -> str:
        """Speed in the style of mlx-lm / llama.cpp: prompt and generation tokens/s, peak memory."""
        def rate(n, s):
            return n / s if s > 0 else 0.0
        return ("==========\n"
                f"Prompt: {self.prompt_tokens} tokens, {rate(self.prompt_tokens, self.prompt_seconds):.1f} tokens/s\n"
                f"Generation: {self.generated_tokens} tokens, "
                f"{rate(self.generated_tokens, self.generate_seconds):.1f} tokens/s\n"
                f"Peak memory: {peak_rss_gb():.3f} GB")


def peak_rss_gb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / (2**30 if sys.platform == "darwin" else 2**20)


# ---- token ids ---------------------------------------------------------------------------

def generate_ids(model: Model, prompt_ids, max_new_tokens=256, sampling=SamplingParams(),
                 stop_ids=None, stats: GenerationStats | None = None) -> Iterator[int]:
    """Yield up to `max_new_tokens` new ids after `prompt_ids`, stopping before any of `stop_ids`."""
    prompt_ids = [int(i) for i in prompt_ids]
    context = model.config.max_position_embeddings
    if not prompt_ids:
        raise ValueError("the prompt is empty")
    if len(prompt_ids) >= context:
        raise ContextLengthError(f"the prompt is {len(prompt_ids)} tokens; the model's context is {context}. "
                                 "Shorten the prompt.")
    stop_ids = set(model.tokenizer.stop_ids if stop_ids is None else stop_ids)
    stats = stats if stats is not None else GenerationStats()
    rng = np.random.default_rng(sampling.seed)
    seen = list(prompt_ids)

    kv = model.new_kv_cache(min(len(prompt_ids) + max_new_tokens, context))
    t0 = time.perf_counter()
    logits = model.prefill(prompt_ids, kv)
    stats.prompt_tokens, stats.prompt_seconds = len(prompt_ids), time.perf_counter() - t0

    t0 = time.perf_counter()
    for i in range(max_new_tokens):
        token = sample_next(logits, sampling, rng, seen)
        if token in stop_ids:
            break
        seen.append(token)
        stats.generated_tokens += 1
        stats.generate_seconds = time.perf_counter() - t0
        yield token
        if i + 1 == max_new_tokens or kv.length == kv.capacity:
            break
        logits = model.decode_step(token, kv)
    stats.generate_seconds = time.perf_counter() - t0


# ---- text ---------------------------------------------------------------------------------

class TextStream:
    """Turns ids arriving one at a time into text pieces: never half a UTF-8 character, and
    never text that may be the start of a stop string."""

    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer, self.stop = tokenizer, [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self.text = ""  # decoded so far
        self.sent = 0  # characters of self.text already given out
        self.stopped = False

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return ""
        self.text = text
        for s in self.stop:
            at = self.text.find(s)
            if at != -1:
                self.text, self.stopped = self.text[:at], True
        hold = 0 if self.stopped else max((self._partial_stop(s) for s in self.stop), default=0)
        return self._take(len(self.text) - hold)

    def _partial_stop(self, s: str) -> int:
        """The length of the longest tail of the text that begins stop string s."""
        return next((n for n in range(min(len(s) - 1, len(self.text)), 0, -1) if self.text.endswith(s[:n])), 0)

    def _take(self, end: int) -> str:
        piece, self.sent = self.text[self.sent:end], max(self.sent, end)
        return piece

    def flush(self) -> str:
        return self._take(len(self.text))


def stream_ids_text(model, prompt_ids, max_new_tokens=256, sampling=SamplingParams(), stop=None,
                    stats=None) -> Iterator[str]:
    """Yield the text of the reply to `prompt_ids` piece by piece."""
    out = TextStream(model.tokenizer, stop)
    for token in generate_ids(model, prompt_ids, max_new_tokens, sampling, stats=stats):
        if piece := out.push(token):
            yield piece
        if out.stopped:
            return
    if piece := out.flush():
        yield piece


def stream_chat(model, messages, tools=None, max_new_tokens=256, temperature=0.0, top_p=1.0, top_k=0,
                min_p=0.0, repetition_penalty=1.0, seed=None, stop=None, stats=None) -> Iterator[str]:
    """Yield the assistant's reply to `messages` (with NanoAgent's tools prompt when `tools` are given)."""
    sampling = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, seed)
    ids = model.tokenizer.encode(model.tokenizer.render_chat(messages, tools))
    yield from stream_ids_text(model, ids, max_new_tokens, sampling, stop, stats)


# ---- command line -------------------------------------------------------------------------

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.generate",
                                 description="Reply to one prompt with SmolLM2-135M-Instruct (greedy by default).")
    ap.add_argument("--prompt", required=True, help="the user message; '-' reads it from stdin")
    ap.add_argument("--system", help="a system prompt (default: SmolLM2's own)")
    ap.add_argument("--model", help="an HF model folder (default: SmolLM2-135M-Instruct, obtained on first use)")
    ap.add_argument("--int8", action="store_true", help="int8 weights (quantized while loading a float folder)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--min-p", type=float, default=0.0)
    ap.add_argument("--repetition-penalty", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--tools", help="a JSON file with a list of tools (OpenAI-style or bare {name, description, parameters})")
    ap.add_argument("--no-stream", action="store_true", help="print the reply once it is complete")
    args = ap.parse_args(argv)

    from . import load
    from .weights import WeightsError
    try:
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        tools = json.loads(open(args.tools).read()) if args.tools else None
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                   [{"role": "user", "content": prompt}]
        model = load(args.model, int8=args.int8)
        stats = GenerationStats()
        pieces = model.stream(messages, tools=tools, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                              min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                              stats=stats)
        if args.no_stream:
            print("".join(pieces), flush=True)
        else:
            for piece in pieces:
                print(piece, end="", flush=True)
            print(flush=True)
    except (WeightsError, ValueError, OSError) as e:  # ContextLengthError is a ValueError
        sys.exit(f"error: {e}")
    print(stats.report(), file=sys.stderr)


if __name__ == "__main__":
    main()
