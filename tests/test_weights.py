"""Where weights come from: GGUF dequantization, the Q/K un-permutation, bf16, safetensors reading,
clear errors for broken files, atomic writes, and both ways of obtaining a model end to end
(a GGUF written by the `gguf` library, and a stand-in for the hub on 127.0.0.1)."""
import http.server
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q, GGUFWriter
from gguf.quants import dequantize, quantize

from conftest import FIXTURES, load_tiny
from nanoagent import checkpoint, weights
from nanoagent.checkpoint import read_model
from nanoagent.model import Model
from nanoagent.tokenizer import tokenizer_from_gguf_vocab
from nanoagent.weights import WeightsError


def llama_cpp_permute(w, n_heads):
    """The permutation llama.cpp's converter applies to Q/K rows (written from its description)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


# ---- blocks and layouts ------------------------------------------------------------------

@pytest.mark.parametrize("qtype,ours", [(Q.Q8_0, weights.dequantize_q8_0), (Q.Q4_1, weights.dequantize_q4_1)])
def test_dequantize_matches_gguf_library(qtype, ours):
    w = np.random.default_rng(0).standard_normal((6, 96)).astype(np.float32)
    raw = quantize(w, qtype)  # (6, bytes per row)
    np.testing.assert_array_equal(ours(raw), dequantize(raw, qtype))
    assert np.abs(ours(raw) - w).max() < (0.02 if qtype == Q.Q8_0 else 0.35)


def test_unpermute_inverts_llama_cpp_permutation():
    w = np.random.default_rng(1).standard_normal((3 * 8, 5))
    np.testing.assert_array_equal(weights.unpermute_qk(llama_cpp_permute(w, 3), 3), w)
    assert not np.array_equal(llama_cpp_permute(w, 3), w)


def test_bf16_widens_exactly():
    x = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # bf16 = the top 16 bits
    y = checkpoint.bf16_to_f32(bits)
    np.testing.assert_array_equal(y.view(np.uint32), x.view(np.uint32) & 0xFFFF0000)


# ---- safetensors files -------------------------------------------------------------------

def write_safetensors(path, tensors: dict[str, tuple[str, tuple, bytes]]):
    """A safetensors file from raw (dtype, shape, bytes) triples; lets tests write bf16 without torch."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    Path(path).write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def test_read_safetensors_is_zero_copy_and_reads_bf16(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([1.5, -2.25], dtype=np.float32)
    b16 = (b.view(np.uint32) >> 16).astype(np.uint16)
    write_safetensors(tmp_path / "m.safetensors", {"a": ("F32", (3, 4), a.tobytes()), "b": ("BF16", (2,), b16.tobytes())})
    t = checkpoint.read_safetensors(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(t["a"], a)
    np.testing.assert_array_equal(t["b"], b)
    assert not t["a"].flags.owndata and not t["a"].flags.writeable


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_broken_safetensors_raise_one_clear_error(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"a": ("F32", (64,), np.zeros(64, np.float32).tobytes())})
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:-100], "garbage": b"\x13" * 300, "empty": b""}[damage])
    with pytest.raises(WeightsError, match="model.safetensors.*(Delete|delete)"):
        checkpoint.read_safetensors(path)


def test_mismatched_tensors_name_the_file(tiny_model):
    params = dict(tiny_model.params)
    params["model.norm.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match=r"x\.safetensors: tensor model\.norm\.weight has shape"):
        checkpoint.check_params(params, tiny_model.config, Path("x.safetensors"))
    del params["model.norm.weight"]
    with pytest.raises(WeightsError, match="has no tensor model.norm.weight"):
        checkpoint.check_params(params, tiny_model.config, Path("x.safetensors"))


def test_resolve_rejects_an_incomplete_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="model.safetensors, tokenizer.json missing"):
        weights.resolve(tmp_path)


def test_atomic_dir_leaves_nothing_behind_on_failure(tmp_path):
    dest = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with checkpoint.atomic_dir(dest) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with checkpoint.atomic_dir(dest) as tmp:
        (tmp / "a").write_text("new")
    assert (dest / "a").read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_saved_folders_have_the_usual_permissions(tmp_path):
    """Other tools and users read a model folder: its files get the umask's usual mode (0644 under 022),
    not the private 0600 of a temporary file."""
    tiny = load_tiny()
    old = os.umask(0o022)
    try:
        out = checkpoint.save_folder(tmp_path / "m", tiny.config, tiny.params)
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o755
    assert {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()} == {"config.json": 0o644,
                                                                         "model.safetensors": 0o644}


# ---- obtaining a model end to end --------------------------------------------------------

TINY_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(c) for c in range(ord("!"), ord("!") + 124)] + ["ab"]
TINY_MERGES = ["a b"]


def tiny_tokenizer_json(path):
    tok = tokenizer_from_gguf_vocab(TINY_TOKENS, TINY_MERGES, [3, 3, 3] + [1] * 125)
    tok.save(str(path))
    return path


def test_gguf_with_quantized_and_permuted_tensors_converts_to_the_same_model(tmp_path):
    """Write the tiny model as llama.cpp would (Q8_0 embedding, Q8_0/F32 layers, permuted Q/K), convert it
    back, and get the dequantized model's logits."""
    tiny = load_tiny()
    cfg = tiny.config
    w = GGUFWriter(str(tmp_path / "tiny.gguf"), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(TINY_TOKENS)
    w.add_token_types([3, 3, 3] + [1] * 125)
    w.add_token_merges(TINY_MERGES)
    names = {v: k for k, v in weights.GGUF_NAMES.items()}
    expected = {}
    for name, a in tiny.params.items():
        if name == "model.embed_tokens.weight":
            gname, qtype = "token_embd.weight", Q.Q8_0
        elif name == "model.norm.weight":
            gname, qtype = "output_norm.weight", Q.F32
        else:
            _, _, i, *kind = name.split(".")
            gname = f"blk.{i}.{names['.'.join(kind[:-1])]}.weight"
            qtype = Q.F32 if a.ndim == 1 else (Q.Q4_1 if "mlp" in name else Q.Q8_0)
        if "q_proj" in name:
            a = llama_cpp_permute(a, cfg.num_attention_heads)
        if "k_proj" in name:
            a = llama_cpp_permute(a, cfg.num_key_value_heads)
        raw = a if qtype == Q.F32 else quantize(a, qtype)
        w.add_tensor(gname, raw, raw_dtype=qtype)
        back = a if qtype == Q.F32 else dequantize(raw, qtype)
        if "q_proj" in name:
            back = weights.unpermute_qk(back, cfg.num_attention_heads)
        if "k_proj" in name:
            back = weights.unpermute_qk(back, cfg.num_key_value_heads)
        expected[name] = back
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    out = weights.convert_gguf(tmp_path / "tiny.gguf", tmp_path / "converted")
    model = read_model(out)
    assert model.config == cfg
    for name, a in expected.items():
        np.testing.assert_array_equal(model.params[name], a, err_msg=name)
    ids = np.arange(10)
    want = Model(cfg, expected).logits(ids)
    np.testing.assert_allclose(model.logits(ids), want, atol=1e-5)
    assert checkpoint.read_tokenizer(out).encode("<|im_start|>abc") == [1, 127, TINY_TOKENS.index("c")]


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A stand-in for the hub on 127.0.0.1 serving the tiny model in bf16, as the hub serves SmolLM2."""
    tiny = load_tiny()
    files = {"config.json": (FIXTURES / "tiny" / "config.json").read_bytes(),
             "tokenizer.json": tiny_tokenizer_json(tmp_path / "tokenizer.json").read_bytes(),
             "tokenizer_config.json": b'{"eos_token": "<|im_end|>"}'}
    st = tmp_path / "bf16.safetensors"
    write_safetensors(st, {k: ("BF16", v.shape, (v.view(np.uint32) >> 16).astype(np.uint16).tobytes())
                           for k, v in tiny.params.items()})
    files["model.safetensors"] = st.read_bytes()
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            name = self.path.rsplit("/", 1)[-1]
            body = b"{}" if self.path.startswith("/api/models/") else files.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("NANOAGENT_HOME", str(tmp_path / "home"))
    yield tiny, requests
    server.shutdown()


def test_first_use_fetches_from_the_hub_and_widens_bf16(fake_hub, capsys):
    tiny, requests = fake_hub
    folder = weights.resolve(None)
    assert folder == weights.default_dir() and weights.is_complete(folder)
    assert "from the Hugging Face hub" in capsys.readouterr().err
    assert weights.source_of(folder) == "hub"
    model = read_model(folder)
    for name, a in tiny.params.items():  # bf16 of the tiny weights, widened exactly
        np.testing.assert_array_equal(model.params[name].view(np.uint32), a.view(np.uint32) & 0xFFFF0000)
    n = len(requests)
    assert weights.resolve(None) == folder and len(requests) == n  # second use: nothing fetched
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folders left
