"""AdamW, gradient clipping, the learning-rate schedule and the optimizer state on disk."""
import math
from pathlib import Path

import numpy as np
import pytest

from nanoagent.checkpoint import read_model
from nanoagent import kernels
from nanoagent.optim import (adamw_init, adamw_step, clip_scale, decays, global_norm, load_state, lr_at,
                             save_state)

FIXTURES = Path(__file__).parent / "fixtures"


def test_one_adamw_step_matches_reference():
    """One step from zero moments with the fixture's CE gradients equals torch.optim.AdamW (decay on ndim >= 2)."""
    ref = np.load(FIXTURES / "tiny_reference.npz")
    model = read_model(FIXTURES / "tiny", dtype=np.float64).own_params()
    grads = {name: ref["grad/" + name] for name in model.params}
    state = adamw_init(model.params)
    adamw_step(model.params, grads, state, lr=float(ref["adamw_lr"]), beta1=float(ref["adamw_beta1"]),
               beta2=float(ref["adamw_beta2"]), eps=float(ref["adamw_eps"]), weight_decay=float(ref["adamw_wd"]))
    assert state.step == 1
    names = {k[len("adamw/"):] for k in ref.files if k.startswith("adamw/")}
    assert names == set(model.params)
    for name in sorted(names):
        np.testing.assert_allclose(model.params[name], ref["adamw/" + name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_own_params_are_writable_copies():
    model = read_model(FIXTURES / "tiny")
    assert not model.params["model.norm.weight"].flags.writeable  # the loader's memory map
    model.own_params()
    for name, p in model.params.items():
        assert p.flags.writeable and p.flags.c_contiguous and p.dtype == np.float32, name
    assert model.blocks[0].q is model.params["model.layers.0.self_attn.q_proj.weight"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_kernel_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    p, g, m = (rng.normal(size=(6, 5)).astype(dtype) for _ in range(3))
    v = rng.random(size=(6, 5)).astype(dtype)
    a = [x.copy() for x in (p, m, v)]
    b = [x.copy() for x in (p, m, v)]
    kernels.adamw(a[0], g, a[1], a[2], 1e-2, 0.9, 0.95, 1e-8, 0.1, 3, gscale=0.5)
    kernels.adamw_ref(b[0], g, b[1], b[2], 1e-2, 0.9, 0.95, 1e-8, 0.1, 3, gscale=0.5)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


def test_weight_decay_only_on_matrices():
    params = {"w": np.ones((2, 3)), "norm": np.ones(3)}
    grads = {k: np.zeros_like(p) for k, p in params.items()}
    state = adamw_init(params)
    adamw_step(params, grads, state, lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(params["w"], 1 - 0.1 * 0.5)
    np.testing.assert_allclose(params["norm"], 1.0)
    assert decays(np.zeros((4, 2))) and not decays(np.zeros(4))  # the embedding decays, a norm does not


def test_global_norm_and_clipping():
    rng = np.random.default_rng(1)
    grads = {"a": rng.normal(size=(50, 7)).astype(np.float32), "b": rng.normal(size=9).astype(np.float32)}
    expect = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    assert global_norm(grads) == pytest.approx(expect, rel=1e-12)
    assert kernels.sum_squares(grads["a"]) == pytest.approx(kernels.sum_squares_ref(grads["a"]), rel=1e-12)
    assert clip_scale(expect, None) == 1.0 and clip_scale(expect, 2 * expect) == 1.0
    s = clip_scale(expect, 1.0)
    assert global_norm({k: g * s for k, g in grads.items()}) == pytest.approx(1.0, rel=1e-5)
    # clipping through grad_scale equals stepping with the scaled gradients
    p1 = {k: np.ones_like(g) for k, g in grads.items()}
    p2 = {k: np.ones_like(g) for k, g in grads.items()}
    adamw_step(p1, grads, adamw_init(p1), lr=0.1, grad_scale=s)
    adamw_step(p2, {k: g * np.float32(s) for k, g in grads.items()}, adamw_init(p2), lr=0.1)
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-6)


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 1.0, warmup=4, total=20, min_ratio=0.1) for s in range(20)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # non-increasing after warmup
    assert lr_at(20, 1.0, 4, 20, 0.1) == pytest.approx(0.1) and lr_at(99, 1.0, 4, 20, 0.1) == pytest.approx(0.1)
    assert lr_at(12, 1.0, 4, 20, 0.0) == pytest.approx(0.5)  # half-way through the cosine


def test_state_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    params = {"a.weight": rng.normal(size=(3, 4)).astype(np.float32), "n.weight": np.ones(4, np.float32)}
    state = adamw_init(params)
    grads = {k: rng.normal(size=p.shape).astype(np.float32) for k, p in params.items()}
    adamw_step(params, grads, state, lr=0.01)
    adamw_step(params, grads, state, lr=0.01)
    save_state(state, tmp_path / "optimizer.safetensors")
    back = load_state(tmp_path / "optimizer.safetensors", params)
    assert back.step == 2
    for k in params:
        np.testing.assert_array_equal(back.m[k], state.m[k])
        np.testing.assert_array_equal(back.v[k], state.v[k])
        assert back.m[k].flags.writeable
    with pytest.raises(ValueError, match="has no"):
        load_state(tmp_path / "optimizer.safetensors", {**params, "extra.weight": np.zeros(2, np.float32)})
