"""GRPO on tool-call or instruction-following rewards: `python -m nanoagent.rl --data FILE --group 8 ...`.

The prompts are the training rows' chats (any format the data adapters read) cut before their
first assistant turn, with that turn's calls as the reference ("no call" when it has none);
rows that offer no tools, or whose reference fails the checker, are skipped and counted. Each
round samples `--group` replies to each of `--prompts` prompts, scores them (tuner/rewards.py), and
makes `--updates` GRPO updates on them (tuner/grpo.py; one by default). With `--draw N` a round samples
N prompts and learns from the first `--prompts` of them whose replies' rewards differ, where a
group whose replies all score alike would have left the update short. Checkpoints and
`--resume` work as in SFT (the prompt order and the sampling seeds are functions of the seed and
the step, so a resumed run repeats an unbroken one); every round appends a line to
OUT/log.jsonl and redraws OUT/rewards.png; the run ends by writing the HF folder OUT/model.

With `--task instructions` the prompts are verifiable-instruction items instead (IFEval's form,
written by `python -m nanoagent.data instructions`): the chat is the item's prompt as the user turn
(after `--system`, if given), no tools, and a reply's reward is the share of the item's instructions
it follows plus the format term (rewards.instruction_reward); the log's figures are then reward,
strict and format. IFEval's and IFBench's own prompts never belong in --data: they are the evaluation.

`--rejection N` is the comparison arm, rejection sampling: no training here; each prompt gets N replies
(temperature 1.0 by default), the first with the top reward is kept (with --task instructions: it follows
every instruction and ends at <|im_end|>; with tool calls: its calls match the reference, cleanly written,
or it calls nothing where no call is right), and OUT/rejection.jsonl gets one training chat {"messages":
[..., assistant], "tools"?, "source": "rejection"} per prompt that got one, for `python -m nanoagent.train
--data`. What is judged is saved as it goes (OUT/rejection.progress.jsonl), and `--resume` goes on from it;
`--max-minutes M` stops the sampling at a budget and writes the rows kept so far (the progress file stays,
and `--resume` samples the rest: a kind whose prompts pass one time in ten can take as long as the others
together).
With `--per-kind K` (tool calls), the four kinds keep K rows each, whatever their pass rates: each kind's
prompts are sampled in waves, in a seeded order, until K of them pass or they run out (parallel requests
pass a quarter as often as single calls, and would otherwise be few). Where no call is right and the
row's reply states a number as its answer (a word problem beside tools that do not fit it), a kept reply
must state that number too (rewards.correctness): without it, 49 of a balanced run's 60 no-call rows
were word problems, 47 of them answered with a wrong number. With `--references`, the prompts with calls
that no reply got right go to OUT/references.jsonl with their reference calls as the reply: rows from the
data for what the model does not yet do, which no sampling finds. With `--repair`, a prompt none of
whose replies passes gets its best reply mended by the edits of its instructions' kinds (tuner/repair.py:
lowercase, a title, a postscript, quotes...), kept as "source": "repaired" when the checker then passes
every instruction. It lives here, not in a command of its own, because it is GRPO's sampling and reward
on GRPO's prompts without the update.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from .checkpoint import read_tokenizer
from .data.io import DataError, read_rows
from .data.mix import write_jsonl
from .model import Model
from .optim import AdamWState, lr_at
from .sampling import SamplingParams
from .tokenizer import Tokenizer
from .train import (TrainingError, add_optimizer_args, add_run_control_args, checkpoint, load_model, model_folder,
                    optimizer_state, put_back, restore_args, run_command, save_final, saved_args, stopped_at)

from .tuner.grpo import GRPOConfig, Rollout, grpo_round, round_seeds
from .tuner.prompts import (BALANCE_KINDS, InstructionPrompt, ToolPrompt, balanced_prompts, fingerprint,
                            instruction_prompts, kind, round_prompts, seen_requests, tool_prompts)
from .tuner.rejection import best_reply, right_call_reply, right_calls_by_kind, sample_replies
from .tuner.rewards import FORMAT_WEIGHT, instruction_reward, reward

try:  # the picture is optional: without matplotlib the run says so once and goes on
    from matplotlib.figure import Figure
except ImportError:
    Figure = None


# ---- the command line --------------------------------------------------------------------------------

RUN_ARGS = ("task", "system", "model", "data", "exclude", "sources", "data_split", "data_config", "group", "prompts",
            "draw", "balance", "steps", "epochs", "temperature", "top_p", "top_k", "max_new_tokens",
            "max_prompt_tokens", "beta", "clip_eps", "updates", "format_weight", "lr", "min_lr_ratio", "warmup",
            "weight_decay", "beta1", "beta2", "clip", "batch_size", "slots", "seed")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.rl", description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("toolcalls", "instructions"), default="toolcalls",
                    help="toolcalls: chats with tools, scored against their reference calls; instructions: "
                         "verifiable-instruction items, scored by the IFEval checker (default: %(default)s)")
    ap.add_argument("--system", default=None,
                    help="--task instructions: a system prompt before each user prompt (default: SmolLM2's own)")
    ap.add_argument("--rejection", type=int, default=None, metavar="N",
                    help="rejection sampling instead of GRPO, N replies per prompt; the first with the top reward "
                         "(all its instructions followed; the reference calls) goes to OUT/rejection.jsonl (a training "
                         "file); --slots at a time (default 2N)")
    ap.add_argument("--per-kind", type=int, default=None, metavar="K",
                    help="with --rejection on tool calls: K rows of each kind (simple, multiple, parallel, no call), "
                         "each kind's prompts sampled in a seeded order until K pass or they run out (default: "
                         "every prompt once)")
    ap.add_argument("--repair", action="store_true",
                    help="with --rejection: a prompt none of whose replies passes gets the best one mended by the "
                         "edits of its instructions' kinds (repair.py), kept when the checker then passes it")
    ap.add_argument("--references", action="store_true",
                    help="with --rejection on tool calls: the prompts with calls none of whose replies passes go to "
                         "OUT/references.jsonl too, each with its reference calls as the reply (rows from the data, "
                         "not sampled: what the model does not yet do, to mix in as wanted)")
    ap.add_argument("--model", default=None, help="HF model folder to start from (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--data", default=None, help="training rows: chats with tools (the formats train reads), or with "
                                                 "--task instructions IFEval-form items (python -m nanoagent.data "
                                                 "instructions); the evaluation's items never belong here")
    ap.add_argument("--sources", default=None, metavar="NAME,NAME,...",
                    help="only the rows of these sources (a mix row's family, as in the data build stats)")
    ap.add_argument("--data-split", default="train", help="split of a hub dataset (default: %(default)s)")
    ap.add_argument("--data-config", default=None, help="config name of a hub dataset")
    ap.add_argument("--group", type=int, default=8, help="G: replies sampled per prompt (default: %(default)s)")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per round (default: %(default)s)")
    ap.add_argument("--draw", type=int, default=None,
                    help="prompts sampled per round, more than --prompts: the update takes the first --prompts "
                         "of them whose replies' rewards differ (dynamic sampling; default: --prompts)")
    ap.add_argument("--balance", nargs="?", const="calls", choices=tuple(BALANCE_KINDS), default=None,
                    help="every round's prompts taken from each kind in turn: calls (with a reference call and "
                         "without, the default) or kinds (BFCL's simple, multiple, parallel and no call)")
    ap.add_argument("--exclude", default=None, metavar="FILE,FILE,...",
                    help="training files (a fine-tune's mixes) whose rows' user requests are left out of the "
                         "prompts: GRPO on requests the SFT did not see")
    ap.add_argument("--steps", type=int, default=None, help="rounds, each one policy update (default: from --epochs)")
    ap.add_argument("--epochs", type=float, default=1.0, help="passes over the prompts when --steps is not given")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)")
    ap.add_argument("--top-p", type=float, default=1.0, help="sampling top-p (default: %(default)s)")
    ap.add_argument("--top-k", type=int, default=0, help="sampling top-k, 0: off (default: %(default)s)")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="longest reply (default: %(default)s)")
    ap.add_argument("--max-prompt-tokens", type=int, default=1024, help="longer prompts are skipped (default: %(default)s)")
    ap.add_argument("--beta", type=float, default=0.04, help="KL weight, 0: no reference model (default: %(default)s)")
    ap.add_argument("--clip-eps", type=float, default=0.2, help="ratio clipped to [1-eps, 1+eps] (default: %(default)s)")
    ap.add_argument("--updates", type=int, default=1, help="policy updates on each round's samples (default: %(default)s)")
    ap.add_argument("--format-weight", type=float, default=FORMAT_WEIGHT, help="weight of the format term (default: %(default)s)")
    add_optimizer_args(ap, lr=1e-6, min_lr_ratio=1.0, weight_decay=0.0)
    ap.add_argument("--warmup", type=int, default=0, help="warmup rounds (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=2, help="sequences per forward/backward (default: %(default)s)")
    ap.add_argument("--slots", type=int, default=0, help="sequences decoded together; groups wait for free slots "
                                                          "(default: --group x --prompts, a whole round at once)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="end the run after the round that passes this many minutes (of this invocation): "
                         "the final model is written then, as after the last round; with --rejection, sampling "
                         "stops after the chunk of prompts that passes it and the rows kept so far are written")
    add_run_control_args(ap, "rounds", "runs/grpo", "OUT/checkpoint, OUT/model, OUT/log.jsonl, OUT/rewards.png",
                         "prompt order and sampling")
    args = ap.parse_args(argv)
    if args.data is None and not args.resume:
        ap.error("--data is required (with --resume the checkpoint's settings are used)")
    if args.group < 2 or args.prompts < 1:
        ap.error("--group must be at least 2 (advantages compare replies) and --prompts at least 1")
    if args.task == "instructions" and (args.balance or args.sources or args.exclude):
        ap.error("--balance, --sources and --exclude are for --task toolcalls (they sort prompts by their "
                 "reference calls and requests)")
    if args.task == "toolcalls" and args.system is not None:
        ap.error("--system is for --task instructions (a tool chat brings its own system prompt)")
    if args.repair and args.rejection is None:
        ap.error("--repair is for --rejection N (it mends the sampled replies no update learns from)")
    if args.repair and args.task != "instructions":
        ap.error("--repair is for --task instructions (it mends a reply by its instructions' kinds)")
    if args.references and (args.rejection is None or args.task != "toolcalls"):
        ap.error("--references is for --rejection N on --task toolcalls (a prompt's reference calls are its row)")
    if args.per_kind is not None and (args.rejection is None or args.task != "toolcalls" or args.per_kind < 1):
        ap.error("--per-kind K is for --rejection N on --task toolcalls, with K >= 1 (rows kept of each kind)")
    if args.rejection is not None and args.rejection < 1:
        ap.error("--rejection N: N >= 1 replies per prompt")
    if args.draw is not None and args.draw < args.prompts:
        ap.error(f"--draw must be at least --prompts ({args.prompts}): it is how many prompts a round samples")
    if not 0 < args.clip_eps < 1 or args.beta < 0 or args.temperature <= 0:
        ap.error("--clip-eps must lie in (0, 1), --beta be >= 0 and --temperature > 0")
    if min(args.updates, args.batch_size, args.max_new_tokens, args.max_prompt_tokens) < 1:
        ap.error("--updates, --batch-size, --max-new-tokens and --max-prompt-tokens must be at least 1")
    return args


# ---- the run ------------------------------------------------------------------------------------------

def drawn(args: argparse.Namespace) -> int:
    """Prompts a round samples: --draw, else --prompts (a checkpoint from before --draw has none)."""
    return args.draw or args.prompts


@dataclass
class Run:
    args: argparse.Namespace
    model: Model
    ref: Model | None  # the starting model, for the KL term (None when beta is 0)
    state: AdamWState
    trainer: dict  # what the checkpoint saves: step, history, settings, data fingerprint
    prompts: list[ToolPrompt] | list[InstructionPrompt]
    cfg: GRPOConfig
    tokenizer: Tokenizer
    tokenizer_json: Path
    steps: int
    log: Callable[[str], None]
    timed_out: bool = False  # --max-minutes ended the run before its last round

    @property
    def ckpt(self) -> Path:
        return self.args.out / "checkpoint"

    @property
    def log_path(self) -> Path:
        return self.args.out / "log.jsonl"


def read_prompts(args: argparse.Namespace, tok: Tokenizer) -> tuple[list, dict]:
    """--data's rows -> the prompts of --task, and counts of the rows skipped and why; DataError when none is left."""
    rows = read_rows(args.data, args.data_config, args.data_split)
    if args.task == "instructions":
        prompts, skipped = instruction_prompts(rows, tok, args.max_prompt_tokens, args.system)
        need = ('an instruction prompt ({}): rows must be IFEval-form items {{"prompt", "instruction_id_list", '
                '"kwargs"}} (python -m nanoagent.data instructions writes them)')
    else:
        sources = frozenset(args.sources.split(",")) if args.sources else None
        seen = seen_requests(args.exclude) if args.exclude else frozenset()
        prompts, skipped = tool_prompts(rows, tok, args.max_prompt_tokens, sources, seen)
        need = "a tool prompt ({}): rows must be chats with tools and an assistant turn"
    if not prompts:
        why = ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "no rows"
        raise DataError(f"no row of {args.data} makes " + need.format(why))
    return prompts, skipped


def setup(args: argparse.Namespace) -> Run:
    """The model (or the checkpoint to resume), the reference model, the prompts and the optimizer state."""
    trainer = restore_args(args, RUN_ARGS) if args.resume else {"step": 0, "history": []}
    start_dir = model_folder(args.model)
    model_dir = args.out / "checkpoint" if args.resume else start_dir
    model = load_model(model_dir)
    tok = read_tokenizer(model_dir)
    if tok is None:
        raise TrainingError(f"{model_dir} has no tokenizer.json: GRPO renders chats and reads replies as text")
    prompts, skipped = read_prompts(args, tok)
    state = optimizer_state(args, trainer, fingerprint(prompts), model, model_dir, RUN_ARGS)
    draw = drawn(args)
    steps = args.steps or max(1, math.ceil(args.epochs * len(prompts) / draw))
    trainer["steps"] = steps
    cfg = GRPOConfig(group=args.group, max_new_tokens=args.max_new_tokens,
                     sampling=SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k),
                     clip_eps=args.clip_eps, beta=args.beta, updates=args.updates, batch_size=args.batch_size,
                     slots=args.slots, max_groups=args.prompts, beta1=args.beta1,
                     beta2=args.beta2, weight_decay=args.weight_decay, grad_clip=args.clip or None)
    ref = load_model(start_dir) if args.beta > 0 else None
    log = (lambda s: None) if args.quiet else (lambda s: tqdm.write(s, file=sys.stderr))
    if args.task == "instructions":
        kinds = "instruction items"
    else:
        if args.balance is True:  # a checkpoint from when --balance took no value
            args.balance = "calls"
        counts = Counter(kind(p, args.balance or "kinds") for p in prompts)
        if args.balance and len(counts) < 2:
            raise DataError(f"--balance {args.balance} needs prompts of two kinds or more; {args.data} has only "
                            f"{next(iter(counts))} prompts")
        kinds = ", ".join(f"{counts[k]} {k}" for k in BALANCE_KINDS[args.balance or "kinds"] if counts[k])
    notes = "".join(f", {n} rows skipped ({reason})" for reason, n in skipped.items())
    of_drawn = f" (the first of {draw} drawn whose rewards differ)" if draw > args.prompts else ""
    log(f"{len(prompts)} prompts ({kinds}){notes}; {steps} rounds "
        f"of {args.prompts} prompts{of_drawn} x {args.group} replies, beta {args.beta}, lr {args.lr}")
    if Figure is None:
        log("matplotlib is not installed: no rewards.png (pip install matplotlib); the log is written")
    return Run(args, model, ref, state, trainer, prompts, cfg, tok, model_dir / "tokenizer.json", steps, log)


def reward_fn(run: Run, chosen: list[int]):
    """The reward of a rollout answering prompt `chosen[i]`: figures for the log, "reward" for GRPO ("correct":
    the reference calls matched, or "strict": the share of instructions followed)."""
    def score(i: int, r: Rollout) -> dict:
        p = run.prompts[chosen[i]]
        text = run.tokenizer.decode(r.reply[:-1] if r.finish_reason == "stop" else r.reply)
        if isinstance(p, InstructionPrompt):
            rw = instruction_reward(text, r.finish_reason, p.item, run.args.format_weight)
            return {"reward": rw.total, "strict": rw.correct, "format": rw.format}
        rw = reward(text, r.finish_reason, p.reference, p.tools, run.args.format_weight, p.answer)
        return {"reward": rw.total, "correct": rw.correct, "format": rw.format}
    return score


def step_once(run: Run, step: int) -> dict:
    """Round number `step` (0-based): sample, score, update -> its history entry (also appended to the log)."""
    a = run.args
    lr = lr_at(step, a.lr, a.warmup, run.steps, a.min_lr_ratio)
    draw = drawn(a)
    chosen = (balanced_prompts(run.prompts, step, draw, a.seed, a.balance) if a.balance else
              round_prompts(len(run.prompts), step, draw, a.seed))
    score, scored = reward_fn(run, chosen), []  # (prompt position, figures) of every reply of the round

    def score_and_keep(i: int, rollout: Rollout) -> dict:
        scored.append((i, score(i, rollout)))
        return scored[-1][1]
    try:
        r = grpo_round(run.model, [run.prompts[i].ids for i in chosen], score_and_keep, run.cfg, run.state,
                       lr, round_seeds(a.seed, step, len(chosen)), run.tokenizer.im_end_id, run.tokenizer.im_end_id,
                       run.ref)
    except TrainingError as e:
        raise stopped_at(run, f"round {step + 1}", e) from None
    u = r.updates[-1] if r.updates else None  # the last update's figures (None: every group was skipped)
    p, g = np.unravel_index(np.argmax(r.rewards), r.rewards.shape)
    best = r.groups[p][g]  # the round's best reply: a sample to read
    entry = {"step": step + 1, "lr": lr, **r.figures, "reward_std": float(r.rewards.std()),
             "kept_groups": r.kept, "skipped_groups": r.skipped, "surplus_groups": r.surplus,
             **{k: None if u is None else getattr(u, k) for k in ("loss", "kl", "clip_frac", "grad_norm")},
             "reply_tokens": r.reply_tokens, "trained_tokens": sum(x.n_inputs for x in r.updates),
             "gen_seconds": round(r.gen_seconds, 3), "update_seconds": round(r.update_seconds, 3),
             "sample": run.tokenizer.decode(best.reply)[:400]}
    if a.task == "toolcalls":  # the share of replies with the reference calls, per BFCL kind drawn this round
        by_kind = defaultdict(list)
        for i, figures in scored:
            by_kind[kind(run.prompts[chosen[i]], "kinds")].append(figures["correct"])
        entry["correct_by_kind"] = {k: sum(v) / len(v) for k, v in by_kind.items()}
    run.trainer["history"].append(entry)
    with open(run.log_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return entry


def rewind_log(run: Run) -> None:
    """Keep the log's lines up to the checkpoint's step: a resumed run appends the rounds after it."""
    run.args.out.mkdir(parents=True, exist_ok=True)
    keep = [json.dumps(h) for h in run.trainer["history"]]
    tmp = run.log_path.with_name(f".{run.log_path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    tmp.replace(run.log_path)


def plot_history(history: list[dict], out: Path) -> Path | None:
    """Mean reward (with its correct or strict and format parts), the KL to the reference and, for tool calls,
    the share of correct replies per BFCL kind over the rounds -> a PNG."""
    if Figure is None or not history:
        return None
    steps = [h["step"] for h in history]
    by_kind = [h.get("correct_by_kind") for h in history]
    panels = 3 if any(by_kind) else 2
    fig = Figure(figsize=(7, 2.5 * panels), dpi=120)
    top, bottom, *kind_axes = fig.subplots(panels, 1, sharex=True)
    part = "strict" if "strict" in history[0] else "correct"  # instructions followed, or calls right
    for key, label in (("reward", "mean reward"), (part, part), ("format", "format rate")):
        top.plot(steps, [h[key] for h in history], label=label, lw=1.5 if key == "reward" else 1)
    top.set_ylabel("per reply")
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    kl = [(h["step"], h["kl"]) for h in history if h.get("kl") is not None]
    if kl:
        bottom.plot(*zip(*kl), color="tab:red", lw=1)
    bottom.set_ylabel("KL to the start (k3)")
    bottom.grid(alpha=0.3)
    for ax in kind_axes:  # each kind's share of correct replies, over the last 5 rounds that drew it (one is noisy)
        for k in BALANCE_KINDS["kinds"]:
            points = [(step, d[k]) for step, d in zip(steps, by_kind) if d and k in d]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, [np.mean(ys[max(0, j - 4):j + 1]) for j in range(len(ys))], label=k, lw=1)
        ax.set_ylabel("correct, by kind\n(mean of 5 draws)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=4)
    fig.axes[-1].set_xlabel("round")
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, format="png")
    tmp.replace(out)
    return out


def train_rounds(run: Run) -> int:
    """Rounds from the checkpoint's (or 0) until the end, --stop-after or --max-minutes -> the rounds done in all."""
    a, start = run.args, run.trainer["step"]
    end = run.steps if a.stop_after is None else min(run.steps, start + a.stop_after)
    rewind_log(run)
    t0, sampled, trained, gen_s, update_s = time.perf_counter(), 0, 0, 0.0, 0.0
    with tqdm(total=run.steps, initial=start, desc="grpo", unit="round", disable=a.quiet, file=sys.stderr) as bar:
        for step in range(start, end):
            e = step_once(run, step)
            sampled, trained = sampled + e["reply_tokens"], trained + e["trained_tokens"]
            gen_s, update_s = gen_s + e["gen_seconds"], update_s + e["update_seconds"]
            bar.update(1)
            bar.set_postfix({"reward": f"{e['reward']:.3f}", "fmt": f"{e['format']:.2f}",  # a dict keeps this order
                             "kl": "-" if e["kl"] is None else f"{e['kl']:.4f}",
                             "gen_tok_s": f"{sampled / max(gen_s, 1e-9):.1f}",  # reply tokens per second of sampling
                             "train_tok_s": f"{trained / max(update_s, 1e-9):.0f}"})  # through forward + backward
            plot_history(run.trainer["history"], a.out / "rewards.png")
            done = step + 1
            if a.max_minutes is not None and done < end and time.perf_counter() - t0 > 60 * a.max_minutes:
                run.timed_out = True
                run.log(f"--max-minutes {a.max_minutes} reached after round {done}")
                return done
            if a.save_every and done % a.save_every == 0 and done < run.steps:
                checkpoint(run, done)
    return end


def finish(run: Run, done: int) -> dict:
    summary = {"history": run.trainer["history"], "checkpoint": str(run.ckpt), "log": str(run.log_path)}
    checkpoint(run, done)
    if done < run.steps and not run.timed_out:
        run.log(f"stopped at round {done} of {run.steps}; go on with: python -m nanoagent.rl --resume --out "
                f"{run.args.out}")
        return summary | {"done": False}
    return summary | save_final(run)


# ---- rejection sampling: the comparison arm ---------------------------------------------------------------

REJECTION_ARGS = ("task", "system", "rejection", "per_kind", "repair", "model", "data", "exclude", "sources",
                  "data_split", "data_config", "temperature", "top_p", "top_k", "max_new_tokens", "max_prompt_tokens",
                  "slots", "seed")
CHUNK = 32  # prompts sampled between two writes of the progress file


@dataclass
class Progress:
    """OUT/rejection.progress.jsonl, what --resume goes on from: a first line with the run's settings and
    its prompts' fingerprint, then a line per prompt judged, {"wave", "at" (its place in the wave), "kept":
    [text, source] or null}, appended and synced after every CHUNK prompts."""
    path: Path
    data: str  # the prompts' fingerprint
    done: dict  # (wave, at) -> the kept reply, or None
    made_out: bool = False  # OUT made by this run: taken away again when it writes nothing

    @classmethod
    def start(cls, args: argparse.Namespace, data: str) -> Progress:
        made_out = not args.out.exists()
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "rejection.progress.jsonl"
        path.write_text(json.dumps({"args": saved_args(args, REJECTION_ARGS), "data": data}) + "\n")
        return cls(path, data, {}, made_out)

    @classmethod
    def resume(cls, args: argparse.Namespace) -> Progress:
        """The saved progress, with the run's own settings put back into `args` (as a GRPO checkpoint's are).
        A line cut off by a crash is the last one: it is cut from the file, and its prompt sampled again."""
        path = args.out / "rejection.progress.jsonl"
        if not path.is_file():
            raise TrainingError(f"--resume: {path} does not exist (no rejection run to go on with); run without "
                                "--resume")
        text = path.read_bytes()
        whole = text[:text.rfind(b"\n") + 1]
        if len(whole) < len(text):
            with path.open("r+b") as f:
                f.truncate(len(whole))
        head, *lines = (json.loads(line) for line in whole.decode().splitlines())
        put_back(args, head["args"], REJECTION_ARGS)
        return cls(path, head["data"], {(r["wave"], r["at"]): tuple(r["kept"]) if r["kept"] else None for r in lines})

    def add(self, wave: int, results: dict[int, tuple[str, str] | None]) -> None:
        with self.path.open("a") as f:
            f.writelines(json.dumps({"wave": wave, "at": j, "kept": kept}) + "\n" for j, kept in results.items())
            f.flush()
            os.fsync(f.fileno())
        self.done.update(((wave, j), kept) for j, kept in results.items())

    def drop(self) -> None:
        """Done with: the rows are written, or there are none (then OUT goes too, if this run made it)."""
        self.path.unlink()
        if self.made_out and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()


def n_prompts(n: int) -> str:
    """'1 prompt', 'N prompts'."""
    return f"{n} prompt{'s' * (n != 1)}"


def tool_row(p: ToolPrompt, turn: dict, source: str) -> dict:
    """A training chat: the prompt's chat, then `turn` as the assistant's reply, with the prompt's tools."""
    return {"messages": list(p.messages) + [{"role": "assistant", **turn}], "tools": p.tools, "source": source}


def rejection_sample(args: argparse.Namespace) -> dict:
    """--rejection N: N replies to each prompt, the passing ones as training chats in OUT/rejection.jsonl;
    resumable from OUT/rejection.progress.jsonl (removed once the rows are written)."""
    progress = Progress.resume(args) if args.resume else None  # the saved settings first: they choose the prompts
    folder = model_folder(args.model)
    model, tok = load_model(folder), read_tokenizer(folder)
    if tok is None:
        raise TrainingError(f"{folder} has no tokenizer.json: rejection sampling renders chats and reads replies")
    prompts, skipped = read_prompts(args, tok)
    if progress is None:
        progress = Progress.start(args, fingerprint(prompts))
    elif progress.data != fingerprint(prompts):
        raise TrainingError(f"--resume: the prompts differ from those {progress.path} was sampled on (the data "
                            "or the model's tokenizer changed); run without --resume")
    sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    system = [{"role": "system", "content": args.system}] if args.system else []
    deadline = None if args.max_minutes is None else time.perf_counter() + 60 * args.max_minutes
    unsampled = set()  # prompts left when --max-minutes ran out (by id): neither judged nor counted

    def out_of_time() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    def keep(p, replies: list[tuple[str, str]]) -> tuple[str, str] | None:
        if args.task == "instructions":
            return best_reply(replies, p.item, args.repair)
        return right_call_reply(replies, p)

    def judge(batch: list, wave: int) -> list[tuple[str, str] | None]:
        """The kept reply of each prompt of the wave: read from the progress file, or sampled CHUNK by CHUNK."""
        seeds = round_seeds(args.seed + wave, 0, len(batch))
        todo = [j for j in range(len(batch)) if (wave, j) not in progress.done]
        desc = f"sampling, wave {wave + 1}" if args.per_kind else "sampling"
        with tqdm(total=args.rejection * len(todo), desc=desc, unit="reply", file=sys.stderr,
                  disable=args.quiet or not todo or out_of_time()) as bar:
            for start in range(0, len(todo), CHUNK):
                if out_of_time():  # the rest of this wave, and every later one, is left for --resume
                    unsampled.update(id(batch[j]) for j in todo[start:])
                    break
                chunk = todo[start:start + CHUNK]
                replies = sample_replies(model, [batch[j] for j in chunk], args.rejection, args.max_new_tokens,
                                         sampling, tok.im_end_id, args.slots or 2 * args.rejection,
                                         [seeds[j] for j in chunk], bar)
                progress.add(wave, {j: keep(batch[j], [(tok.decode(ids), reason) for ids, reason in group])
                                    for j, group in zip(chunk, replies)})
        return [progress.done.get((wave, j)) for j in range(len(batch))]
    if args.task == "instructions":
        kept = list(zip(prompts, judge(prompts, 0)))
    else:
        kept = right_calls_by_kind(prompts, args.per_kind, args.seed, judge)
    kept = [(p, k) for p, k in kept if id(p) not in unsampled]  # the prompts judged (all, without --max-minutes)
    if args.task == "instructions":
        rows = [{"messages": system + [{"role": "user", "content": p.item["prompt"]},
                                       {"role": "assistant", "content": k[0]}], "source": k[1]} for p, k in kept if k]
    else:
        rows = [tool_row(p, {"content": k[0]}, k[1]) for p, k in kept if k]
        by_kind = Counter(kind(p, "kinds") for p, k in kept if k)
        of_kind = Counter(kind(p, "kinds") for p, _ in kept)
        print("kept by kind: " + ", ".join(f"{by_kind[k]} of {of_kind[k]} {k}" for k in BALANCE_KINDS["kinds"]
                                           if of_kind[k]))
    out_of_time = (f"--max-minutes {args.max_minutes:g} ran out with {n_prompts(len(unsampled))} not sampled"
                   if unsampled else "")
    if not rows and unsampled:
        raise DataError(f"{out_of_time}, and none of the {len(kept)} sampled got a right reply; nothing written "
                        f"(python -m nanoagent.rl --resume --out {args.out} samples the rest)")
    if not rows:
        progress.drop()
        raise DataError(f"none of the {len(kept)} prompts got a right reply in {args.rejection} samples; nothing "
                        f"written (try a larger N{', or --repair' if args.task == 'instructions' else ''})")
    out = args.out / "rejection.jsonl"
    write_jsonl(rows, out)
    if args.references:
        missed = [tool_row(p, {"content": "", "tool_calls": p.reference}, "reference")
                  for p, k in kept if not k and p.reference]
        write_jsonl(missed, args.out / "references.jsonl")
    if not unsampled:
        progress.drop()
    passed, repaired = (sum(r["source"] == s for r in rows) for s in ("rejection", "repaired"))
    notes = "".join(f", {n} rows skipped ({reason})" for reason, n in skipped.items())
    mended = f", {repaired} more mended (--repair)" if args.repair else ""
    print(f"{passed} of {len(kept)} prompts got a right reply in {args.rejection} samples{mended}{notes}; "
          f"wrote {out} (python -m nanoagent.train --data {out})")
    if args.references:
        print(f"{n_prompts(len(missed))} with calls got no reply right: their reference calls are in "
              f"{args.out / 'references.jsonl'}")
    if unsampled:
        print(f"{out_of_time}; the rows kept so far are written, and python -m nanoagent.rl --resume --out "
              f"{args.out} samples the rest")
    return {"prompts": len(kept), "passed": passed, "repaired": repaired, "data": str(out),
            **({"references": len(missed)} if args.references else {})}


def run(argv=None) -> dict:
    """The whole command; returns a summary (per-round history, output folders; with --rejection, the counts and
    the file written)."""
    args = parse_args(argv)
    if args.rejection is not None:
        return rejection_sample(args)
    r = setup(args)
    return finish(r, train_rounds(r))


def main(argv=None) -> None:
    run_command(run, argv, "nanoagent.rl")


if __name__ == "__main__":
    main()
