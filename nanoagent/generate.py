"""Generation: prefill the prompt in one batched forward, then decode one token at a time.

The KV cache is allocated once for prompt + new tokens, so the prompt is never recomputed.
`load()` returns a `ChatModel`: the Model with its Tokenizer, which turns messages into a
reply (`.chat`, `.stream`). `python -m nanoagent.generate --prompt TEXT` streams a reply and
prints speed to stderr. Lesson: lessons/08_kv_cache_and_sampling/README.md.
"""
from __future__ import annotations

import argparse
import json
import math
import pickle
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from numba.core.dispatcher import Dispatcher

from . import kernels, kernels_int8
from .batch import generate_batch
from .checkpoint import WeightsError, read_model, read_tokenizer
from .cli import one_line_errors
from .decode import check_fits
from .model import Model
from .sampling import SamplingParams, sample_next
from .tokenizer import Tokenizer
from .weights import resolve


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
                f"Peak memory: {peak_rss_gib():.3f} GiB")


def peak_rss_gib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / (2**30 if sys.platform == "darwin" else 2**20)


# ---- token ids ---------------------------------------------------------------------------

def generate_ids(model: Model, prompt_ids, max_new_tokens=256, sampling=SamplingParams(),
                 stop_ids=(), stats: GenerationStats | None = None) -> Iterator[int]:
    """Yield up to `max_new_tokens` new ids after `prompt_ids`, stopping before any of `stop_ids`."""
    prompt_ids = [int(i) for i in prompt_ids]
    context = model.config.max_position_embeddings
    if not prompt_ids:
        raise ValueError("the prompt is empty")
    check_fits(len(prompt_ids) + 1, context, ": the prompt leaves no room for a reply. Shorten the prompt.")
    stop_ids = set(stop_ids)
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
        self.pending: list[int] = []  # ids whose text is not complete yet
        self.text = ""  # decoded so far
        self.sent = 0  # characters of self.text already given out
        self.stopped = False

    def push(self, token: int) -> str:
        """One more id -> the text that may be given out now (each id is decoded once: linear time)."""
        self.pending.append(token)
        piece = self.tokenizer.decode(self.pending)
        if piece.endswith("\ufffd") and len(self.pending) < 4:  # half a UTF-8 character (at most 4 bytes)
            return ""
        self.pending = []
        start = len(self.text)
        self.text += piece
        for s in self.stop:  # only where the new piece may complete a stop string
            at = self.text.find(s, max(0, start - len(s) + 1))
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


def reply_text(tokenizer: Tokenizer, ids, stop=None) -> str:
    """The text of a whole reply, cut before the first stop string (as streaming it would be)."""
    out = TextStream(tokenizer, stop)
    for token in ids:
        out.push(token)
        if out.stopped:
            break
    return out.text


def stream_ids_text(model: Model, tokenizer: Tokenizer, prompt_ids, max_new_tokens=256, sampling=SamplingParams(),
                    stop=None, stats=None) -> Iterator[str]:
    """Yield the text of the reply to `prompt_ids` piece by piece, up to the end of the turn."""
    out = TextStream(tokenizer, stop)
    for token in generate_ids(model, prompt_ids, max_new_tokens, sampling, tokenizer.stop_ids, stats):
        if piece := out.push(token):
            yield piece
        if out.stopped:
            return
    if piece := out.flush():
        yield piece


def stream_chat(model: Model, tokenizer: Tokenizer, messages, tools=None, max_new_tokens=256, temperature=0.0,
                top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0, seed=None, stop=None,
                stats=None) -> Iterator[str]:
    """Yield the assistant's reply to `messages` (with NanoAgent's tools prompt when `tools` are given)."""
    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                              repetition_penalty=repetition_penalty, seed=seed)
    ids = tokenizer.encode(tokenizer.render_chat(messages, tools))
    yield from stream_ids_text(model, tokenizer, ids, max_new_tokens, sampling, stop, stats)


# ---- what load() returns -----------------------------------------------------------------

class ChatModel:
    """A Model with its Tokenizer: what `nanoagent.load()` returns.

    `.chat(messages, tools=None, **generation)` -> the reply; `.stream(...)` yields it piece by
    piece (keyword arguments as in `stream_chat`); `.logits(ids)` -> (T,V) from one full forward;
    `.model` and `.tokenizer` are the two parts.
    """

    def __init__(self, model: Model, tokenizer: Tokenizer):
        self.model, self.tokenizer = model, tokenizer

    @property
    def config(self):
        return self.model.config

    def logits(self, ids) -> np.ndarray:
        return self.model.logits(ids)

    def stream(self, messages, tools=None, **generation) -> Iterator[str]:
        return stream_chat(self.model, self.tokenizer, messages, tools, **generation)

    def chat(self, messages, tools=None, **generation) -> str:
        return "".join(self.stream(messages, tools, **generation))

    def chat_batch(self, conversations, tools=None, max_new_tokens=256, stop=None, slots: int = 8,
                   **sampling) -> list[str]:
        """The reply to each of several conversations, decoded `slots` at a time (batch.py): the same
        replies as `chat` one by one, sooner. `tools`: a tool list (or None) per conversation;
        `sampling`: temperature, top_p, top_k, min_p, repetition_penalty, seed."""
        each = [None] * len(conversations) if tools is None else tools
        if len(each) != len(conversations):
            raise ValueError(f"{len(each)} tool lists for {len(conversations)} conversations")
        tok = self.tokenizer
        prompts = [tok.encode(tok.render_chat(m, t)) for m, t in zip(conversations, each)]
        replies = generate_batch(self.model, prompts, max_new_tokens, SamplingParams(**sampling), tok.stop_ids, slots)
        return [reply_text(tok, ids, stop) for ids in replies]


def load(path=None, int8: bool = False) -> ChatModel:
    """An HF model folder -> ChatModel; `None` means SmolLM2-135M-Instruct, obtained on first use.

    int8=True quantizes a float folder's weights to int8 while loading; an int8 folder (written by
    `python -m nanoagent.quantize`) loads as int8 either way.
    """
    folder = resolve(path)
    return ChatModel(read_model(folder, int8=int8), read_tokenizer(folder))


# ---- command line -------------------------------------------------------------------------

class CommandLine(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (the flag and what is wrong), status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def number(kind, low=-math.inf, high=math.inf, open_low=False, open_high=False):
    """An argparse type: a finite `kind` (int or float) in the range, else an error that says the range."""
    if high == math.inf:
        wanted = f"{'above' if open_low else 'at least'} {low}"
    else:
        wanted = f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number {wanted}, not {text}")
        if value < low or value > high or (open_low and value == low) or (open_high and value == high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text}")
        return value
    return parse


def add_generation_args(ap: argparse.ArgumentParser) -> None:
    """The flags of one reply (generate's and chat's), each checked before the model loads."""
    ap.add_argument("--max-new-tokens", type=number(int, 1), default=256, help="most tokens of one reply (default 256)")
    ap.add_argument("--temperature", type=number(float, 0), default=0.0, help="0 is greedy (default)")
    ap.add_argument("--top-p", type=number(float, 0, 1, open_low=True), default=1.0,
                    help="nucleus sampling: keep the most likely tokens up to this probability, in (0, 1] (default 1)")
    ap.add_argument("--top-k", type=number(int, 0), default=0, help="keep the k most likely tokens (default 0: all)")
    ap.add_argument("--min-p", type=number(float, 0, 1, open_high=True), default=0.0,
                    help="drop tokens below this share of the top one's probability, in [0, 1) (default 0)")
    ap.add_argument("--repetition-penalty", type=number(float, 0, open_low=True), default=1.0,
                    help="above 1 discourages tokens already seen (default 1: none)")
    ap.add_argument("--seed", type=number(int, 0), default=None, help="random seed for sampling")


def generation_kwargs(args) -> dict:
    """The parsed flags of `add_generation_args` as keyword arguments of `ChatModel.stream`."""
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
            "top_k": args.top_k, "min_p": args.min_p, "repetition_penalty": args.repetition_penalty,
            "seed": args.seed}


def json_kind(value) -> str:
    """What a decoded JSON value is, in words: "an object", "a list", "a string", ..."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def read_tools(path: str) -> list[dict]:
    """A JSON file holding a list of tools, OpenAI-style `{"type": "function", "function": {...}}` or bare
    `{name, description, parameters}` -> that list; ValueError naming the file and the tool otherwise."""
    try:
        tools = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    if not isinstance(tools, list):
        raise ValueError(f"{path} holds {json_kind(tools)}; it must hold a JSON list of tools")
    for i, t in enumerate(tools, 1):
        spec = t.get("function", t) if isinstance(t, dict) and t.get("type", "function") == "function" else t
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: tool {i} is {json_kind(spec)}, not an object: give each tool as "
                             '{"type": "function", "function": {...}} or {"name", "description", "parameters"}')
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ValueError(f"{path}: tool {i} has no \"name\" string")
        if not isinstance(spec.get("description", ""), str):
            raise ValueError(f"{path}: tool {i} ({spec['name']}): \"description\" is {json_kind(spec['description'])}, "
                             "not a string")
        if not isinstance(spec.get("parameters", {}), dict):
            raise ValueError(f"{path}: tool {i} ({spec['name']}): \"parameters\" is {json_kind(spec['parameters'])}, "
                             "not a JSON Schema object")
    return tools


def kernels_cached(int8: bool = False) -> bool:
    """Whether Numba's disk cache holds compiled kernels for the current kernels.py (and kernels_int8.py).

    A cheap look, not a guarantee: a module counts as cached when one of its kernels has an index
    file stamped with the module's present source (what Numba itself checks before loading),
    and every kernel of a source file goes stale at once when that file changes.
    """
    def cached(module) -> bool:
        for d in vars(module).values():
            if isinstance(d, Dispatcher) and d.py_func.__module__ == module.__name__:
                try:
                    if d._cache._cache_file._load_index():  # {} when missing or stale
                        return True
                except (AttributeError, OSError, ValueError, EOFError, pickle.UnpicklingError):
                    return True  # no way to tell: say nothing rather than something wrong
        return False
    return cached(kernels) and (not int8 or cached(kernels_int8))


def warm_up(model: Model) -> None:
    """Run the prefill and decoding kernels once on a scratch cache, so that compiling (or loading)
    them is not counted in the speed the stats report."""
    kv = model.new_kv_cache(3)
    model.prefill([0, 0], kv)
    model.decode_step(0, kv)


def main(argv=None) -> None:
    ap = CommandLine(prog="python -m nanoagent.generate",
                     description="Reply to one prompt with SmolLM2-135M-Instruct (greedy by default).")
    ap.add_argument("--prompt", required=True, help="the user message; '-' reads it from stdin")
    ap.add_argument("--system", help="a system prompt (default: SmolLM2's own)")
    ap.add_argument("--model", help="an HF model folder (default: SmolLM2-135M-Instruct, obtained on first use)")
    ap.add_argument("--int8", action="store_true", help="int8 weights (quantized while loading a float folder)")
    add_generation_args(ap)
    ap.add_argument("--tools", help="a JSON file with a list of tools (OpenAI-style or bare {name, description, parameters})")
    ap.add_argument("--no-stream", action="store_true", help="print the reply once it is complete")
    args = ap.parse_args(argv)

    with one_line_errors(WeightsError, ValueError, OSError):  # ContextLengthError is a ValueError
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        if not prompt.strip():
            ap.error("argument --prompt: the message is empty")
        try:
            tools = read_tools(args.tools) if args.tools else None
        except ValueError as e:
            ap.error(f"argument --tools: {e}")
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                   [{"role": "user", "content": prompt}]
        if not kernels_cached(args.int8):
            print("compiling kernels (first run only)", file=sys.stderr, flush=True)
        model = load(args.model, int8=args.int8)
        warm_up(model.model)
        stats = GenerationStats()
        pieces = model.stream(messages, tools=tools, stats=stats, **generation_kwargs(args))
        if args.no_stream:
            print("".join(pieces), flush=True)
        else:
            for piece in pieces:
                print(piece, end="", flush=True)
            print(flush=True)
    print(stats.report(), file=sys.stderr)


if __name__ == "__main__":
    main()
