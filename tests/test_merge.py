"""Merging models: each method's math on tensors, whole tiny-model folders merged and loaded, and the
command line's answers to bad input (one line, nothing written)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nanoagent
from conftest import load_tiny
from nanoagent.checkpoint import WeightsError, read_params, save_folder
from nanoagent.config import ModelConfig
from nanoagent.merge import linear, merge_folders, merge_params, slerp, ties, trim
from nanoagent.quantize import quantize_folder
from test_quant import tiny_folder

ROOT = Path(__file__).resolve().parent.parent


def shifted(params: dict, seed: int, scale: float = 0.05) -> dict:
    """The params plus a random change of each tensor: a stand-in fine-tune."""
    rng = np.random.default_rng(seed)
    return {k: (v + scale * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in params.items()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Three tiny-model folders sharing one tokenizer: the base and two fine-tunes of it."""
    root = tmp_path_factory.mktemp("merge")
    base, tiny = tiny_folder(root / "base")
    a = save_folder(root / "a", tiny.config, shifted(tiny.params, 1), root / "tok.json")
    b = save_folder(root / "b", tiny.config, shifted(tiny.params, 2), root / "tok.json")
    return base, a, b


# ---- the math on tensors ------------------------------------------------------------------------------

def test_linear_is_the_weighted_sum():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(linear([a, b], (1.0, 0.0)), a)  # exactly the first
    np.testing.assert_allclose(linear([a, b], (0.5, 0.5)), (a + b) / 2, rtol=1e-6)
    np.testing.assert_allclose(linear([a, b], (0.7, 0.3)), 0.7 * a + 0.3 * b, rtol=1e-6)
    assert linear([a, b], (0.5, 0.5)).dtype == np.float32


def test_slerp_endpoints_and_norm():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 64, 32))  # random high-dimensional tensors: nearly orthogonal
    b *= np.linalg.norm(a) / np.linalg.norm(b)  # equal norms
    np.testing.assert_array_equal(slerp(a, b, 0.0), a)
    np.testing.assert_array_equal(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    assert np.linalg.norm(mid) == pytest.approx(np.linalg.norm(a), rel=1e-9)  # the sphere's norm is kept
    assert np.linalg.norm(linear([a, b], (0.5, 0.5))) < 0.75 * np.linalg.norm(a)  # the chord's midpoint is not
    # at t=0.5 halfway in angle: equally far from both ends
    cos = lambda x, y: x.ravel() @ y.ravel() / np.linalg.norm(x) / np.linalg.norm(y)
    assert cos(mid, a) == pytest.approx(cos(mid, b), rel=1e-9)


def test_slerp_falls_back_to_linear_when_nearly_parallel_or_zero():
    a = np.linspace(1, 2, 12).reshape(3, 4)
    for b in (2 * a, a + 1e-6, np.zeros_like(a)):
        np.testing.assert_allclose(slerp(a, b, 0.3), 0.7 * a + 0.3 * b, rtol=1e-12)
    assert np.all(np.isfinite(slerp(a, a.copy(), 0.5)))


def test_trim_keeps_the_largest_magnitudes():
    tau = np.array([0.1, -3.0, 0.5, 2.0, -0.2, 0.0, 1.0, -0.05])
    np.testing.assert_array_equal(trim(tau, 0.25), [0, -3.0, 0, 2.0, 0, 0, 0, 0])
    np.testing.assert_array_equal(trim(tau, 1.0), tau)
    assert np.count_nonzero(trim(np.ones(10), 0.3)) == 3  # exactly ceil(density * n), ties or not


def test_ties_of_identical_task_vectors_at_density_one_is_base_plus_the_vector():
    rng = np.random.default_rng(2)
    base, tau = rng.standard_normal((2, 8, 6))
    merged = ties(base, [base + tau, base + tau], (0.7, 0.3), density=1.0)
    np.testing.assert_allclose(merged, base + tau, rtol=1e-12, atol=1e-12)


def test_ties_elects_the_sign_and_averages_only_those_that_agree():
    base = np.zeros(4)
    t1 = np.array([1.0, 2.0, -1.0, 0.0])
    t2 = np.array([3.0, -1.0, -3.0, 0.0])
    merged = ties(base, [t1, t2], (0.5, 0.5), density=1.0)
    # entry 0: both +, mean 2; entry 1: + wins (2 > 1), only t1 counts; entry 2: both -, mean -2; entry 3: none
    np.testing.assert_allclose(merged, [2.0, 2.0, -2.0, 0.0])
    weighted = ties(base, [t1, t2], (0.2, 0.8), density=1.0)
    np.testing.assert_allclose(weighted, [0.2 * 1 + 0.8 * 3, -1.0, 0.2 * -1 + 0.8 * -3, 0.0])  # now - wins entry 1


# ---- whole models ---------------------------------------------------------------------------------------

def test_merged_folders(folders, tmp_path):
    base, a, b = folders
    (_, pa), (_, pb) = read_params(a), read_params(b)
    one = merge_folders([a, b], tmp_path / "one", "linear", [1, 0], progress=False)
    _, got = read_params(one)
    for name in pa:
        np.testing.assert_array_equal(got[name], pa[name], err_msg=name)
    mean = read_params(merge_folders([a, b], tmp_path / "mean", "linear", [0.5, 0.5], progress=False))[1]
    for name in pa:
        np.testing.assert_allclose(mean[name], (pa[name] + pb[name]) / 2, rtol=1e-6, atol=1e-7, err_msg=name)
    sl = read_params(merge_folders([a, b], tmp_path / "slerp", "slerp", [0.0, 1.0], progress=False))[1]
    for name in pa:
        np.testing.assert_array_equal(sl[name], pb[name], err_msg=name)
    tie = read_params(merge_folders([a, a], tmp_path / "ties", "ties", [0.5, 0.5], base=base, density=1.0,
                                    progress=False))[1]
    for name in pa:
        np.testing.assert_allclose(tie[name], pa[name], rtol=1e-6, atol=1e-6, err_msg=name)
    # a loadable HF folder: the first model's tokenizer and template, and how it was made
    files = sorted(p.name for p in (tmp_path / "mean").iterdir())
    assert files == ["config.json", "generation_config.json", "merge.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json"]
    record = json.loads((tmp_path / "mean" / "merge.json").read_text())
    assert record["method"] == "linear" and record["weights"] == [0.5, 0.5]
    assert (tmp_path / "mean" / "tokenizer.json").read_bytes() == (a / "tokenizer.json").read_bytes()
    model = nanoagent.load(tmp_path / "mean")
    assert model.logits([1, 5, 9]).shape == (3, model.config.vocab_size)


def test_merge_params_checks_its_input():
    p = {"w": np.ones((2, 2), np.float32)}
    with pytest.raises(ValueError, match="exactly two"):
        merge_params([p, p, p], "slerp", [1, 1, 1], progress=False)
    with pytest.raises(ValueError, match="base"):
        merge_params([p, p], "ties", [1, 1], progress=False)
    with pytest.raises(ValueError, match=">= 0"):
        merge_params([p, p], "linear", [1, -1], progress=False)


def test_mismatched_or_int8_folders_are_refused(folders, tmp_path):
    base, a, _ = folders
    tiny = load_tiny()
    other = ModelConfig(**{**tiny.config.__dict__, "num_hidden_layers": 1})
    small = save_folder(tmp_path / "small", other, {k: v for k, v in tiny.params.items() if "layers.1." not in k},
                        a / "tokenizer.json")
    with pytest.raises(WeightsError, match="num_hidden_layers 2 vs 1"):
        merge_folders([a, small], tmp_path / "out", progress=False)
    int8 = quantize_folder(a, tmp_path / "int8", group=16)
    with pytest.raises(WeightsError, match="int8 folder"):
        merge_folders([a, int8], tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="one of the models"):
        merge_folders([a, base], a, progress=False)
    assert not (tmp_path / "out").exists()


# ---- the command line -------------------------------------------------------------------------------------

def run(cwd, *args):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "nanoagent.merge", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_command_merges(folders, tmp_path):
    _, a, b = folders
    r = run(tmp_path, "--models", a, b, "--weights", "0.7", "0.3", "--out", tmp_path / "m", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "Wrote" in r.stderr and (tmp_path / "m" / "model.safetensors").is_file()


@pytest.mark.parametrize("args, status, words", [
    (["--weights", "1"], 2, "1 weights for 2 models"),
    (["--weights", "1", "-2"], 2, "must be a finite number >= 0"),
    (["--weights", "0", "0"], 2, "above 0"),
    (["--method", "slerp", "--models-extra"], 2, "exactly two"),
    (["--method", "ties"], 2, "needs --base"),
    (["--base", "BASE"], 2, "--base is for --method ties"),
    (["--method", "ties", "--base", "BASE", "--density", "0"], 2, "must be in (0, 1]"),
    (["--method", "average"], 2, "invalid choice"),
    (["--models-missing"], 1, "is not a model folder"),
    (["--models-int8"], 1, "int8 folder"),
])
def test_command_errors_are_one_line_and_write_nothing(folders, tmp_path, args, status, words):
    base, a, b = folders
    models = [a, b]
    if "--models-extra" in args:
        models, args = [a, b, base], [x for x in args if x != "--models-extra"]
    if "--models-missing" in args:
        models, args = [a, tmp_path / "nowhere"], []
    if "--models-int8" in args:
        models, args = [a, quantize_folder(a, tmp_path / "int8", group=16)], []
    args = [base if x == "BASE" else x for x in args]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = run(cwd, "--models", *models, *args, "--out", cwd / "merged", "--quiet")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == status and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert words in lines[0]
    assert not any(cwd.iterdir())  # nothing written, not even a temporary folder
