"""Cross-entropy and DFT: the fused chunked LM-head loss against the plain version, finite
differences, the reference fixture, and the assistant-only loss mask on a real tool chat."""
from pathlib import Path

import numpy as np
import pytest

from nanoagent.gradcheck import numeric_grad, rel_err
from nanoagent.loss import lm_head_loss, log_softmax, token_loss_ref

FIXTURES = Path(__file__).parent / "fixtures"


def setup(rng, B=2, T=6, C=5, V=13):
    h, wte = rng.normal(size=(B, T, C)), rng.normal(size=(V, C))
    targets = rng.integers(0, V, size=(B, T))
    mask = rng.integers(0, 2, size=(B, T))
    mask[0, 0] = 1
    return h, wte, targets, mask


@pytest.mark.parametrize("kind", ["sft", "dft"])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_fused_equals_plain(kind, chunk):
    rng = np.random.default_rng(0)
    h, wte, targets, mask = setup(rng)
    out = lm_head_loss(h, wte, targets, mask, kind=kind, chunk=chunk)
    logits = h @ wte.T  # (B,T,V), all at once
    loss, dlogits = token_loss_ref(logits.reshape(-1, 13), targets.reshape(-1), mask.reshape(-1), kind)
    assert out.loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(out.dh, (dlogits @ wte).reshape(h.shape), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.dwte, dlogits.T @ h.reshape(-1, 5), rtol=1e-10, atol=1e-12)
    assert np.all(out.dh[mask == 0] == 0)  # rows that do not count get no gradient
    assert out.n_tokens == mask.sum()
    # the reported sums: cross-entropy and target probability over the counted tokens
    logp = np.take_along_axis(log_softmax(logits), targets[..., None], -1)[..., 0]
    assert out.ce_sum == pytest.approx(float(np.sum(-logp * mask)), rel=1e-12)
    assert out.p_sum == pytest.approx(float(np.sum(np.exp(logp) * mask)), rel=1e-12)


@pytest.mark.parametrize("kind", ["sft", "dft"])
def test_finite_differences(kind):
    rng = np.random.default_rng(1)
    h, wte, targets, mask = setup(rng)
    out = lm_head_loss(h, wte, targets, mask, kind=kind, chunk=4)
    # DFT's p is a stop-gradient: difference with p held at its value at the base point
    logp = np.take_along_axis(log_softmax(h @ wte.T), targets[..., None], -1)[..., 0]
    p = np.exp(logp)
    f = lambda: lm_head_loss(h, wte, targets, mask, kind=kind, backward=False, weight=p).loss
    for x, g in ((h, out.dh), (wte, out.dwte)):
        assert rel_err(g.reshape(-1), numeric_grad(f, x)) < 1e-6


def test_dft_with_weight_one_is_cross_entropy():
    rng = np.random.default_rng(2)
    h, wte, targets, mask = setup(rng)
    ce = lm_head_loss(h, wte, targets, mask, kind="sft")
    dft1 = lm_head_loss(h, wte, targets, mask, kind="dft", weight=np.ones(targets.shape))
    assert dft1.loss == pytest.approx(ce.loss, rel=1e-14)
    np.testing.assert_allclose(dft1.dh, ce.dh, rtol=1e-14)
    np.testing.assert_allclose(dft1.dwte, ce.dwte, rtol=1e-14)
    dft = lm_head_loss(h, wte, targets, mask, kind="dft")
    assert dft.loss < ce.loss  # every weight p < 1
    assert dft.ce_sum == pytest.approx(ce.ce_sum) and dft.p_sum == pytest.approx(ce.p_sum)


def test_denominator_and_accumulation():
    """Two halves with the whole step's token count as denominator add up to the whole batch."""
    rng = np.random.default_rng(3)
    h, wte, targets, mask = setup(rng, B=4)
    whole = lm_head_loss(h, wte, targets, mask, kind="dft")
    n = mask.sum()
    a = lm_head_loss(h[:2], wte, targets[:2], mask[:2], kind="dft", denom=n)
    b = lm_head_loss(h[2:], wte, targets[2:], mask[2:], kind="dft", denom=n, dwte=a.dwte.copy())
    assert a.loss + b.loss == pytest.approx(whole.loss, rel=1e-12)
    np.testing.assert_allclose(b.dwte, whole.dwte, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([a.dh, b.dh]), whole.dh, rtol=1e-10, atol=1e-13)


def test_reference_losses_from_logits():
    """The fixture's losses from its float64 logits (masked mean over the targets ids[:, 1:])."""
    ref = np.load(FIXTURES / "tiny_reference.npz")
    logits, ids, mask = ref["logits64"][:, :-1], ref["ids"], ref["mask"]
    for kind, key in (("sft", "loss"), ("dft", "dft_loss")):
        loss, _ = token_loss_ref(logits.reshape(-1, 128), ids[:, 1:].reshape(-1), mask.reshape(-1), kind)
        assert loss == pytest.approx(float(ref[key]), rel=1e-12)


def test_bad_inputs():
    rng = np.random.default_rng(4)
    h, wte, targets, mask = setup(rng)
    with pytest.raises(ValueError, match="kind"):
        lm_head_loss(h, wte, targets, mask, kind="xent")
    with pytest.raises(ValueError, match="target ids"):
        lm_head_loss(h, wte, targets + 100, mask)


# ---- the assistant-only mask on a rendered multi-turn tool conversation ----------------------

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
    {"role": "tool", "content": '{"temp": 21}'},
    {"role": "assistant", "content": "Checking Rome too.",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
    {"role": "tool", "content": '{"temp": 25}'},
    {"role": "user", "content": "Thanks! Which is warmer?"},
    {"role": "assistant", "content": "Rome, at 25 degrees.\n\nParis is 21."},
]


def test_assistant_only_mask_token_by_token(real_model):
    tok = real_model.tokenizer
    ids, mask = tok.encode_chat(CHAT, TOOLS, add_generation_prompt=False)
    assert len(ids) == len(mask)
    pieces = [tok.decode([i]) for i in ids]
    assert "".join(pieces) == tok.render_chat(CHAT, TOOLS, add_generation_prompt=False)  # ASCII: pieces tile the text
    # walk the tokens: after <|im_start|> comes the role header up to "\n", then the content up to <|im_end|>
    expected, role, in_header = [], None, False
    for i, piece in zip(ids, pieces):
        if i == tok.im_start_id:
            role, in_header, header = None, True, ""
            expected.append(False)
        elif in_header:
            header += piece
            expected.append(False)
            if header.endswith("\n"):
                role, in_header = header[:-1], False
        elif i == tok.im_end_id:
            expected.append(role == "assistant")  # the assistant's closing <|im_end|> carries loss
            role = None
        else:
            expected.append(role == "assistant")  # content; the "\n" after <|im_end|> has role None
    assert mask.tolist() == expected
    # the masked runs decode to exactly each assistant turn's content and its <|im_end|>
    runs, cur = [], ""
    for piece, m in zip(pieces, mask):
        if m:
            cur += piece
        elif cur:
            runs.append(cur)
            cur = ""
    assert runs == [
        '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call><|im_end|>',
        'Checking Rome too.\n<tool_call>[{"name": "get_weather", "arguments": {"city": "Rome"}}]</tool_call><|im_end|>',
        "Rome, at 25 degrees.\n\nParis is 21.<|im_end|>",
    ]
    text_unmasked = "".join(p for p, m in zip(pieces, mask) if not m)
    for s in ("Be brief.", "Weather in Paris and Rome?", '<tool_result>{"temp": 21}</tool_result>',
              "Thanks! Which is warmer?", "<|im_start|>assistant\n", "get_weather"):
        assert s in text_unmasked
