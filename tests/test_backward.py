"""The hand-written backward pass: every layer and the whole model against central finite
differences in float64, the backward kernels against their NumPy twins, and the tiny model's
gradients against an independent autograd (tests/fixtures/tiny_reference.npz)."""
from pathlib import Path

import numpy as np
import pytest

from nanoagent import kernels, layers
from nanoagent.checkpoint import read_model
from nanoagent.gradcheck import numeric_grad, rel_err
from nanoagent.config import ModelConfig
from nanoagent.loss import lm_head_loss
from nanoagent.model import Model

FIXTURES = Path(__file__).parent / "fixtures"
B, T, C, H, KV, F, V = 2, 5, 8, 2, 1, 12, 11  # tiny shapes: head dim D = C / H = 4
D = C // H
EPS = 1e-5
TOL = 1e-6


def check(f, inputs: dict, analytic: dict, max_entries=None):
    """Every named input's analytic gradient against the numeric one, compared by name.

    All entries, or (whole-model checks) `max_entries` random ones per tensor, always
    including the largest analytic entry.
    """
    assert set(inputs) == set(analytic), set(inputs) ^ set(analytic)
    rng = np.random.default_rng(123)
    for name, x in inputs.items():
        a = analytic[name].reshape(-1)
        entries = np.arange(x.size)
        if max_entries and x.size > max_entries:
            entries = np.unique(np.append(rng.choice(x.size, max_entries - 1, replace=False), np.argmax(np.abs(a))))
        err = rel_err(a[entries], numeric_grad(f, x, entries))
        assert err < TOL, f"{name}: relative error {err:.2e}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_embedding_backward(rng):
    ids = rng.integers(0, V, size=(B, T))
    ids[0, 0] = ids[1, 3]  # a repeated token: its row gets both gradients
    wte = rng.normal(size=(V, C))
    dout = rng.normal(size=(B, T, C))
    out, cache = layers.embedding_forward(ids, wte)
    dwte = layers.embedding_backward(dout, cache)
    check(lambda: np.sum(layers.embedding_forward(ids, wte)[0] * dout), {"wte": wte}, {"wte": dwte})
    # with a gradient already there (the tied head's), the embedding's is added to it
    prior = rng.normal(size=(V, C))
    np.testing.assert_allclose(layers.embedding_backward(dout, cache, prior.copy()), prior + dwte)


def test_rmsnorm_backward(rng):
    x, w, dout = rng.normal(size=(B, T, C)), 1 + 0.3 * rng.normal(size=C), rng.normal(size=(B, T, C))
    out, cache = layers.rmsnorm_forward(x, w, EPS)
    dx, dw = layers.rmsnorm_backward(dout, cache)
    check(lambda: np.sum(layers.rmsnorm_forward(x, w, EPS)[0] * dout), {"x": x, "w": w}, {"x": dx, "w": dw})


def test_linear_backward(rng):
    x, w, dout = rng.normal(size=(B, T, C)), rng.normal(size=(F, C)), rng.normal(size=(B, T, F))
    out, cache = layers.linear_forward(x, w)
    dx, dw = layers.linear_backward(dout, cache)
    check(lambda: np.sum(layers.linear_forward(x, w)[0] * dout), {"x": x, "w": w}, {"x": dx, "w": dw})


@pytest.mark.parametrize("rows", [1, 2, 8, layers.FEW_ROWS - 1, layers.FEW_ROWS, layers.SOME_ROWS - 1,
                                  layers.SOME_ROWS, 100])
def test_linear_forward_is_x_times_w_transposed_for_any_row_count(rng, rows):
    """A few rows go through kernels.matmul_rows, some more through BLAS as w @ x.T, the rest as x @ w.T:
    the same product, in float64 to rounding, and a (rows, Cout) result each way."""
    x, w = rng.standard_normal((1, rows, 24)), rng.standard_normal((40, 24))
    y, _ = layers.linear_forward(x, w)
    assert y.shape == (1, rows, 40)
    np.testing.assert_allclose(y, np.einsum("btc,nc->btn", x, w), rtol=1e-12, atol=1e-12)


def test_rope_backward(rng):
    cos, sin = layers.rope_tables(D, 16, 10000.0, np.float64)
    cos, sin = cos[3:3 + T], sin[3:3 + T]  # positions 3.. (not starting at 0, where the rotation is identity)
    x, dout = rng.normal(size=(B, H, T, D)), rng.normal(size=(B, H, T, D))
    out, cache = layers.rope_forward(x, cos, sin)
    dx = layers.rope_backward(dout, cache)
    check(lambda: np.sum(layers.rope_forward(x, cos, sin)[0] * dout), {"x": x}, {"x": dx})


@pytest.mark.parametrize("heads,kv_heads,prefix,block", [(H, KV, 0, 128), (4, 2, 0, 128), (2, 2, 0, 128),
                                                        (4, 2, 0, 2), (4, 2, 3, 2), (H, KV, 2, 1)])
def test_attention_backward(rng, monkeypatch, heads, kv_heads, prefix, block):
    """Also with the queries in several blocks (the last one short), after a prefix of keys."""
    monkeypatch.setattr(layers, "QUERY_BLOCK", block)
    q = rng.normal(size=(B, heads, T, D))
    k, v = rng.normal(size=(B, kv_heads, prefix + T, D)), rng.normal(size=(B, kv_heads, prefix + T, D))
    dout = rng.normal(size=(B, heads, T, D))
    out, cache = layers.attention_forward(q, k, v)
    dq, dk, dv = layers.attention_backward(dout, cache)
    check(lambda: np.sum(layers.attention_forward(q, k, v)[0] * dout),
          {"q": q, "k": k, "v": v}, {"q": dq, "k": dk, "v": dv})


def test_swiglu_backward(rng):
    g, u, dout = 2 * rng.normal(size=(B, T, F)), rng.normal(size=(B, T, F)), rng.normal(size=(B, T, F))
    out, cache = layers.swiglu_forward(g, u)
    dg, du = layers.swiglu_backward(dout, cache)
    check(lambda: np.sum(layers.swiglu_forward(g, u)[0] * dout), {"g": g, "u": u}, {"g": dg, "u": du})


def random_params(cfg: ModelConfig, rng) -> dict:
    """Random non-unit parameters: matrices ~ N(0, 0.5^2), norm weights ~ 1 + N(0, 0.3^2)."""
    return {name: (0.5 * rng.normal(size=shape) if len(shape) == 2 else 1 + 0.3 * rng.normal(size=shape))
            for name, shape in cfg.param_shapes().items()}


def test_block_backward(rng):
    cfg = ModelConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=1,
                      num_attention_heads=H, num_key_value_heads=KV, max_position_embeddings=16)
    params = random_params(cfg, rng)
    w = layers.block_weights(params, 0)
    cos, sin = layers.rope_tables(D, 16, 10000.0, np.float64)
    cos, sin = cos[:T], sin[:T]
    x, dout = rng.normal(size=(B, T, C)), rng.normal(size=(B, T, C))
    out, cache = layers.block_forward(x, w, H, KV, EPS, cos, sin)
    dx, dw, _ = layers.block_backward(dout, cache)
    f = lambda: np.sum(layers.block_forward(x, w, H, KV, EPS, cos, sin)[0] * dout)
    check(f, {"x": x, **dict(zip(layers.BLOCK_NAMES, w))}, {"x": dx, **dict(zip(layers.BLOCK_NAMES, dw))})


def tiny_model(rng, layers_=2) -> Model:
    cfg = ModelConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=layers_,
                      num_attention_heads=H, num_key_value_heads=KV, max_position_embeddings=16)
    return Model(cfg, random_params(cfg, rng))


def test_model_backward(rng):
    """Model.backward from a random dh: every parameter, compared by name."""
    model = tiny_model(rng)
    ids = rng.integers(0, V, size=(B, T))
    dh = rng.normal(size=(B, T, C))
    h, caches = model.forward(ids)
    grads = model.backward(dh, caches)
    check(lambda: np.sum(model.forward(ids)[0] * dh), model.params, grads, max_entries=24)


@pytest.mark.parametrize("kind", ["sft", "dft"])
def test_model_and_loss_backward(rng, kind):
    """The whole training objective: forward, masked loss through the tied head, backward."""
    model = tiny_model(rng)
    ids = rng.integers(0, V, size=(B, T + 1))
    mask = rng.integers(0, 2, size=(B, T))
    mask[:, 0] = 1
    wte = model.params["model.embed_tokens.weight"]
    h, caches = model.forward(ids[:, :-1])
    out = lm_head_loss(h, wte, ids[:, 1:], mask, kind=kind, chunk=3)
    grads = model.backward(out.dh, caches, {"model.embed_tokens.weight": out.dwte})
    # DFT's weight p is a stop-gradient: hold it at the base point's value while differencing
    logits = model.lm_head(h)
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    p_fixed = np.exp(np.take_along_axis(logp, ids[:, 1:, None], -1)[..., 0])
    f = lambda: lm_head_loss(model.forward(ids[:, :-1])[0], wte, ids[:, 1:], mask, kind=kind,
                             backward=False, weight=p_fixed).loss
    check(f, model.params, grads, max_entries=24)


def test_model_backward_accumulates(rng):
    """Passing grads in adds to them (gradient accumulation), and free_caches gives the same result."""
    model = tiny_model(rng)
    ids, dh = rng.integers(0, V, size=(B, T)), rng.normal(size=(B, T, C))
    g1 = model.backward(dh, model.forward(ids)[1])
    prior = {k: np.ones_like(g) for k, g in g1.items()}
    g2 = model.backward(dh, model.forward(ids)[1], prior, free_caches=True)
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k] + 1, rtol=1e-12, atol=1e-12)


# ---- parity with an independent autograd (transformers + torch, see fixtures/make_reference.py) ----

@pytest.mark.parametrize("kind,prefix,loss_key", [("sft", "grad/", "loss"), ("dft", "dft_grad/", "dft_loss")])
def test_tiny_reference_gradients(kind, prefix, loss_key):
    ref = np.load(FIXTURES / "tiny_reference.npz")
    model = read_model(FIXTURES / "tiny", dtype=np.float64)
    ids, mask = ref["ids"], ref["mask"]
    h, caches = model.forward(ids[:, :-1])
    out = lm_head_loss(h, model.params["model.embed_tokens.weight"], ids[:, 1:], mask, kind=kind)
    grads = model.backward(out.dh, caches, {"model.embed_tokens.weight": out.dwte})
    assert out.loss == pytest.approx(float(ref[loss_key]), rel=1e-10)
    ref_names = {k[len(prefix):] for k in ref.files if k.startswith(prefix)}
    assert ref_names == set(grads) == set(model.params)
    for name in sorted(ref_names):
        assert rel_err(grads[name], ref[prefix + name]) < 1e-5, name


def test_float32_gradients_close_to_float64():
    ref = np.load(FIXTURES / "tiny_reference.npz")
    model = read_model(FIXTURES / "tiny", dtype=np.float32)
    ids, mask = ref["ids"], ref["mask"]
    h, caches = model.forward(ids[:, :-1])
    assert h.dtype == np.float32
    out = lm_head_loss(h, model.params["model.embed_tokens.weight"], ids[:, 1:], mask)
    grads = model.backward(out.dh, caches, {"model.embed_tokens.weight": out.dwte})
    for name, g in grads.items():
        assert g.dtype == np.float32, name
        assert rel_err(g, ref["grad/" + name]) < 1e-4, name


# ---- each backward kernel equals its NumPy twin -------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_kernels_match_numpy(rng, dtype):
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    x, dy, w = (rng.normal(size=s).astype(dtype) for s in [(7, 16), (7, 16), (16,)])
    rstd = (1 / np.sqrt(np.mean(x * x, -1) + EPS)).astype(dtype)
    for a, b in zip(kernels.rmsnorm_backward(dy, x, w, rstd), kernels.rmsnorm_backward_ref(dy, x, w, rstd)):
        np.testing.assert_allclose(a, b, **tol)
    s = rng.normal(size=(3, 5, 9)).astype(dtype)
    s[..., 6:] = -np.inf  # masked keys
    p = kernels.softmax_ref(s)
    dp = rng.normal(size=s.shape).astype(dtype)
    np.testing.assert_allclose(kernels.softmax_backward(p, dp), kernels.softmax_backward_ref(p, dp), **tol)
    g, u, dy = (rng.normal(size=(4, 6)).astype(dtype) for _ in range(3))
    for a, b in zip(kernels.silu_gate_backward(dy, g, u), kernels.silu_gate_backward_ref(dy, g, u)):
        np.testing.assert_allclose(a, b, **tol)
    ids, dx = rng.integers(0, 5, size=9), rng.normal(size=(9, 3)).astype(dtype)
    a, b = np.zeros((5, 3), dtype), np.zeros((5, 3), dtype)
    kernels.embedding_backward(ids, dx, a)
    kernels.embedding_backward_ref(ids, dx, b)
    np.testing.assert_allclose(a, b, **tol)
