"""Speed of a GRPO policy update: `python -m nanoagent.bench grpo`.

One group of G replies to one tool-calling prompt (the built-in tools offered, a question
asked), sampled from the model at temperature 1 with no stop token, so every reply has the
same length; then the update (forward, GRPO's loss through the tied head, backward, AdamW at
learning rate 0, so the model stays as it was) timed in alternation two ways: the prompt run
once for the group, each reply continuing it (what `nanoagent.rl` does), and the peer, each
reply laid out whole as prompt + reply. The loss and gradient are the same (tests/test_grpo.py);
the figures are the median seconds of each and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from ..agent import BUILTIN_TOOLS
from ..checkpoint import read_tokenizer
from ..tuner.grpo import GRPOConfig, group_advantages, policy_batches, policy_update, sample_groups
from ..optim import adamw_init
from ..sampling import SamplingParams
from ..threads import blas_line
from ..train import load_model, model_folder

QUESTION = "What is 17% of 2,340, and what time is it in Tokyo now?"


def add_grpo_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default=None, help="model folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--group", type=int, default=8, help="replies to the prompt (default: %(default)s)")
    ap.add_argument("--reply-tokens", type=int, default=48, help="tokens in each reply (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=4, help="rows per forward/backward (default: %(default)s)")
    ap.add_argument("--prompt-tokens", type=int, default=None,
                    help="keep the prompt's last N tokens (default: all of it, about 520 with SmolLM2's tokenizer)")
    ap.add_argument("--repeats", type=int, default=3, help="timed updates of each layout, after one warm-up each")


def bench_grpo(args) -> None:
    folder = model_folder(args.model)
    model, tok = load_model(folder), read_tokenizer(folder)
    tools = [t.schema for t in BUILTIN_TOOLS.values()]
    prompt, _ = tok.encode_chat([{"role": "user", "content": QUESTION}], tools)
    prompt = list(prompt)[-args.prompt_tokens:] if args.prompt_tokens else list(prompt)
    if len(prompt) + args.reply_tokens > model.config.max_position_embeddings:
        sys.exit(f"error: a prompt of {len(prompt)} tokens and replies of {args.reply_tokens} do not fit the model's "
                 f"{model.config.max_position_embeddings} positions (--prompt-tokens, --reply-tokens)")
    cfg = GRPOConfig(group=args.group, max_new_tokens=args.reply_tokens, batch_size=args.batch_size,
                     sampling=SamplingParams(temperature=1.0))
    groups = sample_groups(model, [prompt], cfg, stop_id=None, seeds=[0])
    rewards = np.arange(args.group, dtype=np.float64)[None] % 2  # any two values: the group is kept
    adv, kept = group_advantages(rewards)
    layouts = {share: policy_batches([prompt], groups, adv, kept, tok.im_end_id, args.batch_size, share)
               for share in (True, False)}
    state = adamw_init(model.params)
    print(f"model: {args.model or 'SmolLM2-135M-Instruct'}, float32; a prompt of {len(prompt)} tokens, "
          f"{args.group} replies of {args.reply_tokens} tokens, batches of {args.batch_size}; "
          f"median of {args.repeats} updates each, after a warm-up, alternating; {blas_line()}")
    seconds, inputs = {True: [], False: []}, {}
    for k in range(args.repeats + 1):
        for share in ((True, False) if k % 2 == 0 else (False, True)):
            t0 = time.perf_counter()
            stats, _ = policy_update(model, layouts[share], state, 0.0, cfg)
            seconds[share].append(time.perf_counter() - t0)
            inputs[share] = stats.n_inputs
    reply_tokens = args.group * args.reply_tokens
    for share, name in ((False, "each reply as prompt + reply"), (True, "the prompt once for the group")):
        s = statistics.median(seconds[share][1:])
        print(f"{name:30s} {inputs[share]:6d} tokens through the model  {s:6.2f} s/update  "
              f"{reply_tokens / s:6.1f} reply tokens/s")
    ratio = statistics.median(seconds[False][1:]) / statistics.median(seconds[True][1:])
    print(f"the prompt once: {ratio:.2f}x faster per update")
