"""Batched decoding: every sequence decoded in a batch gets what it would get decoded alone,
whatever the others do (different lengths, finishing early, joining later, int8 weights)."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import load_tiny
from test_quant import tiny_folder
from nanoagent import kernels, quant
from nanoagent.batch import BatchDecoder, generate_batch
from nanoagent.decode import ContextLengthError, new_slot_cache
from nanoagent.generate import generate_ids
from nanoagent.model import Model
from nanoagent.sampling import SamplingParams

PROMPTS = [[5, 9, 3], [7, 1, 2, 8, 4, 4, 6, 10, 11], [42], [3, 3, 3, 3, 100, 7]]


@pytest.fixture(scope="module")
def int8_model():
    tiny = load_tiny()
    return Model(tiny.config, quant.quantize_params(tiny.params, 16))


def alone(model, prompt, n, **kw):
    return list(generate_ids(model, prompt, n, **kw))


def test_attend_rows_kernel_equals_its_twin():
    rng = np.random.default_rng(0)
    S, KV, H, D, Tmax = 5, 2, 4, 8, 12
    kt, v = rng.standard_normal((S, KV, D, Tmax)), rng.standard_normal((S, KV, Tmax, D))
    q, rows, n = rng.standard_normal((3, H, D)), np.array([4, 0, 2]), np.array([12, 1, 7])
    np.testing.assert_allclose(kernels.attend_rows(q, kt, v, rows, n), kernels.attend_rows_ref(q, kt, v, rows, n),
                               rtol=1e-12, atol=1e-12)


def test_decode_rows_equals_the_full_forward(tiny_model):
    """Two sequences at different positions, one step each: their logits are the full forward's."""
    cache = new_slot_cache(tiny_model.config, tiny_model.dtype, slots=3, capacity=16)
    a, b = PROMPTS[1], PROMPTS[0]
    for slot, p in ((2, a), (0, b)):
        tiny_model.prefill(p, cache.slot(slot))
        cache.lengths[slot] = len(p)
    logits = tiny_model.decode_rows([17, 23], [2, 0], cache)  # (2,V)
    np.testing.assert_allclose(logits[0], tiny_model.logits(a + [17])[-1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits[1], tiny_model.logits(b + [23])[-1], rtol=1e-4, atol=1e-4)
    assert list(cache.lengths) == [len(b) + 1, 0, len(a) + 1]


@pytest.mark.parametrize("model_name,tol", [("tiny_model", 1e-4), ("tiny_model64", 1e-11)])
@pytest.mark.parametrize("A", [1, 2, 5])
def test_compiled_rows_step_equals_the_full_forward(request, model_name, tol, A, monkeypatch):
    """Float weights: A sequences at different positions take one compiled call per layer
    (kernels.decode_rows; one sequence, kernels.decode_float) and get the full forward's logits."""
    model = request.getfixturevalue(model_name)
    calls = []
    for name in ("decode_rows", "decode_float"):
        kernel = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, kernel=kernel, name=name: calls.append(name) or kernel(*a))
    prompts = [[(7 * a + 3 * i) % 100 + 1 for i in range(2 + 3 * a)] for a in range(A)]
    cache = new_slot_cache(model.config, model.dtype, slots=A + 1, capacity=32)
    slots = list(range(A, 0, -1))  # not in order, slot 0 left empty
    for slot, p in zip(slots, prompts):
        model.prefill(p, cache.slot(slot))
        cache.lengths[slot] = len(p)
    logits = model.decode_rows([11 + a for a in range(A)], slots, cache)
    assert calls == ["decode_float" if A == 1 else "decode_rows"]
    for a, p in enumerate(prompts):
        np.testing.assert_allclose(logits[a], model.logits(p + [11 + a])[-1], rtol=tol, atol=tol)


@pytest.mark.parametrize("slots", [1, 2, 4])
def test_every_row_greedy_equals_decoding_it_alone(tiny_model, slots):
    """Mixed prompt lengths; with fewer slots than prompts the rest wait and join as slots free up."""
    got = generate_batch(tiny_model, PROMPTS, max_new_tokens=12, slots=slots)
    assert got == [alone(tiny_model, p, 12) for p in PROMPTS]


def test_int8_rows_equal_decoding_alone(int8_model):
    got = generate_batch(int8_model, PROMPTS, max_new_tokens=10, slots=4)
    assert got == [alone(int8_model, p, 10) for p in PROMPTS]


def test_a_row_that_stops_early_does_not_disturb_the_others(tiny_model):
    free = [alone(tiny_model, p, 12) for p in PROMPTS]
    stop = free[1][3]  # row 1 stops at its 4th token; others may contain it too
    want = [alone(tiny_model, p, 12, stop_ids=(stop,)) for p in PROMPTS]
    decoder = BatchDecoder(tiny_model, slots=4)
    seqs = [decoder.submit(p, 12, stop_ids=(stop,)) for p in PROMPTS]
    while decoder.busy:
        decoder.step()
    assert [s.new for s in seqs] == want
    assert seqs[1].finish_reason == "stop" and len(seqs[1].new) == 3
    assert all(s.finish_reason in ("stop", "length") for s in seqs)


def test_each_sequence_has_its_own_sampling(tiny_model):
    """Seeded sampling in a batch equals the same seed decoded alone; greedy rows stay greedy."""
    hot = SamplingParams(temperature=1.0, top_p=0.9, seed=7)
    decoder = BatchDecoder(tiny_model, slots=2)
    a, b = decoder.submit(PROMPTS[0], 10, hot), decoder.submit(PROMPTS[1], 10)
    while decoder.busy:
        decoder.step()
    assert a.new == alone(tiny_model, PROMPTS[0], 10, sampling=hot)
    assert b.new == alone(tiny_model, PROMPTS[1], 10)


def test_a_shared_prompt_is_prefilled_once_and_copied(tiny_model):
    decoder = BatchDecoder(tiny_model, slots=4)
    group = decoder.submit(PROMPTS[1], 8, SamplingParams(temperature=1.0, seed=3), n=3)
    greedy = decoder.submit(PROMPTS[1], 8)
    while decoder.busy:
        decoder.step()
    assert greedy.new == alone(tiny_model, PROMPTS[1], 8)
    assert len({tuple(s.new) for s in group}) > 1  # different samples of one prompt
    assert len({s.slot for s in group + [greedy]}) == 4


def test_the_cache_limit_and_bad_requests(tiny_model):
    decoder = BatchDecoder(tiny_model, slots=2, capacity=8)
    seq = decoder.submit(PROMPTS[1][:6], 50)
    while decoder.busy:
        decoder.step()
    assert seq.finish_reason == "length" and len(seq.new) == 3  # 6 + 2 fill the 8 positions; the 3rd needs none
    with pytest.raises(ContextLengthError):
        decoder.submit(list(range(8)), 4)
    with pytest.raises(ValueError, match="empty"):
        decoder.submit([], 4)
    with pytest.raises(ValueError, match="n must be"):
        decoder.submit([1], 4, n=3)


def test_chat_batch_gives_the_replies_of_chat(real_model):
    """On the real weights: four conversations (one with tools) batched give chat's replies one by one."""
    calc = {"name": "calculator", "description": "Evaluate an arithmetic expression",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                           "required": ["expression"]}}
    chats = [[{"role": "user", "content": q}] for q in
             ("What is the capital of France?", "Name three colors.", "What is 12 times 12?", "Say hi.")]
    tools = [None, None, [calc], None]
    batched = real_model.chat_batch(chats, tools, max_new_tokens=24, slots=4)
    assert batched == [real_model.chat(c, t, max_new_tokens=24) for c, t in zip(chats, tools)]
    assert "Paris" in batched[0]


def test_bench_batch_runs_each_size_in_its_own_process(tmp_path):
    folder = tiny_folder(tmp_path / "tiny")[0]
    r = subprocess.run([sys.executable, "-m", "nanoagent.bench", "generate", "--model", str(folder), "--batch", "1,3",
                        "--new-tokens", "6", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].startswith("BLAS: ") and [line.split(":")[0] for line in lines[2:]] == ["batch   1", "batch   3"]
    assert "1.0x batch 1" in lines[2] and "peak RSS" in lines[3]


def test_a_cancelled_sequence_frees_its_slot_and_leaves_the_others_alone(tiny_model):
    """Cancelled while running (its slot frees up for a waiting prompt) and while waiting (it never runs)."""
    decoder = BatchDecoder(tiny_model, slots=2)
    a, b, c, d = (decoder.submit(p, 12) for p in PROMPTS)
    decoder.step()
    decoder.step()
    decoder.cancel(a)
    decoder.cancel(d)  # still waiting
    assert a.finish_reason == d.finish_reason == "cancelled" and len(a.new) == 2 and d.new == []
    decoder.cancel(a)  # a second time: nothing happens
    while decoder.busy:
        decoder.step()
    assert [b.new, c.new] == [alone(tiny_model, p, 12) for p in PROMPTS[1:3]]
    assert d.slot == -1 and sorted(decoder.free) == [0, 1]


# ---- prompts a chunk at a time, and a slot's cache reused by the next prompt that shares its prefix -----

LONG = [(7 * i + 3) % 100 + 5 for i in range(23)]  # ids within the tiny vocabulary of 128


@pytest.mark.parametrize("chunk", [1, 4, 7, 256])
def test_a_prompt_prefilled_in_chunks_gets_the_logits_of_one_prefill(tiny_model64, chunk):
    decoder = BatchDecoder(tiny_model64, slots=2, capacity=40, chunk=chunk)
    seq = decoder.submit(LONG, max_new_tokens=1)
    steps = 0
    while seq.logits is None:
        decoder._admit()
        decoder._prefill()
        steps += 1
    assert steps == -(-len(LONG) // chunk)  # one chunk a step
    np.testing.assert_allclose(seq.logits, tiny_model64.logits(LONG)[-1], rtol=1e-10, atol=1e-10)


def test_a_long_prompt_joins_a_chunk_at_a_time_while_the_others_decode(tiny_model):
    """The running sequence gets a token every step while the long prompt goes in 4 tokens a step, and
    both replies are what each gets decoded alone."""
    decoder = BatchDecoder(tiny_model, slots=2, capacity=48, chunk=4)
    short = decoder.submit(PROMPTS[0], max_new_tokens=12)
    decoder.step()
    long = decoder.submit(LONG, max_new_tokens=5)
    tokens_of_short = []
    while not long.new:
        tokens_of_short.append(sum(seq is short for seq, _ in decoder.step()))
    assert tokens_of_short == [1] * len(tokens_of_short) and len(tokens_of_short) == -(-len(LONG) // 4)
    while decoder.busy:
        decoder.step()
    assert short.new == alone(tiny_model, PROMPTS[0], 12) and long.new == alone(tiny_model, LONG, 5)


def test_a_prompt_that_extends_a_finished_one_prefills_only_the_rest(tiny_model64):
    decoder = BatchDecoder(tiny_model64, slots=3, capacity=64, chunk=256)
    first = decoder.submit(LONG, max_new_tokens=6)
    other = decoder.submit(PROMPTS[1], max_new_tokens=3)
    while decoder.busy:
        decoder.step()
    turn2 = LONG + first.new + [2, 9, 9, 4]  # the conversation goes on: the reply and the next turn
    calls = []
    prefill = tiny_model64.prefill_rows
    tiny_model64.prefill_rows = lambda chunks, *a: calls.extend(map(len, chunks)) or prefill(chunks, *a)
    try:
        seq = decoder.submit(turn2, max_new_tokens=1)
        decoder._admit()
        decoder._prefill()
    finally:
        del tiny_model64.prefill_rows
    held = len(LONG) + len(first.new) - 1  # the reply's last token ended it by length: it was never fed
    assert seq.cached == held and calls == [len(turn2) - held]  # only the rest went through the network
    assert seq.slot == first.slot != other.slot  # the slot holding the longest shared prefix
    np.testing.assert_allclose(seq.logits, tiny_model64.logits(turn2)[-1], rtol=1e-10, atol=1e-10)
    assert (decoder.hits, decoder.cached_tokens) == (1, seq.cached)
    assert decoder.prompt_tokens == len(LONG) + len(PROMPTS[1]) + len(turn2)


def test_the_same_prompt_again_reuses_all_but_its_last_token(tiny_model):
    decoder = BatchDecoder(tiny_model, slots=1, capacity=40)
    a = decoder.submit(LONG, max_new_tokens=4)
    while decoder.busy:
        decoder.step()
    b = decoder.submit(LONG, max_new_tokens=4)  # the slot holds LONG and a's reply: LONG's last token is redone
    while decoder.busy:
        decoder.step()
    assert b.cached == len(LONG) - 1 and b.new == a.new == alone(tiny_model, LONG, 4)


def test_cancelling_a_prompt_while_it_goes_in_frees_its_slots(tiny_model):
    decoder = BatchDecoder(tiny_model, slots=3, capacity=40, chunk=4)
    group = decoder.submit(LONG, max_new_tokens=3, n=2)
    decoder.step()
    assert len(decoder.free) == 1 and decoder.prefilling
    decoder.cancel(group[1])
    assert len(decoder.free) == 2  # the copy's reserved slot
    decoder.cancel(group[0])
    assert len(decoder.free) == 3 and not decoder.busy and all(s.finish_reason == "cancelled" for s in group)


def test_a_group_prefilled_in_chunks_samples_each_copy_as_in_one_prefill(tiny_model64):
    sampling = SamplingParams(temperature=0.8, seed=3)
    replies = []
    for chunk in (5, 256):
        decoder = BatchDecoder(tiny_model64, slots=3, capacity=40, chunk=chunk)
        group = decoder.submit(LONG, 6, sampling, n=3)
        while decoder.busy:
            decoder.step()
        assert len({s.slot for s in group}) == 3
        replies.append([s.new for s in group])
    assert replies[0] == replies[1] and len({tuple(r) for r in replies[0]}) > 1  # the copies sample apart
