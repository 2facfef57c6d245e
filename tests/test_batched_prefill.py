"""Batched prefill: the chunks of several prompts, of different lengths and into slots at different
lengths, go through one forward (Model.prefill_rows) and each gets what it gets prefilled alone; the
BatchDecoder shares its `chunk` tokens a step among the waiting prompts, oldest first."""
import numpy as np
import pytest

from conftest import load_tiny
from nanoagent import quant
from nanoagent.batch import BatchDecoder
from nanoagent.decode import ContextLengthError, new_kv_cache, new_slot_cache
from nanoagent.generate import generate_ids
from nanoagent.model import Model

# ids within the tiny vocabulary of 128
SHORT, MID, LONG = [5, 9, 3], [7, 1, 2, 8, 4, 4, 6, 10, 11], [(7 * i + 3) % 100 + 5 for i in range(23)]
HELD = [12, 40, 41, 3, 77]  # what slot 0 holds before a prompt continues it (a prefix reused)
MIXED = [SHORT, LONG, [42], MID, [(11 * i + 1) % 120 + 3 for i in range(30)], [3, 3, 3, 3, 100, 7]]


@pytest.fixture(scope="module")
def int8_model():
    tiny = load_tiny()
    return Model(tiny.config, quant.quantize_params(tiny.params, 16))


def alone(model, prompt, n):
    return list(generate_ids(model, prompt, n))


def prefill_alone(model, prompt, capacity, held=()):
    """A one-sequence cache holding `held`, then `prompt` -> the last token's logits (V,), the cache."""
    kv = new_kv_cache(model.config, model.cache_dtype, capacity)
    if held:
        model.prefill(held, kv)
    return model.prefill(prompt, kv), kv


# ---- Model.prefill_rows -------------------------------------------------------------------------

@pytest.mark.parametrize("model_name,tol", [("tiny_model", 1e-4), ("tiny_model64", 1e-11), ("int8_model", None)])
def test_prefill_rows_equals_each_prompt_prefilled_alone(request, model_name, tol):
    """Three chunks of 23, 9 and 1 tokens in one forward, the 9 continuing slot 0 after the 5 tokens it
    holds: each chunk's logits, and the keys and values it leaves in its slot, are those of a prefill alone."""
    model = request.getfixturevalue(model_name)
    cache = new_slot_cache(model.config, model.cache_dtype, slots=4, capacity=40)
    model.prefill(HELD, cache.slot(0))
    cache.lengths[0] = len(HELD)
    logits = model.prefill_rows([LONG, MID, [42]], [2, 0, 3], cache)  # (3,V)
    assert logits.shape == (3, model.config.vocab_size)
    assert list(cache.lengths) == [len(HELD) + len(MID), 0, len(LONG), 1]
    for row, (slot, prompt, held) in enumerate([(2, LONG, ()), (0, MID, HELD), (3, [42], ())]):
        want, kv = prefill_alone(model, prompt, 40, held)
        # int8: many rows go through BLAS on the float input, a few through int16 activations (quant.linear)
        t = tol if tol is not None else 2e-4 * np.abs(want).max()
        np.testing.assert_allclose(logits[row], want, rtol=t, atol=t)
        n = len(held) + len(prompt)
        for got_cache, want_cache in ((cache.kt[:, slot, ..., :n], kv.kt[:, 0, ..., :n]),
                                      (cache.v[:, slot, :, :n], kv.v[:, 0, :, :n])):
            np.testing.assert_allclose(got_cache.astype(np.float64), want_cache.astype(np.float64),
                                       rtol=t, atol=t * np.abs(want_cache).max())
    if model_name != "int8_model":  # and the full forward over each whole sequence
        np.testing.assert_allclose(logits[1], model.logits(HELD + MID)[-1], rtol=tol, atol=tol)


def test_prefill_rows_refuses_what_it_cannot_do(tiny_model):
    cache = new_slot_cache(tiny_model.config, tiny_model.dtype, slots=2, capacity=8)
    with pytest.raises(ValueError, match="each slot once"):
        tiny_model.prefill_rows([SHORT, SHORT], [1, 1], cache)
    with pytest.raises(ValueError, match="non-empty"):
        tiny_model.prefill_rows([SHORT, []], [0, 1], cache)
    with pytest.raises(ContextLengthError):
        tiny_model.prefill_rows([SHORT, MID], [0, 1], cache)
    assert list(cache.lengths) == [0, 0]


# ---- the BatchDecoder's prefill ------------------------------------------------------------------

def spy_on_prefill(model, monkeypatch) -> list[list[int]]:
    """-> the chunk lengths of each prefill_rows call from now on; a one-prompt prefill fails the test."""
    calls, prefill_rows = [], model.prefill_rows
    monkeypatch.setattr(model, "prefill_rows", lambda chunks, *a: calls.append([len(c) for c in chunks])
                        or prefill_rows(chunks, *a))
    monkeypatch.setattr(model, "prefill", lambda *a: pytest.fail("a prompt prefilled on its own"))
    return calls


def test_the_waiting_prompts_share_a_chunk_oldest_first(tiny_model, monkeypatch):
    """chunk 7: 3 + 4 of the 9 in the first forward, the other 5 + 1 in the second."""
    calls = spy_on_prefill(tiny_model, monkeypatch)
    decoder = BatchDecoder(tiny_model, slots=4, capacity=32, chunk=7)
    seqs = [decoder.submit(p, 1) for p in (SHORT, MID, [42])]
    decoder.step()
    assert calls == [[3, 4]] and [s.new != [] for s in seqs] == [True, False, False]
    decoder.step()
    assert calls == [[3, 4], [5, 1]] and not decoder.busy


@pytest.mark.parametrize("model_name", ["tiny_model", "int8_model"])
def test_mixed_prompts_in_a_small_chunk_give_each_reply_decoded_alone(request, model_name, monkeypatch):
    """Six prompts of 1 to 30 tokens, 4 slots, 7 prompt tokens a step: greedy replies as decoded alone."""
    model = request.getfixturevalue(model_name)
    want = [alone(model, p, 8) for p in MIXED]
    calls = spy_on_prefill(model, monkeypatch)
    decoder = BatchDecoder(model, slots=4, capacity=48, chunk=7)
    seqs = [decoder.submit(p, 8) for p in MIXED]
    while decoder.busy:
        decoder.step()
    assert [s.new for s in seqs] == want
    assert all(sum(sizes) <= 7 for sizes in calls) and any(len(sizes) > 1 for sizes in calls)
    assert sum(map(sum, calls)) == sum(map(len, MIXED))  # every prompt token once


def test_a_long_prompt_never_holds_a_running_sequence_up(tiny_model):
    """Three sequences decoding when a 30-token and a 1-token prompt arrive (chunk 7): every step
    still gives each running sequence its token, and the newcomers start as soon as they are in."""
    decoder = BatchDecoder(tiny_model, slots=5, capacity=64, chunk=7)
    running = [decoder.submit(p, 20) for p in (SHORT, [42], [3, 3, 100])]
    decoder.step()
    assert all(len(s.new) == 1 for s in running)
    long, short = decoder.submit(MIXED[4], 4), decoder.submit([42, 7], 4)
    steps = 0
    while not long.new:
        before = [id(seq) for seq in decoder.running]
        events = decoder.step()
        steps += 1
        assert [id(seq) for seq, _ in events if id(seq) in before] == before  # one token each, none skipped
        assert all(token is not None for _, token in events)
    assert steps == -(-(len(MIXED[4]) + 2) // 7)  # the two prompts went in 7 tokens a step, nothing more
    assert len(short.new) > 0
    while decoder.busy:
        decoder.step()
    assert [s.new for s in running] == [alone(tiny_model, p, 20) for p in (SHORT, [42], [3, 3, 100])]
    assert [long.new, short.new] == [alone(tiny_model, MIXED[4], 4), alone(tiny_model, [42, 7], 4)]
