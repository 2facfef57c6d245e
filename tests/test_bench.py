"""`python -m nanoagent.bench generate --profile`, `--compare-llamacpp` and `train --compare-torch`
print what they say they print (figures are the bench's business; tests only check that the
commands work)."""
import re
import subprocess
import sys

import pytest

from test_quant import tiny_folder


def bench(*args, timeout=600, what="generate"):
    r = subprocess.run([sys.executable, "-m", "nanoagent.bench", what, *args],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def milliseconds(lines, part):
    """The ms figures of the rows naming `part`, in order."""
    return [float(m.group(1)) for line in lines if part in line and (m := re.search(r"(-?[\d.]+) ms", line))]


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_profile_splits_a_token_into_its_parts(tmp_path, precision):
    folder = tiny_folder(tmp_path / "tiny")[0]
    lines = bench("--model", str(folder), "--profile", "--precision", precision, "--prompt-tokens", "8",
                  "--new-tokens", "6", "--repeats", "1")
    assert lines[0].startswith(f"model: {folder}, {precision}; BLAS: ")
    compiled, layered = (milliseconds(lines, way)[0] for way in ("decode_step:", "forward on one token:"))
    assert compiled > 0 and layered > 0
    # the compiled way's parts: its calls (float32 one for everything, int8 one per layer and the head)
    # and what surrounds them; the layered way's: each kind of kernel
    if precision == "float32":
        assert len(milliseconds(lines, "one call: the layers and the head")) == 1
        assert len(milliseconds(lines, "the LM head")) == 1
    else:
        assert len(milliseconds(lines, "one compiled call per layer")) == 1
        assert len(milliseconds(lines, "the LM head")) == 2  # one row in each way
    assert len(milliseconds(lines, "matrix products in the layers")) == 1
    assert len(milliseconds(lines, "attention over the KV cache")) == 1
    assert len(milliseconds(lines, "Python and NumPy between the kernels")) == 2  # one row in each way


def test_compare_llamacpp_when_installed(real_model):
    """Optional (llama-cpp-python is the bench extra): both sides measured, a ratio for each figure."""
    pytest.importorskip("llama_cpp")
    lines = bench("--compare-llamacpp", "--prompt-tokens", "64", "--new-tokens", "8", "--repeats", "1")
    rows = {line.split("  ")[0].strip(): line.split() for line in lines
            if line.startswith(("prefill", "decode"))}
    assert set(rows) >= {f"{figure} {precision}" for figure in ("prefill", "decode", "decode-long")
                         for precision in ("float32", "int8")}
    for name, cells in rows.items():
        ours, theirs, ratio = float(cells[2]), float(cells[3]), float(cells[5])
        assert ours > 0 and theirs > 0 and ratio == pytest.approx(ours / theirs, abs=0.01), name  # printed rounded


def test_grpo_update_counts_the_prompt_once_per_group(tmp_path):
    folder = tiny_folder(tmp_path / "tiny")[0]
    r = subprocess.run([sys.executable, "-m", "nanoagent.bench", "grpo", "--model", str(folder), "--group", "3",
                        "--prompt-tokens", "40", "--reply-tokens", "5", "--batch-size", "2", "--repeats", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    P = int(re.search(r"a prompt of (\d+) tokens", lines[0]).group(1))
    assert P == 40
    tokens = {way: int(re.search(r"(\d+) tokens through", line).group(1))
              for line in lines for way in ("whole", "once") if ("prompt + reply" if way == "whole" else "once for") in line}
    # inputs are a sequence but its last token: whole rows 3 x (P + 5 - 1); shared: the prompt but its last
    # token once, then 3 rows of the last prompt token + the reply but its last token
    assert tokens == {"whole": 3 * (P + 4), "once": (P - 1) + 3 * 5}
    assert re.search(r"the prompt once: [\d.]+x faster per update", lines[-1])


FAKE_TORCH = """#!/bin/sh
echo '{"tokens_per_s": 10.0, "peak_rss_gib": 0.5, "torch": "0.0-fake", "seq_len": 0, "peer": "peer '$6'"}'
"""  # (its sixth argument is the peer asked for)


def test_compare_torch_pairs_the_peer_with_ours(tmp_path):
    """`train --compare-torch PYTHON`: each round runs ours and the peer (here an interpreter that
    prints a fixed 10 tokens/s), and the ratio is ours over the peer's."""
    folder = tiny_folder(tmp_path / "tiny")[0]
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_TORCH)
    fake.chmod(0o755)
    lines = bench("--model", str(folder), "--compare-torch", str(fake), "--seq-lens", "8,16", "--steps", "1",
                  "--repeats", "2", what="train")
    assert "PyTorch 0.0-fake (peer transformers" in lines[0] and lines[1].startswith("BLAS: ")
    rows = [line.split() for line in lines if line.startswith("train seq")]
    lengths = [r[2].rstrip(",") for r in rows]  # a second row per length where the machine sets a BLAS kernel
    assert sorted(set(lengths)) == ["16", "8"] and lengths.count("8") == lengths.count("16")
    for cells in rows:
        ours, theirs, ratio = (float(c) for c in cells[-5:-2])
        assert theirs == 10.0 and ratio == pytest.approx(ours / 10.0, abs=0.01)


def test_compare_torch_runs_the_peer_asked_for(tmp_path):
    folder = tiny_folder(tmp_path / "tiny")[0]
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_TORCH)
    fake.chmod(0o755)
    lines = bench("--model", str(folder), "--compare-torch", str(fake), "--torch-peer", "plain", "--seq-lens", "8",
                  "--steps", "1", "--repeats", "1", what="train")
    assert "PyTorch 0.0-fake (peer plain" in lines[0]


def test_compare_torch_without_torch_says_so_in_one_line(tmp_path):
    folder = tiny_folder(tmp_path / "tiny")[0]
    r = subprocess.run([sys.executable, "-m", "nanoagent.bench", "train", "--model", str(folder), "--compare-torch",
                        str(tmp_path / "no-python")], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("error: --compare-torch") and "No such file" in r.stderr
