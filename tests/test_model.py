"""The forward pass against an independent implementation (HF transformers, fixtures made offline),
and incremental decoding with the KV cache against the full forward."""
import numpy as np
import pytest

from conftest import FIXTURES
from nanoagent.decode import ContextLengthError


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
