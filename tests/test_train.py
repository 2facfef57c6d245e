"""Training: the glaive converter, batching, overfitting one batch, exact resume, divergence
handling, and a short smoke run on the real weights."""
import json
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import nanoagent
from conftest import FIXTURES
from nanoagent import train as T
from nanoagent.checkpoint import read_model
from nanoagent.data import batch as DB
from nanoagent.data.io import DataError
from nanoagent.optim import adamw_init
from nanoagent.tokenizer import render_chat


# ---- data ---------------------------------------------------------------------------------

def test_glaive_rows_convert_to_messages_and_tools(data_dir):
    rows = json.loads((data_dir / "glaive" / "glaive_toolcall_en_demo.json").read_text())
    messages, tools = DB.row_to_chat(rows[0])
    assert tools[0]["name"] == "search_recipes"
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "tool", "assistant",
                                             "user", "assistant"]
    call = messages[3]
    assert call["content"] == "" and call["tool_calls"] == [
        {"name": "search_recipes", "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]}}]
    assert messages[4]["content"].startswith('{"recipes"')
    text = render_chat(messages, tools, add_generation_prompt=False)
    assert ('<|im_start|>assistant\n<tool_call>[{"name": "search_recipes", "arguments": {"ingredients": '
            '["chicken", "bell peppers", "rice"]}}]</tool_call><|im_end|>') in text
    assert '<|im_start|>user\n<tool_result>{"recipes"' in text
    assert "<tools>" in text and '"name": "search_recipes"' in text
    # a row without any call: plain user/assistant turns, tools still offered
    plain = next(r for r in rows if all(t["from"] in ("human", "gpt") for t in r["conversations"]))
    messages, tools = DB.row_to_chat(plain)
    assert {m["role"] for m in messages} == {"user", "assistant"} and isinstance(tools, list)
    # every row of the sample converts and keeps assistant tokens within 1024 tokens but a few
    assert all(DB.row_to_chat(r) is not None for r in rows)


def test_sharegpt_text_then_call_is_one_assistant_turn():
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "Let me look."},
                             {"from": "function_call", "value": '{"name": "f", "arguments": "{\\"x\\": 1}"}'},
                             {"from": "observation", "value": "2"}, {"from": "gpt", "value": "It is 2."}],
           "tools": '[{"name": "f", "description": "adds one", "parameters": {"type": "object", "properties": {}}}]'}
    messages, tools = DB.row_to_chat(row)
    assert [t["name"] for t in tools] == ["f"]
    assert messages[1] == {"role": "assistant", "content": "Let me look.", "tool_calls": [{"name": "f", "arguments": {"x": 1}}]}
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    # a row in the common form is used as it is
    common = {"messages": messages, "tools": tools}
    assert DB.row_to_chat(common) == (messages, tools)


def test_collate_pads_right_and_shifts_the_mask():
    a = DB.Example(np.array([5, 6, 7, 8]), np.array([0, 0, 1, 1], bool))
    b = DB.Example(np.array([9, 10]), np.array([0, 1], bool))
    batch = DB.collate([a, b], pad_id=2)
    np.testing.assert_array_equal(batch["inputs"], [[5, 6, 7], [9, 10, 2]])
    np.testing.assert_array_equal(batch["targets"], [[6, 7, 8], [10, 2, 2]])
    np.testing.assert_array_equal(batch["mask"], [[0, 1, 1], [1, 0, 0]])  # target t counts if token t+1 is the assistant's
    np.testing.assert_array_equal(batch["lengths"], [3, 1])
    packed = DB.pack([a, b, a], seq_len=6)
    assert [len(p.ids) for p in packed] == [6, 4]


def test_epoch_order_is_a_function_of_seed_and_epoch():
    assert (DB.epoch_order(10, 3, 1) == DB.epoch_order(10, 3, 1)).all()
    assert not (DB.epoch_order(10, 3, 1) == DB.epoch_order(10, 3, 2)).all()


def test_malformed_rows(tmp_path):
    with pytest.raises(DataError, match="row 1"):
        DB.encode_rows([{"ids": [1, 2, 3]}, {"ids": [1, 2], "mask": [1]}], None, 16)
    examples, skipped = DB.encode_rows([{"ids": [1, 2, 3]}, {"text": "no messages"}, {"ids": [4, 5], "mask": [1, 0]}],
                                      None, 16)
    assert len(examples) == 1 and skipped == {"not a chat": 1, "no assistant token within --seq-len": 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ids": [1, 2]}\n{oops\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        DB.load_examples(str(bad), None, 16)



def test_replay_adds_n_rows_drawn_from_an_earlier_file(tmp_path):
    """--replay FILE:N: N of FILE's rows, drawn by the seed, after --data's rows (as `cat` would lay them); the
    same draw as shuffling FILE's lines with random.Random(seed) and taking the first N."""
    data, earlier = tmp_path / "data.jsonl", tmp_path / "earlier.jsonl"
    data.write_text("".join(json.dumps({"ids": [1, 2, k], "mask": [0, 1, 1]}) + "\n" for k in range(3)))
    lines = [json.dumps({"ids": [7, 8, 9, k], "mask": [0, 0, 1, 1]}) + "\n" for k in range(10)]
    earlier.write_text("".join(lines))
    train, evals, _ = DB.load_examples(str(data), None, 16, eval_fraction=0.0, seed=3, replay=[(str(earlier), 4)])
    random.Random(3).shuffle(lines)
    assert [list(e.ids) for e in train] == ([[1, 2, k] for k in range(3)]
                                            + [json.loads(line)["ids"] for line in lines[:4]]) and not evals
    with pytest.raises(DataError, match="holds 10 rows"):
        DB.load_examples(str(data), None, 16, replay=[(str(earlier), 11)])
    with pytest.raises(SystemExit):
        T.parse_args(["--data", str(data), "--replay", str(earlier)])  # no N
    assert T.parse_args(["--data", str(data), "--replay", f"{earlier}:4"]).replay == [[str(earlier), 4]]

# ---- the optimizer loop on the tiny model ---------------------------------------------------------

def test_tiny_model_overfits_one_batch():
    model = T.load_model(FIXTURES / "tiny")
    rng = np.random.default_rng(0)
    batch = DB.collate([DB.Example(rng.integers(0, 128, 17), np.ones(17, bool)) for _ in range(2)], pad_id=2)
    state = adamw_init(model.params)
    losses = [T.train_step(model, [batch], state, lr=3e-3, kind="sft", clip=1.0).loss for _ in range(150)]
    assert losses[0] > 4.0
    assert losses[-1] < 0.05, losses[-10:]


def test_nan_loss_stops_before_touching_the_weights():
    model = T.load_model(FIXTURES / "tiny")
    model.params["model.layers.0.mlp.up_proj.weight"][0, 0] = np.nan
    before = {k: p.copy() for k, p in model.params.items()}
    batch = DB.collate([DB.Example(np.arange(10), np.ones(10, bool))], pad_id=2)
    with pytest.raises(T.TrainingError, match="nan"):
        T.train_step(model, [batch], adamw_init(model.params), lr=1e-3)
    for k, p in model.params.items():
        np.testing.assert_array_equal(p, before[k])


# ---- the command, exact resume -----------------------------------------------------------------------

@pytest.fixture
def token_data(tmp_path):
    """Pre-tokenized rows for the tiny model (vocabulary 128): ids and an assistant mask."""
    rng = np.random.default_rng(1)
    path = tmp_path / "tokens.jsonl"
    with open(path, "w") as f:
        for _ in range(14):
            n = int(rng.integers(8, 24))
            f.write(json.dumps({"ids": rng.integers(3, 128, n).tolist(),
                                "mask": (rng.random(n) < 0.6).tolist()}) + "\n")
    return path


def tiny_args(data, out, *extra):
    return ["--model", str(FIXTURES / "tiny"), "--data", str(data), "--out", str(out), "--steps", "6",
            "--batch-size", "2", "--grad-accum", "2", "--seq-len", "16", "--lr", "1e-2", "--warmup", "2",
            "--eval-fraction", "0.2", "--loss", "dft", "--quiet", *extra]


def test_resume_repeats_the_uninterrupted_run(tmp_path, token_data):
    full = T.run(tiny_args(token_data, tmp_path / "a", "--save-every", "2", "--eval-every", "3"))
    assert full["done"] and len(full["history"]) == 6
    part = T.run(tiny_args(token_data, tmp_path / "b", "--stop-after", "4"))
    assert not part["done"] and len(part["history"]) == 4
    assert not (tmp_path / "b" / "model").exists()
    rest = T.run(["--resume", "--data", str(token_data), "--out", str(tmp_path / "b"), "--quiet"])
    assert rest["done"]
    losses_a = [h["loss"] for h in full["history"]]
    losses_b = [h["loss"] for h in rest["history"]]
    np.testing.assert_allclose(losses_b, losses_a, rtol=1e-6)
    assert [h["step"] for h in rest["history"]] == list(range(1, 7))
    a = read_model(tmp_path / "a" / "model")
    b = read_model(tmp_path / "b" / "model")
    for k in a.params:
        np.testing.assert_allclose(b.params[k], a.params[k], rtol=1e-5, atol=1e-7, err_msg=k)
    # held-out evaluations: at the start, every 3 steps and at the end (random tokens: no trend to expect)
    assert [e["step"] for e in full["evals"]] == [0, 3, 6]
    assert all(np.isfinite(e["loss"]) and 0 < e["p"] < 1 and e["tokens"] > 0 for e in full["evals"])


def test_final_folder_and_interrupted_save(tmp_path, token_data, monkeypatch):
    out = tmp_path / "run"
    T.run(tiny_args(token_data, out))
    final = read_model(out / "model")
    start = read_model(FIXTURES / "tiny")
    assert set(final.params) == set(start.params)
    assert not np.allclose(final.params["model.norm.weight"], start.params["model.norm.weight"])
    assert {p.name for p in (out / "checkpoint").iterdir()} >= {"config.json", "model.safetensors",
                                                                "optimizer.safetensors", "trainer_state.json"}
    good = (out / "checkpoint" / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(T, "save_state", boom)
    with pytest.raises(OSError):
        T.save_checkpoint(out / "checkpoint", final, None, adamw_init(final.params), {"step": 99})
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == good  # the last good one is whole
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 6
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_diverging_run_keeps_the_last_good_checkpoint(tmp_path, token_data):
    out = tmp_path / "run"
    T.run(tiny_args(token_data, out, "--stop-after", "2"))
    state = (out / "checkpoint" / "trainer_state.json").read_text()
    # poison the checkpoint's optimizer moments so the next update blows the weights up to inf
    from safetensors.numpy import load_file, save_file
    opt = load_file(str(out / "checkpoint" / "optimizer.safetensors"))
    from safetensors import safe_open
    with safe_open(str(out / "checkpoint" / "optimizer.safetensors"), "numpy") as f:
        meta = f.metadata()
    poisoned = {k: (np.full_like(a, np.inf) if k.startswith("m/") else a) for k, a in opt.items()}
    bad_dir = tmp_path / "bad"
    shutil.copytree(out, bad_dir)
    save_file(poisoned, str(bad_dir / "checkpoint" / "optimizer.safetensors"), metadata=meta)
    with pytest.raises(T.TrainingError, match=r"step 4: the loss is nan.*last good checkpoint"):
        T.run(["--resume", "--data", str(token_data), "--out", str(bad_dir), "--quiet"])
    assert (bad_dir / "checkpoint" / "trainer_state.json").read_text() == state
    assert not (bad_dir / "model").exists()


def test_cli_error_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        T.main(["--model", str(FIXTURES / "tiny"), "--data", str(tmp_path / "missing.jsonl"), "--out",
                str(tmp_path / "o"), "--quiet"])
    assert "missing.jsonl is not a file" in str(e.value)


# ---- a few steps on the real weights and the glaive sample --------------------------------------------

def test_real_weights_smoke(tmp_path, data_dir, real_model):
    """Two steps on 24 glaive chats (as a messages .jsonl), then the final folder loads."""
    from nanoagent.weights import resolve
    rows = json.loads((data_dir / "glaive" / "glaive_toolcall_en_demo.json").read_text())[:24]
    data = tmp_path / "chats.jsonl"
    with open(data, "w") as f:
        for row in rows:
            messages, tools = DB.row_to_chat(row)
            f.write(json.dumps({"messages": messages, "tools": tools}) + "\n")
    out = tmp_path / "real"
    summary = T.run(["--model", str(resolve(None)), "--data", str(data), "--out", str(out), "--steps", "2",
                     "--grad-accum", "1", "--seq-len", "320", "--lr", "1e-5", "--eval-fraction", "0.05",
                     "--loss", "dft", "--quiet"])
    assert summary["done"] and all(np.isfinite(h["loss"]) for h in summary["history"])
    assert [e["step"] for e in summary["evals"]] == [0, 2] and all(0 < e["p"] < 1 for e in summary["evals"])
    model = nanoagent.load(out / "model")
    assert model.tokenizer is not None and model.config == real_model.config


def test_bench_train_on_the_tiny_model(capsys):
    """The `bench train` figures, each length in its own process (tiny model, so fast)."""
    import argparse
    from nanoagent.bench.train import bench_train, measure
    r = measure(FIXTURES / "tiny", 16, 1, "sft")
    assert r["tokens_per_s"] > 0 and r["peak_rss_gib"] > 0
    bench_train(argparse.Namespace(model=str(FIXTURES / "tiny"), seq_lens="8,16", steps=1, loss="dft"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train seq")]
    assert len(lines) == 2 and all("tokens/s" in line and "peak RSS" in line for line in lines)


def test_bench_train_sees_a_core_kept_busy():
    """The busy note measures the cores in use now: a process spinning beside it counts as about one."""
    from nanoagent.bench.train import busy_cores
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.3)
        busy, what = busy_cores(0.5)
    finally:
        spinner.wait()
    assert 0.5 <= busy <= os.cpu_count() and what
