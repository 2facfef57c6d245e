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
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .loss import KINDS, lm_head_loss
from .model import Model
from .optim import AdamWState, adamw_init, adamw_step, clip_scale, global_norm, load_state, lr_at, save_state

EMBED = "model.embed_tokens.weight"


class TrainingError(RuntimeError):
    """A run that cannot start or go on (bad data, diverged loss); the message says what to do."""


# ---- data: rows -> chats -> token examples -----------------------------------------------

CHAT_ROLES = ("system", "user", "assistant", "tool")


def row_to_chat(row: dict) -> tuple[list[dict], list[dict]] | None:
    """One data row -> (messages, tools), or None when it fits no known chat format.

    Rows in the common form, `{"messages": [{"role", "content", "tool_calls"?}], "tools"?}`, are
    used as they are; any other schema (glaive's ShareGPT `conversations` with a `tools` JSON
    string, xlam, hermes, ...) goes through the adapters of `nanoagent.data` (glaive:
    function_call -> an assistant message with `tool_calls`, observation -> a `tool` message).
    """
    messages = row.get("messages")
    if isinstance(messages, list) and messages and all(isinstance(m, dict) and m.get("role") in CHAT_ROLES
                                                       for m in messages):
        tools = row.get("tools") or []
        return messages, json.loads(tools) if isinstance(tools, str) else tools
    from .data import to_messages
    chat = to_messages(row)
    return None if chat is None else (chat["messages"], chat.get("tools") or [])


def read_rows(spec: str, split: str = "train", config: str | None = None) -> list[dict]:
    """A .jsonl/.json/.parquet file, a folder of them, or a hub dataset name -> its rows (data/io.py reads them)."""
    from .data.io import DataError, read_rows as read_data_rows
    try:
        return read_data_rows(spec, config, split)
    except DataError as e:
        raise TrainingError(str(e)) from e


@dataclass
class Example:
    ids: np.ndarray  # (n,) int64: the tokens, at most seq_len + 1 of them
    mask: np.ndarray  # (n,) bool: token i was written by the assistant (carries loss as a target)


def encode_rows(rows, tokenizer, seq_len: int) -> tuple[list[Example], dict]:
    """Rows -> examples cut to seq_len + 1 tokens, and counts of the rows skipped and why.

    A row is a chat (see `row_to_chat`) or pre-tokenized `{"ids": [...], "mask"?: [...]}`.
    Rows that fit no chat format, or keep no assistant token within seq_len + 1, are skipped.
    """
    out, skipped = [], {"not a chat": 0, "no assistant token within --seq-len": 0}
    for n, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise TypeError(f"a row must be a JSON object, got {type(row).__name__}")
            if "ids" in row:
                ids = np.asarray(row["ids"], dtype=np.int64)
                mask = np.asarray(row.get("mask", np.ones(len(ids))), dtype=bool)
                if ids.ndim != 1 or mask.shape != ids.shape:
                    raise ValueError("ids and mask must be two lists of the same length")
            else:
                chat = row_to_chat(row)
                if chat is None:
                    skipped["not a chat"] += 1
                    continue
                if tokenizer is None:
                    raise ValueError("chat rows need a tokenizer.json in the model folder")
                ids, mask = tokenizer.encode_chat(*chat, add_generation_prompt=False)
                ids = np.asarray(ids, dtype=np.int64)
        except (ValueError, KeyError, TypeError) as e:
            raise TrainingError(f"data row {n} is malformed ({type(e).__name__}: {e}). Fix or remove it.") from e
        ids, mask = ids[:seq_len + 1], mask[:seq_len + 1]
        if len(ids) < 2 or not mask[1:].any():
            skipped["no assistant token within --seq-len"] += 1
            continue
        out.append(Example(ids, mask))
    return out, {k: v for k, v in skipped.items() if v}


def pack(examples: list[Example], seq_len: int) -> list[Example]:
    """Whole examples laid end to end into rows of at most seq_len + 1 tokens (attention crosses them)."""
    rows, cur = [], []
    for ex in examples:
        if cur and sum(len(e.ids) for e in cur) + len(ex.ids) > seq_len + 1:
            rows.append(cur)
            cur = []
        cur.append(ex)
    if cur:
        rows.append(cur)
    return [Example(np.concatenate([e.ids for e in r]), np.concatenate([e.mask for e in r])) for r in rows]


class Batch(dict):
    """inputs, targets (B,T) int64, mask (B,T) bool: position t reads inputs[:, :t+1] and predicts
    targets[:, t], which counts where mask[:, t]; lengths (B,) the unpadded input lengths."""


def collate(examples: list[Example], pad_id: int) -> Batch:
    """Right-pad to the longest example; padded targets carry no loss (causal attention never sees them)."""
    T = max(len(e.ids) for e in examples) - 1
    ids = np.full((len(examples), T + 1), pad_id, dtype=np.int64)
    mask = np.zeros((len(examples), T + 1), dtype=bool)
    for b, e in enumerate(examples):
        ids[b, :len(e.ids)], mask[b, :len(e.ids)] = e.ids, e.mask
    lengths = np.array([len(e.ids) - 1 for e in examples])
    return Batch(inputs=ids[:, :-1], targets=ids[:, 1:], mask=mask[:, 1:], lengths=lengths)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch: a function of (seed, epoch) only, so a resumed run sees the same."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def micro_batch(examples, j: int, batch_size: int, seed: int, pad_id: int) -> Batch:
    """Micro-batch number j of the whole run (epochs laid end to end; a short last batch per epoch)."""
    per_epoch = math.ceil(len(examples) / batch_size)
    epoch, k = divmod(j, per_epoch)
    order = epoch_order(len(examples), seed, epoch)
    return collate([examples[i] for i in order[k * batch_size:(k + 1) * batch_size]], pad_id)


def fingerprint(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(e.ids.tobytes())
        h.update(e.mask.tobytes())
    return h.hexdigest()[:16]


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
    """An HF folder (config.json, model.safetensors, tokenizer.json), plus the optimizer and run state.

    Written into a temporary folder renamed over `dest`: an interrupted save leaves the last one whole.
    """
    from safetensors.numpy import save_file
    from .weights import atomic_dir
    with atomic_dir(dest) as tmp:
        model.config.to_json(tmp / "config.json")
        save_file({k: np.ascontiguousarray(v) for k, v in model.params.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        if tokenizer_json is not None and Path(tokenizer_json).is_file():
            shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
        if state is not None:
            save_state(state, tmp / "optimizer.safetensors")
        if trainer is not None:
            (tmp / "trainer_state.json").write_text(json.dumps(trainer, indent=1) + "\n")


def model_folder(path) -> Path:
    """`path` if it holds config.json and model.safetensors (token-id data needs no tokenizer.json),
    else `weights.resolve(path)`: the default model when None, or a clear error."""
    from .weights import resolve
    if path is not None and all((Path(path) / f).is_file() for f in ("config.json", "model.safetensors")):
        return Path(path)
    return resolve(path)


def load_model(folder: Path) -> Model:
    """A model folder -> a float32 Model whose parameters are writable arrays of its own."""
    model = Model.from_folder(folder, dtype=np.float32)
    if not all(isinstance(p, np.ndarray) for p in model.params.values()):
        raise TrainingError(f"{folder} is an int8 checkpoint, for inference only: fine-tune the float model it "
                            "was made from, then quantize the result.")
    return model.own_params()


# ---- the run -------------------------------------------------------------------------------------

RUN_ARGS = ("data", "data_split", "data_config", "eval_data", "eval_fraction", "loss", "lr", "min_lr_ratio",
            "warmup", "weight_decay", "beta1", "beta2", "clip", "batch_size", "grad_accum", "seq_len", "pack",
            "steps", "epochs", "seed", "model")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="HF model folder to start from (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--data", required=True,
                    help='.jsonl of {"messages": [...], "tools"?: [...]} (or ShareGPT "conversations", or token '
                         '"ids" + "mask"), a .json list of such rows (e.g. glaive), or a hub dataset name')
    ap.add_argument("--data-split", default="train", help="split of a hub dataset (default: %(default)s)")
    ap.add_argument("--data-config", default=None, help="config name of a hub dataset")
    ap.add_argument("--eval-data", default=None, help="held-out data (same formats); default: a split of --data")
    ap.add_argument("--eval-fraction", type=float, default=0.05, help="share of --data held out when no --eval-data (default: %(default)s)")
    ap.add_argument("--loss", choices=KINDS, default="sft", help="cross-entropy (sft) or Dynamic Fine-Tuning (dft) (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default: %(default)s)")
    ap.add_argument("--min-lr-ratio", type=float, default=0.1, help="the cosine ends at lr * this (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=None, help="warmup steps (default: 5%% of the steps)")
    ap.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decoupled decay, matrices only (default: %(default)s)")
    ap.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1 (default: %(default)s)")
    ap.add_argument("--beta2", type=float, default=0.95, help="AdamW beta2 (default: %(default)s)")
    ap.add_argument("--clip", type=float, default=1.0, help="clip the global gradient norm to this, 0: off (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=1, help="sequences per micro-batch (default: %(default)s)")
    ap.add_argument("--grad-accum", type=int, default=8, help="micro-batches per optimizer step (default: %(default)s)")
    ap.add_argument("--seq-len", type=int, default=1024, help="longest sequence; longer chats are cut (default: %(default)s)")
    ap.add_argument("--pack", action="store_true", help="lay several chats into each sequence instead of padding")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: from --epochs)")
    ap.add_argument("--epochs", type=float, default=1.0, help="passes over the data, when --steps is not given (default: %(default)s)")
    ap.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (always at start and end)")
    ap.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (always at the end)")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop after this many steps in this invocation (a checkpoint is saved); go on with --resume")
    ap.add_argument("--out", type=Path, default=Path("runs/finetune"), help="output folder: OUT/checkpoint, and OUT/model at the end (default: %(default)s)")
    ap.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint with its saved settings")
    ap.add_argument("--seed", type=int, default=0, help="data order and held-out split (default: %(default)s)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def load_data(args, tokenizer, pad_id):
    """-> (train examples, eval examples, notes) for the run's settings; deterministic given the seed."""
    rows = read_rows(args.data, args.data_split, args.data_config)
    if not rows:
        raise TrainingError(f"{args.data} holds no rows")
    if args.eval_data:
        train_rows, eval_rows = rows, read_rows(args.eval_data, args.data_split, args.data_config)
    else:
        order = np.random.default_rng([args.seed, 1 << 20]).permutation(len(rows))
        n_eval = min(len(rows) - 1, math.ceil(len(rows) * args.eval_fraction)) if args.eval_fraction > 0 else 0
        eval_rows = [rows[i] for i in sorted(order[:n_eval])]
        train_rows = [rows[i] for i in sorted(order[n_eval:])]
    train, skipped = encode_rows(train_rows, tokenizer, args.seq_len)
    evals, _ = encode_rows(eval_rows, tokenizer, args.seq_len)
    if args.pack:
        train = pack(train, args.seq_len)
    if not train:
        why = ", ".join(f"{n} {reason}" for reason, n in skipped.items())
        raise TrainingError(f"no row of {args.data} is a usable example ({why}): rows must be chats with an "
                            "assistant turn (messages, ShareGPT conversations, ...) or token ids with a mask.")
    return train, evals, skipped


def run(argv=None) -> dict:
    """The whole command; returns a summary (per-step losses, evaluations, output folders)."""
    from tqdm import tqdm
    args = parse_args(argv)
    out: Path = args.out
    ckpt = out / "checkpoint"
    trainer: dict = {"step": 0, "history": [], "evals": []}
    if args.resume:
        if not (ckpt / "trainer_state.json").is_file():
            raise TrainingError(f"--resume: {ckpt} holds no checkpoint (trainer_state.json). Run without --resume.")
        trainer = json.loads((ckpt / "trainer_state.json").read_text())
        for k in RUN_ARGS:  # the run's own settings; only how often to evaluate/save/stop may change
            setattr(args, k, trainer["args"][k])
        model_dir = ckpt
    else:
        model_dir = model_folder(args.model)
    tokenizer_json = model_dir / "tokenizer.json"
    model = load_model(model_dir)
    tok = model.tokenizer
    pad_id = tok.im_end_id if tok is not None else model.config.eos_token_id
    train, evals, skipped = load_data(args, tok, pad_id)
    V = model.config.vocab_size
    if max(int(e.ids.max()) for e in train + evals) >= V:
        raise TrainingError(f"the data holds token ids >= the model's vocabulary ({V})")
    per_epoch = math.ceil(len(train) / args.batch_size)
    steps = args.steps or max(1, math.ceil(args.epochs * per_epoch / args.grad_accum))
    warmup = args.warmup if args.warmup is not None else max(1, round(0.05 * steps)) if steps > 10 else 0
    fp = fingerprint(train)
    if args.resume:
        if trainer["data"] != fp:
            raise TrainingError(f"the data differs from the checkpoint's (fingerprint {fp} != {trainer['data']}); "
                                "resume needs the same data file and settings")
        state = load_state(ckpt / "optimizer.safetensors", model.params)
    else:
        state = adamw_init(model.params)
        trainer |= {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                             if k in RUN_ARGS}, "data": fp}
    trainer["steps"] = steps
    eval_batches = [collate(evals[i:i + args.batch_size], pad_id) for i in range(0, len(evals), args.batch_size)]
    log = (lambda s: None) if args.quiet else (lambda s: tqdm.write(s, file=sys.stderr))
    skipped = "".join(f", {n} rows skipped ({reason})" for reason, n in skipped.items())
    log(f"{len(train)} training sequences{skipped}, {len(evals)} held out; "
        f"{steps} steps of {args.grad_accum} x {args.batch_size}, loss {args.loss}, lr {args.lr}")

    def do_eval(step):
        if eval_batches:
            e = evaluate(model, eval_batches) | {"step": step}
            trainer["evals"].append(e)
            log(f"step {step}: held-out loss (cross-entropy) {e['loss']:.4f}, DFT loss {e['dft_loss']:.4f}, "
                f"mean target probability {e['p']:.4f}")

    def checkpoint(step):
        trainer["step"] = step
        save_checkpoint(ckpt, model, tokenizer_json, state, trainer)

    start = trainer["step"]
    if start == 0 and not trainer["evals"]:
        do_eval(0)
    bar = tqdm(total=steps, initial=start, desc=f"{args.loss}", unit="step", disable=args.quiet, file=sys.stderr)
    t0, tokens = time.perf_counter(), 0
    step = start
    for step in range(start, steps):
        if args.stop_after is not None and step - start >= args.stop_after:
            break
        lr = lr_at(step, args.lr, warmup, steps, args.min_lr_ratio)
        batches = [micro_batch(train, step * args.grad_accum + a, args.batch_size, args.seed, pad_id)
                   for a in range(args.grad_accum)]
        try:
            r = train_step(model, batches, state, lr, args.loss, args.beta1, args.beta2, 1e-8, args.weight_decay,
                           args.clip or None)
        except TrainingError as e:
            bar.close()
            last = f"the last good checkpoint is {ckpt} (step {trainer['step']})" if ckpt.exists() else \
                "no checkpoint was saved yet"
            raise TrainingError(f"step {step + 1}: {e}; stopped without updating the weights. {last}. "
                                "Try a lower --lr, or a lower --clip.") from None
        tokens += r.n_inputs
        trainer["history"].append({"step": step + 1, "loss": r.loss, "ce": r.ce, "lr": lr,
                                   "grad_norm": r.grad_norm, "tokens": r.n_tokens})
        bar.update(1)
        bar.set_postfix(loss=f"{r.loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")
        step += 1
        if args.eval_every and step % args.eval_every == 0 and step < steps:
            do_eval(step)
        if args.save_every and step % args.save_every == 0 and step < steps:
            checkpoint(step)
    else:
        step = steps
    bar.close()
    if step < steps:  # stopped early on purpose: save and say how to go on
        checkpoint(step)
        log(f"stopped at step {step} of {steps}; go on with: python -m nanoagent.train --resume --out {out} --data ...")
        return {"history": trainer["history"], "evals": trainer["evals"], "checkpoint": str(ckpt), "done": False}
    if not trainer["evals"] or trainer["evals"][-1]["step"] != steps:
        do_eval(steps)
    checkpoint(steps)
    final = out / "model"
    save_checkpoint(final, model, tokenizer_json)
    log(f"wrote {final} (an HF folder: python -m nanoagent.generate --model {final})")
    return {"history": trainer["history"], "evals": trainer["evals"], "checkpoint": str(ckpt),
            "model": str(final), "done": True}


def main(argv=None) -> None:
    from .weights import WeightsError
    try:
        run(argv)
    except (TrainingError, WeightsError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted; the last checkpoint (if any) is intact: go on with --resume")


if __name__ == "__main__":
    main()
