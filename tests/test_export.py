"""GGUF export: names and the Q/K permutation, the metadata llama.cpp reads, and round trips of the
tiny and the real model back through our own GGUF reader (weights.convert_gguf)."""
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q, GGUFReader
from gguf.quants import dequantize, quantize

import nanoagent
from conftest import load_tiny
from nanoagent import export, quant, weights
from nanoagent.checkpoint import read_model, read_tokenizer
from nanoagent.model import Model
from nanoagent.quantize import quantize_folder
from nanoagent.weights import default_dir
from test_quant import TOKENS, tiny_folder


def expected_params(params, qtype):
    """What a GGUF of `qtype` holds, read back: matrices as they are (f32), rounded to float16 or to Q8_0 blocks."""
    out = {}
    for name, a in params.items():
        a = np.asarray(a, np.float32)
        if a.ndim == 2 and qtype != "f32":
            a = a.astype(np.float16).astype(np.float32) if qtype == "f16" else dequantize(quantize(a, Q.Q8_0), Q.Q8_0)
        out[name] = a
    return out


def test_permutation_is_llama_cpps_and_undone_by_our_reader():
    w = np.random.default_rng(0).standard_normal((3 * 8, 5))
    p = export.permute_qk(w, 3)
    np.testing.assert_array_equal(weights.unpermute_qk(p, 3), w)
    # within a head, llama.cpp's rows alternate the two halves HF rotates together: (0, 4, 1, 5, ...)
    np.testing.assert_array_equal(p[:8], w[[0, 4, 1, 5, 2, 6, 3, 7]])


def test_names_invert_the_readers():
    for name in load_tiny().config.param_shapes():
        assert weights.hf_name(export.gguf_name(name)) == name
    assert export.gguf_name("model.embed_tokens.weight") == "token_embd.weight"


@pytest.mark.parametrize("qtype", ["f32", "f16", "q8_0"])
def test_tiny_round_trip(tmp_path, qtype):
    src, tiny = tiny_folder(tmp_path / "float")
    out = export.export_gguf(src, tmp_path / "tiny.gguf", qtype)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left

    reader = GGUFReader(out)
    f = {k: v.contents() for k, v in reader.fields.items() if not k.startswith("GGUF.")}
    assert f["general.architecture"] == "llama" and f["tokenizer.ggml.pre"] == "smollm"
    assert f["tokenizer.ggml.tokens"] == TOKENS and f["tokenizer.ggml.merges"] == ["a b"]
    assert f["tokenizer.ggml.token_type"] == [3, 3, 3] + [1] * 125
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"], f["tokenizer.ggml.padding_token_id"]) == (1, 2, 2)
    assert "<|im_start|>" in f["tokenizer.chat_template"] and f["llama.rope.dimension_count"] == tiny.config.head_dim
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert "output.weight" not in kinds and len(kinds) == len(tiny.params)  # tied: no separate LM head
    assert kinds["blk.0.attn_norm.weight"] == Q.F32
    assert kinds["blk.0.ffn_up.weight"] == {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}[qtype]

    back = read_model(weights.convert_gguf(out, tmp_path / "back"))
    assert back.config == tiny.config
    want = expected_params(tiny.params, qtype)
    for name, a in want.items():
        np.testing.assert_array_equal(back.params[name], a, err_msg=name)
    ids = np.arange(12)
    np.testing.assert_allclose(back.logits(ids), Model(tiny.config, want).logits(ids), rtol=1e-5, atol=1e-5)
    assert read_tokenizer(tmp_path / "back").encode("<|im_start|>abc") == [1, 127, TOKENS.index("c")]


def test_an_int8_folder_exports_its_dequantized_weights(tmp_path):
    src, _ = tiny_folder(tmp_path / "float")
    int8 = quantize_folder(src, tmp_path / "int8", group=16)
    out = export.export_gguf(int8, tmp_path / "int8.gguf", "f16")
    back = read_model(weights.convert_gguf(out, tmp_path / "back"))
    w = read_model(int8).params["model.layers.1.mlp.down_proj.weight"]
    np.testing.assert_array_equal(back.params["model.layers.1.mlp.down_proj.weight"],
                                  quant.dequantize(w).astype(np.float16).astype(np.float32))


def test_cli_writes_a_gguf_and_errors_are_one_line(tmp_path):
    src, _ = tiny_folder(tmp_path / "float")
    run = lambda *a: subprocess.run([sys.executable, "-m", "nanoagent.export", *a], capture_output=True, text=True,
                                    timeout=300)
    r = run("--model", str(src), "--gguf", str(tmp_path / "m.gguf"), "--type", "f16")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.gguf").stat().st_size > 0 and "llama.cpp" in r.stderr
    r = run("--model", str(tmp_path / "missing"), "--gguf", str(tmp_path / "x.gguf"))
    assert r.returncode != 0 and "not a model folder" in r.stderr and "Traceback" not in r.stderr


def test_real_model_q8_0_round_trip(real_model, tmp_path):
    """SmolLM2 exported as llama.cpp Q8_0 and read back: every tensor is its Q8_0 rounding, the
    tokenizer rebuilt from the file encodes a chat as the original does, and the logits follow."""
    out = export.export_gguf(default_dir(), tmp_path / "smollm2-q8_0.gguf", "q8_0")
    assert out.stat().st_size < 150e6
    back = nanoagent.load(weights.convert_gguf(out, tmp_path / "back"))
    for name in ["model.embed_tokens.weight", "model.layers.7.self_attn.q_proj.weight",
                 "model.layers.7.self_attn.k_proj.weight", "model.norm.weight"]:
        np.testing.assert_array_equal(back.model.params[name],
                                      expected_params({name: real_model.model.params[name]}, "q8_0")[name])
    tok = real_model.tokenizer
    text = tok.render_chat([{"role": "user", "content": "Ünïcode, digits 12345 and\ttabs: what is 2+2?"}])
    ids = tok.encode(text)
    assert back.tokenizer.encode(text) == ids
    a, b = real_model.logits(ids), back.logits(ids)
    assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.9 and np.abs(a - b).max() < 3.0


def test_llama_cpp_runs_the_export_when_installed(real_model, tmp_path):
    """Optional: where llama-cpp-python is installed, llama.cpp itself loads the file and its logits follow ours."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from nanoagent.weights import default_dir
    out = export.export_gguf(default_dir(), tmp_path / "smollm2-f16.gguf", "f16")
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=256, logits_all=True, verbose=False)
    tok = real_model.tokenizer
    text = tok.render_chat([{"role": "user", "content": "What is the capital of France?"}])
    ids = tok.encode(text)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    theirs = np.asarray(llm.scores[:len(ids)])
    ours = real_model.logits(ids)
    assert (theirs.argmax(-1) == ours.argmax(-1)).mean() > 0.9 and np.abs(theirs - ours).max() < 1.0
