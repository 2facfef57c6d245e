"""Fine-tuning on a CPU: `python -m nanoagent.train --data FILE --loss sft|dft`.

One optimizer step: for each of `--grad-accum` micro-batches, the forward pass, the loss
through the tied LM head (assistant tokens only), and the backward pass adding into one
gradient dict; then global-norm clipping and one AdamW update at the scheduled learning rate.
Checkpoints (weights, optimizer moments, the run's state) are written atomically, and a run
resumed from one repeats, step for step, the losses of a run that never stopped: the data
order is a function of (seed, epoch) only. The run ends by writing a normal HF folder.
Lesson: lessons/13_finetune/README.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from .checkpoint import WeightsError, atomic_dir, is_int8_folder, read_model, read_tokenizer, write_folder
from .cli import one_line_errors
from .data.batch import Batch, Example, collate, fingerprint, load_examples, micro_batch
from .data.io import DataError
from .loss import KINDS, lm_head_loss
from .model import Model
from .optim import AdamWState, adamw_init, adamw_step, clip_scale, global_norm, load_state, lr_at, save_state
from .weights import resolve

EMBED = "model.embed_tokens.weight"


class TrainingError(RuntimeError):
    """A run that cannot start or go on (bad data, diverged loss); the message says what to do."""


# ---- one optimizer step, and evaluation ------------------------------------------------------

@dataclass
class StepResult:
    loss: float  # the trained loss (SFT or DFT), mean over the step's counted tokens
    ce: float  # cross-entropy over the same tokens (equals loss for SFT)
    grad_norm: float  # before clipping
    n_tokens: int  # counted (target) tokens
    n_inputs: int  # input tokens processed, padding excluded


def train_step(model: Model, batches: list[Batch], state: AdamWState, lr: float, kind: str = "sft",
               beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0, clip: float | None = 1.0) -> StepResult:
    """Forward, loss and backward over each micro-batch (gradients added up), then one AdamW update.

    The loss is the mean over all counted tokens of the step, so accumulation over micro-batches
    equals one big batch. Raises TrainingError, before touching the weights, on a NaN/inf loss.
    """
    denom = sum(int(b["mask"].sum()) for b in batches)
    grads: dict[str, np.ndarray] | None = None
    loss = ce = 0.0
    n_inputs = 0
    for b in batches:
        h, caches = model.forward(b["inputs"])
        out = lm_head_loss(h, model.params[EMBED], b["targets"], b["mask"], kind=kind, denom=max(denom, 1),
                           dwte=None if grads is None else grads[EMBED])
        del h
        if not math.isfinite(out.loss):
            raise TrainingError(f"the loss is {out.loss}")
        loss += out.loss
        ce += out.ce_sum / max(denom, 1)
        n_inputs += int(b["lengths"].sum())
        grads = model.backward(out.dh, caches, grads or {EMBED: out.dwte}, free_caches=True)  # the head's dW is in
        del out, caches
    norm = global_norm(grads)
    if not math.isfinite(norm):
        raise TrainingError(f"the gradient norm is {norm}")
    adamw_step(model.params, grads, state, lr, beta1, beta2, eps, weight_decay, clip_scale(norm, clip))
    return StepResult(loss, ce, norm, denom, n_inputs)


def evaluate(model: Model, batches) -> dict:
    """Held-out means over the assistant tokens: cross-entropy ("loss"), the DFT loss p * ce
    ("dft_loss") and the target probability ("p"; DFT's gradient is that of -p)."""
    ce = dft = p = n = 0.0
    for b in batches:
        h, _ = model.forward(b["inputs"])
        out = lm_head_loss(h, model.params[EMBED], b["targets"], b["mask"], kind="dft", denom=1, backward=False)
        ce, dft, p, n = ce + out.ce_sum, dft + out.loss, p + out.p_sum, n + out.n_tokens  # loss: sum of p * ce
    n1 = max(n, 1)
    return {"loss": ce / n1, "dft_loss": dft / n1, "p": p / n1, "tokens": int(n)}


# ---- checkpoints -------------------------------------------------------------------------------

def save_checkpoint(dest: Path, model: Model, tokenizer_json: Path | None, state: AdamWState | None = None,
                    trainer: dict | None = None) -> None:
    """A model folder, plus the optimizer's moments and the run's state, written atomically:
    an interrupted save leaves the last checkpoint whole."""
    with atomic_dir(dest) as tmp:
        write_folder(tmp, model.config, model.params, tokenizer_json)
        if state is not None:
            save_state(state, tmp / "optimizer.safetensors")
        if trainer is not None:
            (tmp / "trainer_state.json").write_text(json.dumps(trainer, indent=1) + "\n")


def model_folder(path) -> Path:
    """`path` if it holds config.json and model.safetensors (token-id data needs no tokenizer.json),
    else `weights.resolve(path)`: the default model when None, or a clear error."""
    if path is not None and all((Path(path) / f).is_file() for f in ("config.json", "model.safetensors")):
        return Path(path)
    return resolve(path)


def load_model(folder: Path) -> Model:
    """A model folder -> a float32 Model whose parameters are writable arrays of its own."""
    if is_int8_folder(folder):
        raise TrainingError(f"{folder} is an int8 checkpoint, for inference only: fine-tune the float model it "
                            "was made from, then quantize the result.")
    return read_model(folder, dtype=np.float32).own_params()


# ---- the run -------------------------------------------------------------------------------------

RUN_ARGS = ("data", "data_split", "data_config", "eval_data", "eval_fraction", "loss", "lr", "min_lr_ratio",
            "warmup", "weight_decay", "beta1", "beta2", "clip", "batch_size", "grad_accum", "seq_len", "pack",
            "steps", "epochs", "seed", "model", "replay")


def add_optimizer_args(ap: argparse.ArgumentParser, lr: float, min_lr_ratio: float, weight_decay: float) -> None:
    """AdamW and its schedule, as every training command takes them (the defaults are the command's)."""
    ap.add_argument("--lr", type=float, default=lr, help="peak learning rate (default: %(default)s)")
    ap.add_argument("--min-lr-ratio", type=float, default=min_lr_ratio,
                    help="the cosine ends at lr * this; 1: constant (default: %(default)s)")
    ap.add_argument("--weight-decay", type=float, default=weight_decay,
                    help="AdamW decoupled decay, matrices only (default: %(default)s)")
    ap.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1 (default: %(default)s)")
    ap.add_argument("--beta2", type=float, default=0.95, help="AdamW beta2 (default: %(default)s)")
    ap.add_argument("--clip", type=float, default=1.0,
                    help="clip the global gradient norm to this, 0: off (default: %(default)s)")


def add_run_control_args(ap: argparse.ArgumentParser, unit: str, out: str, holds: str, seed_help: str) -> None:
    """Checkpoints, stopping and resuming, the output folder, the seed and the progress bar."""
    ap.add_argument("--save-every", type=int, default=0, help=f"checkpoint every N {unit} (always at the end)")
    ap.add_argument("--stop-after", type=int, default=None,
                    help=f"stop after this many {unit} in this invocation (a checkpoint is saved); go on with --resume")
    ap.add_argument("--out", type=Path, default=Path(out), help=f"output folder: {holds} (default: %(default)s)")
    ap.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint with its saved settings")
    ap.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default: %(default)s)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="HF model folder to start from (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--data", default=None,
                    help='.jsonl of {"messages": [...], "tools"?: [...]} (or ShareGPT "conversations", or token '
                         '"ids" + "mask"), a .json list of such rows (e.g. glaive), or a hub dataset name')
    ap.add_argument("--replay", action="append", default=[], metavar="FILE:N", type=replay_spec,
                    help="N rows of FILE, drawn at random by --seed, trained beside --data: an earlier stage's rows "
                         "replayed so that a stage keeps what they taught (repeatable)")
    ap.add_argument("--data-split", default="train", help="split of a hub dataset (default: %(default)s)")
    ap.add_argument("--data-config", default=None, help="config name of a hub dataset")
    ap.add_argument("--eval-data", default=None, help="held-out data (same formats); default: a split of --data")
    ap.add_argument("--eval-fraction", type=float, default=0.05, help="share of --data held out when no --eval-data (default: %(default)s)")
    ap.add_argument("--loss", choices=KINDS, default="sft", help="cross-entropy (sft) or Dynamic Fine-Tuning (dft) (default: %(default)s)")
    add_optimizer_args(ap, lr=5e-5, min_lr_ratio=0.1, weight_decay=0.01)
    ap.add_argument("--warmup", type=int, default=None, help="warmup steps (default: 5%% of the steps)")
    ap.add_argument("--batch-size", type=int, default=1, help="sequences per micro-batch (default: %(default)s)")
    ap.add_argument("--grad-accum", type=int, default=8, help="micro-batches per optimizer step (default: %(default)s)")
    ap.add_argument("--seq-len", type=int, default=1024, help="longest sequence; longer chats are cut (default: %(default)s)")
    ap.add_argument("--pack", action="store_true", help="lay several chats into each sequence instead of padding")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: from --epochs)")
    ap.add_argument("--epochs", type=float, default=1.0, help="passes over the data, when --steps is not given (default: %(default)s)")
    ap.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (always at start and end)")
    add_run_control_args(ap, "steps", "runs/finetune", "OUT/checkpoint, and OUT/model at the end",
                         "data order and held-out split")
    args = ap.parse_args(argv)
    if args.data is None and not args.resume:
        ap.error("--data is required (with --resume the checkpoint's settings are used)")
    return args


def replay_spec(text: str) -> list:
    """--replay FILE:N -> [FILE, N] (a list, as the checkpoint's JSON gives it back)."""
    file, _, n = text.rpartition(":")
    if not (file and n.isdigit() and int(n) > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give FILE:N, N rows of FILE (N >= 1)")
    return [file, int(n)]


@dataclass
class Run:
    """Everything one training run holds between steps (built by `setup`)."""
    args: argparse.Namespace
    model: Model
    state: AdamWState
    trainer: dict  # what the checkpoint saves: step, history, evaluations, settings, data fingerprint
    train: list[Example]
    eval_batches: list[Batch]
    steps: int
    warmup: int
    pad_id: int
    tokenizer_json: Path
    log: Callable[[str], None]

    @property
    def ckpt(self) -> Path:
        return self.args.out / "checkpoint"


def restore_args(args: argparse.Namespace, keys=RUN_ARGS) -> dict:
    """--resume: the checkpoint's trainer state, with the run's own settings put back into `args`
    (only how often to evaluate, save or stop may change)."""
    ckpt = args.out / "checkpoint"
    if not (ckpt / "trainer_state.json").is_file():
        raise TrainingError(f"--resume: {ckpt} holds no checkpoint (trainer_state.json). Run without --resume.")
    trainer = json.loads((ckpt / "trainer_state.json").read_text())
    put_back(args, trainer["args"], keys)
    return trainer


def saved_args(args: argparse.Namespace, keys) -> dict:
    """The run's settings among `keys`, as JSON holds them (what --resume puts back)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k in keys}


def put_back(args: argparse.Namespace, saved: dict, keys) -> None:
    """A saved run's settings into `args`; a setting added since it was saved keeps its default."""
    for k in keys:
        if k in saved:
            setattr(args, k, saved[k])


def optimizer_state(args: argparse.Namespace, trainer: dict, fingerprint_: str, model: Model, model_dir: Path,
                    keys=RUN_ARGS) -> AdamWState:
    """The checkpoint's AdamW moments when resuming (the data must be the same), else fresh ones, with the
    run's settings and data fingerprint recorded in `trainer` for a later --resume."""
    if args.resume:
        if trainer["data"] != fingerprint_:
            raise TrainingError(f"the data differs from the checkpoint's (fingerprint {fingerprint_} != "
                                f"{trainer['data']}); resume needs the same data file and settings")
        return load_state(model_dir / "optimizer.safetensors", model.params)
    trainer |= {"args": saved_args(args, keys),
                "data": fingerprint_}
    return adamw_init(model.params)


def setup(args: argparse.Namespace) -> Run:
    """Load the model (or the checkpoint to resume), the data and the optimizer state; check they belong together."""
    trainer = restore_args(args) if args.resume else {"step": 0, "history": [], "evals": []}
    model_dir = args.out / "checkpoint" if args.resume else model_folder(args.model)
    model = load_model(model_dir)
    tok = read_tokenizer(model_dir)
    pad_id = tok.im_end_id if tok is not None else model.config.eos_token_id
    train, evals, skipped = load_examples(args.data, tok, args.seq_len, args.eval_data, args.eval_fraction,
                                          args.seed, args.pack, args.data_split, args.data_config, args.replay)
    V = model.config.vocab_size
    if max(int(e.ids.max()) for e in train + evals) >= V:
        raise TrainingError(f"the data holds token ids >= the model's vocabulary ({V})")
    steps = args.steps or max(1, math.ceil(args.epochs * math.ceil(len(train) / args.batch_size) / args.grad_accum))
    warmup = args.warmup if args.warmup is not None else max(1, round(0.05 * steps)) if steps > 10 else 0
    state = optimizer_state(args, trainer, fingerprint(train), model, model_dir)
    trainer["steps"] = steps
    eval_batches = [collate(evals[i:i + args.batch_size], pad_id) for i in range(0, len(evals), args.batch_size)]
    log = (lambda s: None) if args.quiet else (lambda s: tqdm.write(s, file=sys.stderr))
    notes = "".join(f", {n} rows skipped ({reason})" for reason, n in skipped.items())
    log(f"{len(train)} training sequences{notes}, {len(evals)} held out; "
        f"{steps} steps of {args.grad_accum} x {args.batch_size}, loss {args.loss}, lr {args.lr}")
    return Run(args, model, state, trainer, train, eval_batches, steps, warmup, pad_id, model_dir / "tokenizer.json",
               log)


def evaluate_run(run: Run, step: int) -> None:
    if run.eval_batches:
        e = evaluate(run.model, run.eval_batches) | {"step": step}
        run.trainer["evals"].append(e)
        run.log(f"step {step}: held-out loss (cross-entropy) {e['loss']:.4f}, DFT loss {e['dft_loss']:.4f}, "
                f"mean target probability {e['p']:.4f}")


def checkpoint(run, step: int) -> None:
    """Save the run (this trainer's or rl.py's: any with ckpt, model, tokenizer_json, state, trainer) at `step`."""
    run.trainer["step"] = step
    save_checkpoint(run.ckpt, run.model, run.tokenizer_json, run.state, run.trainer)


def stopped_at(run, where: str, error: Exception) -> TrainingError:
    """The error a failed update ends the run with: where, why, and which checkpoint is intact."""
    last = f"the last good checkpoint is {run.ckpt} (step {run.trainer['step']})" if run.ckpt.exists() else \
        "no checkpoint was saved yet"
    return TrainingError(f"{where}: {error}; stopped without updating the weights. {last}. "
                         "Try a lower --lr, or a lower --clip.")


def step_once(run: Run, step: int) -> StepResult:
    """Optimizer step number `step` (0-based) of the run: its micro-batches, the update, the history entry."""
    a = run.args
    lr = lr_at(step, a.lr, run.warmup, run.steps, a.min_lr_ratio)
    batches = [micro_batch(run.train, step * a.grad_accum + j, a.batch_size, a.seed, run.pad_id)
               for j in range(a.grad_accum)]
    try:
        r = train_step(run.model, batches, run.state, lr, a.loss, a.beta1, a.beta2, 1e-8, a.weight_decay,
                       a.clip or None)
    except TrainingError as e:
        raise stopped_at(run, f"step {step + 1}", e) from None
    run.trainer["history"].append({"step": step + 1, "loss": r.loss, "ce": r.ce, "lr": lr,
                                   "grad_norm": r.grad_norm, "tokens": r.n_tokens})
    return r


def train_steps(run: Run) -> int:
    """Steps from the checkpoint's (or 0) until the end or --stop-after, with evaluations, checkpoints
    and a progress bar as asked -> the number of steps done in all."""
    a, start = run.args, run.trainer["step"]
    end = run.steps if a.stop_after is None else min(run.steps, start + a.stop_after)
    if start == 0 and not run.trainer["evals"]:
        evaluate_run(run, 0)
    t0, tokens = time.perf_counter(), 0
    with tqdm(total=run.steps, initial=start, desc=a.loss, unit="step", disable=a.quiet, file=sys.stderr) as bar:
        for step in range(start, end):
            r = step_once(run, step)
            tokens += r.n_inputs
            bar.update(1)
            bar.set_postfix(loss=f"{r.loss:.4f}", lr=f"{run.trainer['history'][-1]['lr']:.2e}",
                            tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")
            done = step + 1
            if a.eval_every and done % a.eval_every == 0 and done < run.steps:
                evaluate_run(run, done)
            if a.save_every and done % a.save_every == 0 and done < run.steps:
                checkpoint(run, done)
    return end


def finish(run: Run, done: int) -> dict:
    """Save where the run stands; at the end, a last evaluation and the final model folder -> a summary."""
    summary = {"history": run.trainer["history"], "evals": run.trainer["evals"], "checkpoint": str(run.ckpt)}
    if done < run.steps:  # stopped early on purpose: save and say how to go on
        checkpoint(run, done)
        run.log(f"stopped at step {done} of {run.steps}; go on with: "
                f"python -m nanoagent.train --resume --out {run.args.out}")
        return summary | {"done": False}
    if not run.trainer["evals"] or run.trainer["evals"][-1]["step"] != run.steps:
        evaluate_run(run, run.steps)
    checkpoint(run, run.steps)
    return summary | save_final(run)


def save_final(run) -> dict:
    """The trained model as an HF folder, OUT/model -> what the run's summary says of it."""
    final = run.args.out / "model"
    save_checkpoint(final, run.model, run.tokenizer_json)
    run.log(f"wrote {final} (an HF folder: python -m nanoagent.generate --model {final})")
    return {"model": str(final), "done": True}


def run(argv=None) -> dict:
    """The whole command; returns a summary (per-step losses, evaluations, output folders)."""
    r = setup(parse_args(argv))
    return finish(r, train_steps(r))


def run_command(run_fn, argv, module: str) -> None:
    """A training command's errors as one line; Ctrl-C says how to go on."""
    with one_line_errors(TrainingError, WeightsError, DataError,
                         interrupted="interrupted; the last checkpoint (if any) is intact: go on with "
                                     f"python -m {module} --resume --out OUT (the run's own --out)"):
        run_fn(argv)


def main(argv=None) -> None:
    run_command(run, argv, "nanoagent.train")


if __name__ == "__main__":
    main()
