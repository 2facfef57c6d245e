"""Ten SFT optimizer steps of the tiny model against an independent implementation.

Like llm.c's `expected_losses`: `tests/fixtures/tiny_trajectory.npz` holds the loss before each
of ten updates, and the global gradient norm (before clipping) of each, computed by PyTorch +
transformers in float64 (`make_reference.py --trajectory-only`). Here the project's own
trainer (`nanoagent.train.train_step`, micro-batches from the data code's `collate`) repeats the same ten steps on
the same model, in float64, and must land on the same numbers.

The setting (stored in the fixture, read back here): four examples of 17, 11, 15 and 13
tokens with assistant masks, two micro-batches of two (gradient accumulation 2; each
micro-batch right-padded to its longest row), 31 target tokens per step; loss = summed
masked cross-entropy / 31; global-norm clipping at 1.0; AdamW with beta1 0.9, beta2 0.95,
eps 1e-8, weight decay 0.1 on the 2-D parameters; learning rate 1e-2 with 2 warmup steps,
then cosine towards 1e-3 at step 10. Clipping is active on the first three steps only.

Tolerance: 1e-10 relative for the losses, the gradient norms and the final weights (the
learning rates: 1e-15). Both sides compute in float64 and differ only in the order of their
summations (BLAS, Numba loops, torch); measured when the fixture was made: at most 3.2e-14
relative on the losses, 2.3e-13 on the gradient norms, 1.4e-15 on the final weights' sums and
norms. A real difference in the update is far above the tolerance: decaying the norm weights
too moves the losses by 3e-2 relative, eps 1e-7 instead of 1e-8 by 5e-4, no clipping by 2.4.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nanoagent.checkpoint import read_model
from nanoagent.data.batch import Example, collate
from nanoagent.optim import adamw_init, lr_at
from nanoagent.train import train_step

FIXTURES = Path(__file__).parent / "fixtures"
RTOL = 1e-10


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURES / "tiny_trajectory.npz") as f:
        return {k: f[k] for k in f.files}


def examples(ref) -> list[Example]:
    return [Example(ref["ids"][b, :n].copy(), ref["mask"][b, :n].copy()) for b, n in enumerate(ref["lengths"])]


def micro_batches(ref):
    ex, bs = examples(ref), int(ref["batch_size"])
    batches = [collate(ex[k:k + bs], int(ref["pad_id"])) for k in range(0, len(ex), bs)]
    assert len(batches) == int(ref["grad_accum"])
    return batches


@pytest.fixture(scope="module")
def run(ref):
    """The ten steps with the project's trainer, float64 throughout."""
    model = read_model(FIXTURES / "tiny", dtype=np.float64).own_params()
    assert all(p.dtype == np.float64 for p in model.params.values())
    state = adamw_init(model.params)
    batches = micro_batches(ref)
    steps = int(ref["steps"])
    losses, norms, lrs, tokens = [], [], [], []
    for step in range(steps):
        lr = lr_at(step, float(ref["lr"]), int(ref["warmup"]), steps, float(ref["min_lr_ratio"]))
        r = train_step(model, batches, state, lr, "sft", float(ref["beta1"]), float(ref["beta2"]),
                       float(ref["eps"]), weight_decay=float(ref["wd"]), clip=float(ref["clip"]))
        losses.append(r.loss)
        norms.append(r.grad_norm)
        lrs.append(lr)
        tokens.append(r.n_tokens)
        assert r.ce == pytest.approx(r.loss, rel=1e-14)  # SFT: the trained loss is the cross-entropy
    return {"model": model, "losses": np.array(losses), "grad_norms": np.array(norms), "lrs": np.array(lrs),
            "tokens": tokens}


def rel_err(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))


def test_the_batches_are_the_fixture_setting(ref):
    """collate gives what the reference fed PyTorch: padded rows, 31 targets, one micro-batch shorter."""
    b0, b1 = micro_batches(ref)
    assert b0["inputs"].shape == (2, 16) and b1["inputs"].shape == (2, 14)
    assert int(b0["mask"].sum() + b1["mask"].sum()) == int(ref["n_targets"]) == 31
    assert b0["lengths"].tolist() == [16, 10] and b1["lengths"].tolist() == [14, 12]
    assert not b0["mask"][1, 10:].any() and (b0["inputs"][1, 11:] == int(ref["pad_id"])).all()


def test_learning_rates_match(ref, run):
    np.testing.assert_allclose(run["lrs"], ref["lrs"], rtol=1e-15, atol=0)


def test_ten_losses_match_pytorch(ref, run):
    assert run["tokens"] == [int(ref["n_targets"])] * int(ref["steps"])
    err = rel_err(run["losses"], ref["losses"])
    assert err.max() < RTOL, f"losses {run['losses'].tolist()} vs {ref['losses'].tolist()}: rel err {err.tolist()}"
    assert ref["losses"][-1] < 0.01 * ref["losses"][0]  # the trajectory really trains (memorizes the batch)


def test_grad_norms_match_pytorch(ref, run):
    err = rel_err(run["grad_norms"], ref["grad_norms"])
    assert err.max() < RTOL, f"grad norms {run['grad_norms'].tolist()} vs {ref['grad_norms'].tolist()}: {err}"
    clipped = ref["grad_norms"] > float(ref["clip"])
    assert clipped[:3].all() and not clipped[3:].any()  # both sides of the clipping branch are exercised


def test_final_weights_match_pytorch(ref, run):
    """Per-parameter sums and norms after the tenth update (decay on matrices only, as `decays` says)."""
    params = run["model"].params
    names = sorted(k[len("final_norm/"):] for k in ref if k.startswith("final_norm/"))
    assert names == sorted(params)
    for n in names:
        p = params[n]
        assert abs(np.linalg.norm(p) - ref[f"final_norm/{n}"]) <= RTOL * ref[f"final_norm/{n}"], n
        assert abs(p.sum() - ref[f"final_sum/{n}"]) <= RTOL * np.abs(p).sum(), n
