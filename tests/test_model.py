"""The forward pass against an independent implementation (HF transformers, fixtures made offline),
and incremental decoding with the KV cache against the full forward."""
import numpy as np
import pytest

from conftest import FIXTURES
from nanoagent import kernels, layers
from nanoagent.decode import ContextLengthError
from nanoagent.model import Model


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURES / "tiny_reference.npz")


def test_tiny_logits_match_reference_float32(tiny_model, ref):
    h, _ = tiny_model.forward(ref["ids"])
    logits = tiny_model.lm_head(h)
    assert logits.dtype == np.float32
    assert np.abs(logits - ref["logits"]).max() < 1e-4


def test_tiny_logits_match_reference_float64(tiny_model64, ref):
    h, _ = tiny_model64.forward(ref["ids"])
    assert np.abs(tiny_model64.lm_head(h) - ref["logits64"]).max() < 1e-10


@pytest.mark.parametrize("block", [1, 3])
def test_attention_in_query_blocks_matches_reference(tiny_model, ref, monkeypatch, block):
    """Queries in blocks whose scores stop at their last key give the reference logits."""
    monkeypatch.setattr(layers, "QUERY_BLOCK", block)
    h, _ = tiny_model.forward(ref["ids"])
    assert np.abs(tiny_model.lm_head(h) - ref["logits"]).max() < 1e-4


@pytest.mark.parametrize("prefix", [0, 4])
def test_attention_blocks_equal_one_softmax_over_masked_scores(monkeypatch, prefix):
    monkeypatch.setattr(layers, "QUERY_BLOCK", 3)
    rng = np.random.default_rng(0)
    B, H, KV, T, D = 2, 4, 2, 7, 8
    q = rng.normal(size=(B, H, T, D))
    k, v = rng.normal(size=(B, KV, prefix + T, D)), rng.normal(size=(B, KV, prefix + T, D))
    out, cache = layers.attention_forward(q, k, v)
    kk, vv = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)  # (B,H,S,D): head h reads h // (H/KV)
    scores = (q @ kk.swapaxes(-1, -2)).reshape(B * H, T, prefix + T)
    probs = kernels.causal_softmax_ref(scores, 1 / np.sqrt(D), prefix).reshape(B, H, T, prefix + T)
    np.testing.assert_allclose(cache.full_probs(), probs, atol=1e-12)
    np.testing.assert_allclose(out, probs @ vv, atol=1e-12)
    assert [p.shape[-1] for p in cache.probs] == [prefix + 3, prefix + 6, prefix + 7]  # keys after a block: skipped


def test_logits_of_one_sequence_equal_its_row_of_the_batch(tiny_model, ref):
    np.testing.assert_allclose(tiny_model.logits(ref["ids"][1]), ref["logits"][1], atol=1e-4)


@pytest.mark.parametrize("dtype_model,tol", [("tiny_model", 1e-5), ("tiny_model64", 1e-12)])
def test_kv_cache_decoding_equals_full_forward(request, dtype_model, tol):
    model = request.getfixturevalue(dtype_model)
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, 20)
    full = model.logits(ids)  # (T,V)
    kv = model.new_kv_cache(len(ids))
    steps = [model.prefill(ids[:6], kv)] + [model.decode_step(int(t), kv) for t in ids[6:]]
    np.testing.assert_allclose(np.stack(steps), full[5:], atol=tol, rtol=0)
    assert kv.length == len(ids)


def test_prefill_in_chunks_equals_full_forward(tiny_model):
    ids = np.random.default_rng(1).integers(0, tiny_model.config.vocab_size, 17)
    kv = tiny_model.new_kv_cache(32)
    tiny_model.prefill(ids[:7], kv)
    tiny_model.prefill(ids[7:12], kv)
    last = tiny_model.prefill(ids[12:], kv)
    np.testing.assert_allclose(last, tiny_model.logits(ids)[-1], atol=1e-5)


def test_forward_keeps_no_caches_for_inference(tiny_model):
    _, (_, blocks, _) = tiny_model.forward(np.array([[1, 2, 3]]), keep_caches=False)
    assert all(c is None for c in blocks)


def test_too_long_for_the_cache_is_a_clear_error(tiny_model):
    kv = tiny_model.new_kv_cache(8)
    tiny_model.prefill(np.arange(6), kv)
    with pytest.raises(ContextLengthError, match="do not fit"):
        tiny_model.prefill(np.arange(3), kv)
    with pytest.raises(ContextLengthError):
        tiny_model.logits(np.zeros(tiny_model.config.max_position_embeddings + 1, dtype=np.int64))


def test_a_cache_of_several_sequences_is_extended_by_forward_only(tiny_model):
    """prefill and decode_step extend one sequence: a cache of two says so, where it used to fail in a
    reshape (prefill) or attend to its first row only (decode_step)."""
    kv = tiny_model.new_kv_cache(8, batch=2)
    with pytest.raises(ValueError, match="holds 2 sequences"):
        tiny_model.prefill(np.arange(3), kv)
    with pytest.raises(ValueError, match="holds 2 sequences"):
        tiny_model.decode_step(3, kv)
    tiny_model.forward(np.array([[1, 2, 3], [4, 5, 6]]), kv, keep_caches=False)
    assert kv.length == 3


@pytest.mark.parametrize("model_name", ["tiny_model", "tiny_model64"])
def test_compiled_decode_step_equals_the_layered_forward(request, model_name, monkeypatch):
    """Float weights: each decoding step goes through kernels.decode_float (one compiled call for
    every layer and the head) and gives the logits and cache of `forward` on one token."""
    model = request.getfixturevalue(model_name)
    calls = []
    decode_float = kernels.decode_float
    monkeypatch.setattr(kernels, "decode_float", lambda *a: calls.append(1) or decode_float(*a))
    ids = (np.arange(14) * 5 + 3) % model.config.vocab_size
    kv_want = model.new_kv_cache(len(ids))
    model.prefill(ids[:4], kv_want)
    want = [model.prefill(np.array([[t]]), kv_want) for t in ids[4:]]  # forward, layer by layer
    kv = model.new_kv_cache(len(ids))
    model.prefill(ids[:4], kv)
    got = [model.decode_step(int(t), kv) for t in ids[4:]]
    assert len(calls) == len(ids) - 4
    tol = 1e-5 if model.dtype == np.float32 else 1e-12  # the dot products sum in another order
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_allclose(kv.kt, kv_want.kt, rtol=tol, atol=tol * np.abs(kv_want.kt).max())
    np.testing.assert_allclose(kv.v, kv_want.v, rtol=tol, atol=tol * np.abs(kv_want.v).max())
    assert kv.length == len(ids)


def test_decoding_sees_a_replaced_weight(tiny_model):
    """The layers' typed lists are built once, and again when a weight array in `params` is replaced
    (an update in place needs nothing: the lists hold the same arrays)."""
    model = Model(tiny_model.config, dict(tiny_model.params))
    name = "model.layers.1.mlp.up_proj.weight"

    def step_and_forward():
        kv = model.new_kv_cache(3)
        model.prefill(np.array([5, 9]), kv)
        return model.decode_step(7, kv), model.logits(np.array([5, 9, 7]))[-1]

    before, _ = step_and_forward()
    first = model.layer_stack()[1]
    model.params[name] = model.params[name] * 1.5
    after, want = step_and_forward()
    assert model.layer_stack()[1] is not first
    np.testing.assert_allclose(after, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert np.abs(after - before).max() > 1e-3 * np.abs(before).max()  # the new weight changed the logits
    second = model.layer_stack()[1]
    model.params[name] *= 2.0  # in place: the same lists, and decoding sees it
    got, want = step_and_forward()
    assert model.layer_stack()[1] is second
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert np.abs(got - after).max() > 1e-3 * np.abs(after).max()
