"""SmolLM2-135M-Instruct with the real weights against HF transformers (fixtures made offline from the
same GGUF weights, so these tests use the GGUF conversion), plus the answers a user would check first."""
import numpy as np
import pytest

from conftest import FIXTURES
from nanoagent.generate import generate_ids


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURES / "real_reference.npz")


def test_chat_prompt_renders_and_encodes_as_the_reference(gguf_model, ref):
    prompt = gguf_model.tokenizer.render_chat([{"role": "user", "content": "What is the capital of France?"}])
    assert prompt == str(ref["prompt"])
    assert gguf_model.tokenizer.encode(prompt) == ref["ids"].tolist()
    assert len(ref["ids"]) >= 30


def test_logits_match_reference(gguf_model, ref):
    logits = gguf_model.logits(ref["ids"])  # (T,V)
    assert np.abs(logits[:, ref["vocab_subset"]] - ref["logits_subset"]).max() < 2e-3
    assert np.abs(logits[-1] - ref["last_logits"]).max() < 2e-3


def test_greedy_continuation_matches_reference(gguf_model, ref):
    out = list(generate_ids(gguf_model.model, ref["ids"], max_new_tokens=32, stop_ids=()))
    assert out == ref["greedy"].tolist()


def test_capital_of_france_is_paris(real_model):
    reply = real_model.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=20)
    assert "Paris" in reply
