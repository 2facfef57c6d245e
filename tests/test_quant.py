"""int8: the kernels against their NumPy twins, the error bound, the model on int8 weights, int8
checkpoints, and on the real weights perplexity, greedy agreement, size and memory."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nanoagent
from conftest import load_tiny
from nanoagent import kernels, kernels_int8, quant
from nanoagent.checkpoint import WeightsError, read_model, save_folder
from nanoagent.decode import ContextLengthError
from nanoagent.eval.agreement import CHECK_PROMPTS, agreement, forced_agreement, greedy_tokens
from nanoagent.eval.ppl import perplexity
from nanoagent.kernels_int8 import decode_int8
from nanoagent.model import Model
from nanoagent.quant import Int8Weight
from nanoagent.quantize import quantize_folder
from nanoagent.tokenizer import tokenizer_from_gguf_vocab
from nanoagent.weights import default_dir

# ---- kernels and their twins ------------------------------------------------------------------


@pytest.mark.parametrize("dtype,limit,gs", [(np.int8, 127, 16), (np.int8, 127, 48), (np.int16, 32767, 16),
                                            (np.int16, quant.activation_limit(48), 48)])
@pytest.mark.parametrize("xdtype", [np.float32, np.float64])
def test_quantize_rows_equals_twin(dtype, limit, gs, xdtype):
    x = np.random.default_rng(0).standard_normal((7, 48)).astype(xdtype) * 3
    x[2, :gs] = 0  # an all-zero group gets scale 0 and q 0
    x[3, 5] = 40.0  # an outlier
    q, s = kernels_int8.quantize_rows(x, gs, limit, dtype)
    q_ref, s_ref = kernels_int8.quantize_rows_ref(x, gs, limit, dtype)
    assert q.dtype == dtype and s.dtype == np.float32 and s.shape == (7, 48 // gs)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref)
    assert np.abs(q).max() == limit and s[2, 0] == 0 and not q[2, :gs].any()


def test_round_rows_equals_twin():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    scale = (np.abs(x).reshape(5, 4, 16).max(-1) / 127 * rng.uniform(0.9, 1.1, (5, 4))).astype(np.float32)
    scale[1, 2] = 0
    q = kernels_int8.round_rows(x, scale, 127, np.int8)
    np.testing.assert_array_equal(q, kernels_int8.round_rows_ref(x, scale, 127, np.int8))
    assert np.abs(q.astype(int)).max() == 127 and not q[1, 32:48].any()  # clipped where the scale is small


def test_group_for_falls_back_to_the_largest_group_that_fits():
    assert (quant.group_for(576, 32), quant.group_for(160, 64), quant.group_for(576, None)) == (32, 40, None)


def test_dequantize_rows_equals_twin():
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, (9, 48)).astype(np.int8)
    s = rng.random((9, 3)).astype(np.float32)
    np.testing.assert_array_equal(kernels_int8.dequantize_rows(q, s), kernels_int8.dequantize_rows_ref(q, s))


@pytest.mark.parametrize("vector", [False, True])
@pytest.mark.parametrize("N,Cout,Cin,gs", [(1, 37, 64, 16), (5, 37, 96, 32), (3, 20, 96, 96), (9, 7, 128, 64),
                                           (1, 3, 32, 32), (2, 64, 160, 32), (1, 129, 576, 32)])
def test_matmul_int8_equals_twin(N, Cout, Cin, gs, vector):
    """Both paths: groups of 32 take the vector kernel when asked (rows four at a time, then the
    rows left over; fewer than four rows all left over), other groups the portable one."""
    rng = np.random.default_rng(2)
    xq, sx = kernels_int8.quantize_rows(rng.standard_normal((N, Cin)), gs, quant.activation_limit(gs), np.int16)
    q, sw = kernels_int8.quantize_rows(rng.standard_normal((Cout, Cin)), gs, 127, np.int8)
    out = kernels_int8.matmul_int8(xq, sx, q, sw, vector)
    ref = kernels_int8.matmul_int8_ref(xq, sx, q, sw)
    assert out.shape == (N, Cout) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("vector", [False, True])
@pytest.mark.parametrize("gs", [32, 64, 512, 1536])
def test_matmul_int8_sums_the_largest_groups_without_overflow(gs, vector):
    """Every product at its extreme: gs * 127 * limit must still fit the int32 sum."""
    limit = quant.activation_limit(gs)
    xq = np.full((2, 1536), limit, np.int16)
    xq[1] = -limit
    q = np.full((3, 1536), 127, np.int8)
    q[1] = -127
    sx = np.ones((2, 1536 // gs), np.float32)
    sw = np.ones((3, 1536 // gs), np.float32)
    out = kernels_int8.matmul_int8(xq, sx, q, sw, vector)
    np.testing.assert_allclose(out, kernels_int8.matmul_int8_ref(xq, sx, q, sw), rtol=1e-6)
    assert out[0, 0] == pytest.approx(1536 * 127 * limit, rel=1e-6)


# ---- quantized weights --------------------------------------------------------------------------

def check_error_bound(w, qw: Int8Weight):
    """Each weight is within half a step of its group's grid, so a tensor's error is at most max|w| / 254."""
    err = np.abs(quant.dequantize(qw) - w)  # (Cout,Cin)
    step = np.repeat(qw.scale, qw.group, axis=1)  # (Cout,G) -> (Cout,Cin)
    assert np.all(err <= step / 2 * (1 + 1e-5))  # (a weight exactly halfway rounds either way)
    assert err.max() <= np.abs(w).max() / 254 * (1 + 1e-5)


@pytest.mark.parametrize("group", [None, 32])
def test_quantize_error_is_bounded(group):
    w = np.random.default_rng(3).standard_normal((40, 96)).astype(np.float32) * 0.05
    qw = quant.quantize(w, group)
    assert qw.q.dtype == np.int8 and qw.shape == w.shape and qw.group == (96 if group is None else 32)
    check_error_bound(w, qw)


def test_quantize_rejects_groups_that_do_not_divide_a_row():
    with pytest.raises(ValueError, match="groups of 64"):
        quant.quantize(np.zeros((4, 96), np.float32), 64)


@pytest.mark.parametrize("N", [1, quant.BLAS_ROWS - 1, quant.BLAS_ROWS, 3 * quant.BLAS_ROWS])
def test_linear_kernel_and_blas_paths_agree(N, monkeypatch):
    """Few rows go through the int8 kernel (its twin's function), many through BLAS block by block on
    the dequantized weights; the two differ only by the kernel's int16 rounding of the input."""
    monkeypatch.setattr(quant, "BLOCK_FLOATS", 20 * 64)  # several blocks of weight rows
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, 64)).astype(np.float32)
    qw = quant.quantize(rng.standard_normal((50, 64)).astype(np.float32), 16)
    y = quant.linear(x, qw)
    exact = x @ quant.dequantize(qw).T
    scale = np.abs(exact).max()
    if N < quant.BLAS_ROWS:
        xq, sx = kernels_int8.quantize_rows(x, 16, quant.activation_limit(16), np.int16)
        np.testing.assert_allclose(y, kernels_int8.matmul_int8_ref(xq, sx, qw.q, qw.scale), rtol=1e-5, atol=1e-6 * scale)
    else:
        np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(y, exact, rtol=0, atol=2e-4 * scale)


def test_embedding_dequantizes_the_looked_up_rows():
    qw = quant.quantize(np.random.default_rng(5).standard_normal((30, 64)).astype(np.float32), 16)
    ids = np.array([[3, 3, 29], [0, 7, 12]])
    np.testing.assert_array_equal(quant.embedding(ids, qw), quant.dequantize(qw)[ids])


# ---- the model on int8 weights ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_int8():
    tiny = load_tiny()
    return tiny, Model(tiny.config, quant.quantize_params(tiny.params, 16))


def test_int8_model_keeps_norms_float_and_follows_the_float_model(tiny_int8):
    tiny, model = tiny_int8
    for name, w in model.params.items():
        assert isinstance(w, Int8Weight) == (tiny.params[name].ndim == 2), name
    assert model.dtype == np.float32 and model.num_params() == tiny.num_params()
    ids = np.arange(20) % tiny.config.vocab_size
    a, b = tiny.logits(ids), model.logits(ids)
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()  # random tiny weights: int8 moves logits a little
    # exactly the float model on the dequantized weights, but for the int16 rounding of activations
    deq = Model(tiny.config, {k: quant.dequantize(w) if isinstance(w, Int8Weight) else w for k, w in model.params.items()})
    np.testing.assert_allclose(b, deq.logits(ids), rtol=0, atol=2e-3 * np.abs(a).max())


@pytest.mark.parametrize("half", [False, True])
def test_int8_incremental_decoding_equals_full_forward(tiny_int8, monkeypatch, half):
    """With a float32 cache and with a float16 one (kernels.HALF_CACHE), whatever this CPU would choose."""
    monkeypatch.setattr(kernels, "HALF_CACHE", half)
    _, model = tiny_int8
    ids = (np.arange(12) * 7) % model.config.vocab_size
    full = model.logits(ids)
    kv = model.new_kv_cache(len(ids))
    assert kv.kt.dtype == kv.v.dtype == (np.float16 if half else np.float32)
    steps = [model.prefill(ids[:5], kv)] + [model.decode_step(int(t), kv) for t in ids[5:]]
    # the full forward (12 rows) runs on BLAS, the steps on the int8 kernel: equal but for its int16 input
    # (and the float16 cache's rounding, 2^-11 of each key and value)
    np.testing.assert_allclose(np.stack(steps), full[4:], rtol=0, atol=1e-3 * np.abs(full).max())
    rows = model.new_kv_cache(len(ids), batch=2)  # a batch goes through `forward`, the cache read back as float32
    model.forward(np.stack([ids[:5], ids[:5]]), rows, keep_caches=False)
    batched = [model.lm_head(model.forward(np.array([[t], [t]]), rows, keep_caches=False)[0][1, -1]) for t in ids[5:]]
    np.testing.assert_allclose(np.stack(batched), full[5:], rtol=0, atol=1e-3 * np.abs(full).max())


def test_a_float16_cache_holds_the_nearest_half_of_each_key(tiny_int8, monkeypatch):
    """The compiled step rounds keys and values to float16 as NumPy does (to nearest, ties to even):
    layer 0's keys at a new position do not depend on the cache, so both caches get the same ones."""
    _, model = tiny_int8
    ids = (np.arange(9) * 5) % model.config.vocab_size
    caches = {}
    for half in (False, True):
        monkeypatch.setattr(kernels, "HALF_CACHE", half)
        kv = caches[half] = model.new_kv_cache(len(ids))
        model.prefill(ids[:4], kv)
        model.decode_step(int(ids[4]), kv)
    np.testing.assert_array_equal(caches[True].kt[0, ..., 4], caches[False].kt[0, ..., 4].astype(np.float16))
    np.testing.assert_array_equal(caches[True].v[0, :, :, 4], caches[False].v[0, :, :, 4].astype(np.float16))


def layered_steps(model, ids, n_prompt):
    """Logits and cache of decoding ids[n_prompt:] one token at a time through `forward` (layer by layer)."""
    kv = model.new_kv_cache(len(ids))
    model.prefill(ids[:n_prompt], kv)
    return [model.prefill(np.array([[t]]), kv) for t in ids[n_prompt:]], kv


@pytest.mark.parametrize("choice,variable,on,off,feature", [
    (kernels.half_cache, "NANOAGENT_KV_CACHE", "float16", "float32", "f16c"),
    (kernels_int8.vector_path, "NANOAGENT_INT8_KERNEL", "vector", "portable", "avx2")])
def test_cpu_paths_are_chosen_by_cpu_or_by_the_environment(monkeypatch, choice, variable, on, off, feature):
    """The float16 cache and the int8 vector path: the environment first, then 64-bit ARM (its half-float
    conversions and NEON are always there), then the x86 feature."""
    monkeypatch.setenv(variable, off)
    assert choice() is False
    monkeypatch.setenv(variable, on)
    assert choice() is True
    monkeypatch.delenv(variable)
    monkeypatch.setattr(kernels.llvmlite.binding, "get_host_cpu_features", lambda: {})
    monkeypatch.setattr(kernels.platform, "machine", lambda: "aarch64")
    assert choice() is True
    monkeypatch.setattr(kernels.platform, "machine", lambda: "x86_64")
    assert choice() is False
    monkeypatch.setattr(kernels.llvmlite.binding, "get_host_cpu_features", lambda: {feature: True})
    assert choice() is True


def test_int8_kernels_drop_their_cache_when_kernels_py_changes(tmp_path, monkeypatch):
    """The int8 decoding step compiles kernels.py's attention into itself, so its cache keeps a
    stamp of kernels.py and is dropped when that file changes (Numba only checks its own file)."""
    monkeypatch.setattr(kernels_int8._decode_layer_int8._cache, "_cache_path", str(tmp_path))
    old, other = tmp_path / "kernels_int8._decode_layer_int8-1.py311.nbi", tmp_path / "kernels._rmsnorm-1.py311.nbi"
    old.write_text("compiled against some kernels.py")
    other.write_text("kernels.py's own, which Numba checks itself")
    kernels_int8.forget_stale_kernels()  # no stamp yet: it may be stale
    assert not old.exists() and other.exists()
    new = tmp_path / "kernels_int8._decode_layer_int8-2.py311.nbi"
    new.write_text("compiled against this kernels.py")
    kernels_int8.forget_stale_kernels()  # stamp unchanged: kept
    assert new.exists()
    (tmp_path / "kernels_int8.kernels-py-sha256").write_text("a stamp of another kernels.py")
    kernels_int8.forget_stale_kernels()
    assert not new.exists()


@pytest.mark.parametrize("group,vector", [(16, True), (None, True), (32, True), (32, False)])
def test_int8_compiled_decode_step_equals_the_layered_forward(group, vector, monkeypatch):
    monkeypatch.setattr(kernels_int8, "VECTOR", vector)  # group 32: every product of the tiny model takes that path
    calls = []
    monkeypatch.setattr(kernels_int8, "decode_int8", lambda *a: calls.append(1) or decode_int8(*a))
    tiny = load_tiny()
    model = Model(tiny.config, quant.quantize_params(tiny.params, group))
    assert model.int8 and not tiny.int8
    ids = (np.arange(14) * 5 + 3) % model.config.vocab_size
    want, kv_want = layered_steps(model, ids, 4)
    kv = model.new_kv_cache(len(ids))
    model.prefill(ids[:4], kv)
    got = [model.decode_step(int(t), kv) for t in ids[4:]]
    assert len(calls) == len(ids) - 4  # each step went through the compiled per-layer kernels
    # the same kernels in the same order of sums: equal to float32 rounding
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=0, atol=1e-6 * np.abs(want).max())
    assert kv.length == kv_want.length == len(ids)
    np.testing.assert_allclose(kv.kt, kv_want.kt, rtol=0, atol=1e-6 * np.abs(kv_want.kt).max())
    np.testing.assert_allclose(kv.v, kv_want.v, rtol=0, atol=1e-6 * np.abs(kv_want.v).max())
    with pytest.raises(ContextLengthError):
        model.decode_step(1, kv)  # the cache is full


# ---- int8 checkpoints ----------------------------------------------------------------------------

TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(c) for c in range(ord("!"), ord("!") + 124)] + ["ab"]


def tiny_folder(path):
    """The tiny model as a float HF folder with a 128-token byte-level BPE tokenizer."""
    tiny = load_tiny()
    tok = tokenizer_from_gguf_vocab(TOKENS, ["a b"], [3, 3, 3] + [1] * 125)
    tok.save(str(path.parent / "tok.json"))
    return save_folder(path, tiny.config, tiny.params, path.parent / "tok.json"), tiny


def test_int8_checkpoint_round_trip(tmp_path):
    src, tiny = tiny_folder(tmp_path / "float")
    out = quantize_folder(src, tmp_path / "int8", group=16)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization"]["group_size"] == 16 and cfg["hidden_size"] == tiny.config.hidden_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float", "int8", "tok.json"]  # nothing half-written

    loaded = nanoagent.load(out)  # an int8 folder loads as int8 with no flag
    on_load = nanoagent.ChatModel(read_model(src, int8=True, group=16), loaded.tokenizer)  # quantized while loading
    default = nanoagent.load(src, int8=True).model  # groups of 32 where a row allows, else the largest that fits
    assert {w.group for w in default.params.values() if isinstance(w, Int8Weight)} == \
        {quant.group_for(c, quant.GROUP) for c in (64, 160)}  # C = 64, F = 160
    direct = quant.quantize_params(tiny.params, 16)
    for name, w in direct.items():
        for m in (loaded, on_load):
            got = m.model.params[name]
            if isinstance(w, Int8Weight):
                np.testing.assert_array_equal(got.q, w.q, err_msg=name)
                np.testing.assert_array_equal(got.scale, w.scale, err_msg=name)
            else:
                np.testing.assert_array_equal(got, w, err_msg=name)
    assert not loaded.model.params["model.embed_tokens.weight"].q.flags.owndata  # memory-mapped, not copied
    ids = np.arange(10)
    np.testing.assert_array_equal(loaded.logits(ids), on_load.logits(ids))
    steps = []
    for m in (loaded.model, on_load.model):  # read-only memory-mapped weights decode like quantized ones
        kv = m.new_kv_cache(12)
        m.prefill(ids, kv)
        steps.append([m.decode_step(t, kv) for t in (3, 4)])
    np.testing.assert_array_equal(steps[0], steps[1])
    assert loaded.tokenizer.encode("<|im_start|>ab") == [1, 127]


def test_per_channel_checkpoint_and_cli(tmp_path):
    src, _ = tiny_folder(tmp_path / "float")
    r = subprocess.run([sys.executable, "-m", "nanoagent.quantize", "--model", str(src), "--out",
                        str(tmp_path / "int8"), "--group", "channel"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Wrote" in r.stderr and "MB" in r.stderr
    model = read_model(tmp_path / "int8")
    assert all(w.scale.shape[1] == 1 for w in model.params.values() if isinstance(w, Int8Weight))
    assert json.loads((tmp_path / "int8" / "config.json").read_text())["quantization"]["group_size"] == "channel"


def test_a_damaged_int8_checkpoint_is_one_clear_error(tmp_path):
    from safetensors.numpy import load_file, save_file
    src, _ = tiny_folder(tmp_path / "float")
    out = quantize_folder(src, tmp_path / "int8", group=16)
    tensors = load_file(str(out / "model.safetensors"))
    tensors["model.layers.0.mlp.up_proj.weight_scale"] = np.ones((3, 3), np.float32)
    save_file(tensors, str(out / "model.safetensors"))
    with pytest.raises(WeightsError, match="up_proj.weight .*not an int8 weight.*nanoagent.quantize"):
        read_model(out)


# ---- the real weights ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_int8(real_model):
    return nanoagent.ChatModel(Model(real_model.config, quant.quantize_params(real_model.model.params)),
                               real_model.tokenizer)


def test_every_real_tensor_error_is_bounded(real_model, real_int8):
    for name, w in real_int8.model.params.items():
        if isinstance(w, Int8Weight):
            check_error_bound(np.asarray(real_model.model.params[name]), w)


def heldout_ids(tokenizer, data_dir, n=2048):
    """The first n tokens of the GSM8K test answers, one after another."""
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()[:200]]
    ids = tokenizer.encode("\n\n".join(r["answer"] for r in rows))
    assert len(ids) >= n
    return ids[:n]


def test_real_perplexity_rises_less_than_one_percent(real_model, real_int8, data_dir):
    ids = heldout_ids(real_model.tokenizer, data_dir)
    ppl32, ppl8 = perplexity(real_model, ids), perplexity(real_int8, ids)
    assert 1.0 < ppl32 < 20
    assert ppl8 <= ppl32 * 1.01, (ppl32, ppl8)


def test_real_greedy_replies_agree(real_model, real_int8):
    """The 20 check prompts, 32 greedy tokens each. Where float32 has a near-tie between its top two
    tokens, int8 may pick the other one, and the rest of that reply goes its own way (88.6% of the
    positions agree; llama.cpp's Q8_0 weights give the same). Read along float32's own replies,
    int8 picks float32's top token at 99% of the positions."""
    a = greedy_tokens(real_model, CHECK_PROMPTS, 32)
    b = greedy_tokens(real_int8, CHECK_PROMPTS, 32)
    assert agreement(a, b) >= 0.85
    assert forced_agreement(real_model, real_int8, CHECK_PROMPTS, a) >= 0.98


def test_real_int8_checkpoint_is_small_and_generates_in_little_memory(real_model, tmp_path):
    """The checkpoint is at most 150 MB, and `generate` on it peaks under 400 MB. The peak is the child's
    own VmHWM: its ru_maxrss would include this (large) test process, which it was forked from."""
    if not Path("/proc/self/status").exists():
        pytest.skip("VmHWM needs Linux's /proc")
    out = quantize_folder(default_dir(), tmp_path / "int8")
    assert sum(f.stat().st_size for f in out.iterdir()) <= 150e6
    code = ("import sys; from nanoagent.generate import main; main(sys.argv[1:]); "
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, "--model", str(out), "--prompt", "What is the capital of France?",
                        "--max-new-tokens", "12"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", r.stderr).group(1))
    assert peak_kib * 1024 < 400e6, r.stderr
