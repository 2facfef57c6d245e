"""GRPO: the per-token loss and its hand-written gradient (against central differences, on the loss alone and
through the whole tiny model, with and without the KL term, with clipping active), group advantages, the
rollouts, the rise of the reward on a toy task, tool prompts from data rows, and the command on a tiny folder."""
import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import load_tiny
from nanoagent import rl
from nanoagent.checkpoint import read_model, save_folder
from nanoagent.data.io import DataError
from nanoagent.gradcheck import numeric_grad, rel_err
from nanoagent.data.batch import Example, collate, row_to_chat
from nanoagent.tuner import prompts as P
from nanoagent.tuner.grpo import (GRPOConfig, Rollout, first_kept, group_advantages, grpo_round, policy_batches,
                                  policy_update, reference_logp, round_seeds, run_prefix, sample_groups)
from nanoagent.loss import PolicyTerms, grpo_token_loss, lm_head_loss, log_softmax, token_loss_ref
from nanoagent.optim import adamw_init
from nanoagent.sampling import SamplingParams
from nanoagent.tokenizer import Tokenizer, tokenizer_from_gguf_vocab
from nanoagent.train import TrainingError

EPS = 0.2
TOL = 1e-6


def old_logp_with_clipping(logp, rng):
    """log p_old = log p - delta: ratios of exp(+-0.6) (outside [0.8, 1.2]: clipped for one sign of A) and
    exp(+-0.05) (inside), far enough from the edges that a finite difference never crosses one."""
    return logp - rng.choice([-0.6, -0.05, 0.05, 0.6], size=logp.shape)


# ---- the per-token loss ------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_token_loss_derivative(beta):
    rng = np.random.default_rng(0)
    logp = np.log(rng.uniform(0.05, 0.9, 40))
    adv, old, ref = rng.normal(size=40), old_logp_with_clipping(logp, rng), logp + rng.normal(0, 0.5, 40)
    _, g = grpo_token_loss(logp, adv, old, ref, EPS, beta)
    num = np.array([numeric_grad(lambda: grpo_token_loss(logp, adv, old, ref, EPS, beta)[0][i], logp, [i])[0]
                    for i in range(40)])
    assert rel_err(g, num) < TOL
    ratio = np.exp(logp - old)
    clipped = ((ratio > 1 + EPS) & (adv > 0)) | ((ratio < 1 - EPS) & (adv < 0))
    assert 0 < clipped.sum() < 40 and np.all(g[clipped] == beta * (1 - np.exp(ref - logp))[clipped])
    # on-policy (no old log p): ratio 1, the gradient of -A log p; the k3 KL is 0 where ref = new
    loss, g = grpo_token_loss(logp, adv, None, logp, EPS, beta)
    np.testing.assert_allclose(loss, -adv)
    np.testing.assert_allclose(g, -adv)


def setup_head(rng, B=3, T=7, C=5, V=13):
    h, wte = rng.normal(size=(B, T, C)), rng.normal(size=(V, C))
    targets = rng.integers(0, V, size=(B, T))
    mask = rng.random((B, T)) < 0.7
    mask[0, 0] = True
    logp = np.take_along_axis(log_softmax(h @ wte.T), targets[..., None], -1)[..., 0]
    adv = np.repeat(rng.normal(size=(B, 1)), T, axis=1)  # one advantage per reply
    return h, wte, targets, mask, logp, adv


@pytest.mark.parametrize("beta", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_fused_grpo_equals_plain(beta, chunk):
    rng = np.random.default_rng(1)
    h, wte, targets, mask, logp, adv = setup_head(rng)
    terms = PolicyTerms(adv, old_logp_with_clipping(logp, rng), logp + rng.normal(0, 0.3, logp.shape), EPS, beta)
    out = lm_head_loss(h, wte, targets, mask, kind="grpo", terms=terms, chunk=chunk)
    flat = PolicyTerms(*(x.reshape(-1) for x in terms[:3]), EPS, beta)
    loss, dlogits = token_loss_ref((h @ wte.T).reshape(-1, 13), targets.reshape(-1), mask.reshape(-1), "grpo",
                                   terms=flat)
    assert out.loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(out.dh, (dlogits @ wte).reshape(h.shape), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.dwte, dlogits.T @ h.reshape(-1, 5), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.logp, np.where(mask, logp, 0.0), rtol=1e-12, atol=1e-14)
    assert np.all(out.dh[~mask] == 0)


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_grpo_head_finite_differences(beta):
    rng = np.random.default_rng(2)
    h, wte, targets, mask, logp, adv = setup_head(rng)
    terms = PolicyTerms(adv, old_logp_with_clipping(logp, rng), logp + rng.normal(0, 0.3, logp.shape), EPS, beta)
    out = lm_head_loss(h, wte, targets, mask, kind="grpo", terms=terms, chunk=4)
    f = lambda: lm_head_loss(h, wte, targets, mask, kind="grpo", terms=terms, backward=False).loss
    for x, g in ((h, out.dh), (wte, out.dwte)):
        assert rel_err(g.reshape(-1), numeric_grad(f, x)) < TOL


def test_grpo_needs_its_terms():
    rng = np.random.default_rng(3)
    h, wte, targets, mask, logp, adv = setup_head(rng)
    with pytest.raises(ValueError, match="PolicyTerms"):
        lm_head_loss(h, wte, targets, mask, kind="grpo")
    with pytest.raises(ValueError, match="PolicyTerms"):
        lm_head_loss(h, wte, targets, mask, kind="sft", terms=PolicyTerms(adv))


# ---- through the whole tiny model, in float64 -------------------------------------------------------------

def model_grad_error(model, ids, mask, terms_at, rng, max_entries=24):
    """Largest relative error over every parameter tensor (max_entries entries each, the largest analytic
    one included) of GRPO's gradient through the tiny model against central differences."""
    wte = model.params["model.embed_tokens.weight"]
    h, caches = model.forward(ids[:, :-1])
    logp = np.take_along_axis(log_softmax(model.lm_head(h)), ids[:, 1:, None], -1)[..., 0]
    terms, analytic_terms = terms_at(logp)
    out = lm_head_loss(h, wte, ids[:, 1:], mask, kind="grpo", terms=analytic_terms, chunk=5)
    grads = model.backward(out.dh, caches, {"model.embed_tokens.weight": out.dwte})
    f = lambda: lm_head_loss(model.forward(ids[:, :-1])[0], wte, ids[:, 1:], mask, kind="grpo", terms=terms,
                             backward=False).loss
    assert set(grads) == set(model.params)
    errs = {}
    for name, x in model.params.items():
        a = grads[name].reshape(-1)
        entries = np.unique(np.append(rng.choice(x.size, min(x.size, max_entries - 1), replace=False),
                                      np.argmax(np.abs(a))))
        errs[name] = rel_err(a[entries], numeric_grad(f, x, entries))
    return max(errs.values())


@pytest.mark.parametrize("case", ["on-policy", "clipped", "clipped+kl"])
def test_grpo_gradient_through_the_tiny_model(case):
    model = load_tiny(np.float64)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, model.config.vocab_size, size=(2, 9))
    mask = np.zeros((2, 8), bool)
    mask[0, 3:], mask[1, 5:7] = True, True  # the reply tokens
    adv = np.repeat(np.array([[1.3], [-0.7]]), 8, axis=1)

    def terms_at(logp):
        """(terms held fixed while differencing, terms the analytic gradient uses)"""
        if case == "on-policy":  # old = sg(new): analytically None; numerically held at its value here
            return PolicyTerms(adv, logp.copy(), None, EPS, 0.0), PolicyTerms(adv, None, None, EPS, 0.0)
        old = old_logp_with_clipping(logp, rng)
        ratio = np.exp(logp - old)
        clipped = mask & (((ratio > 1 + EPS) & (adv > 0)) | ((ratio < 1 - EPS) & (adv < 0)))
        assert 0 < clipped.sum() < mask.sum()  # clipping is active on some reply tokens, not all
        ref = logp + rng.normal(0, 0.4, logp.shape) if case == "clipped+kl" else None
        terms = PolicyTerms(adv, old, ref, EPS, 0.25 if ref is not None else 0.0)
        return terms, terms

    assert model_grad_error(model, ids, mask, terms_at, rng) < TOL


# ---- groups, rollouts, one update ---------------------------------------------------------------------------

def test_group_advantages():
    r = np.array([[1.0, 0.0, 0.0, 1.0], [0.2, 0.2, 0.2, 0.2], [1.2, 0.5, 0.0, 0.0]])
    adv, kept = group_advantages(r, eps=0.0)
    assert kept.tolist() == [True, False, True]
    np.testing.assert_allclose(adv[0], [np.sqrt(3) / 2, -np.sqrt(3) / 2, -np.sqrt(3) / 2, np.sqrt(3) / 2])
    assert np.all(adv[1] == 0)
    np.testing.assert_allclose(adv[2], (r[2] - r[2].mean()) / r[2].std(ddof=1))
    np.testing.assert_allclose(adv[kept].mean(axis=1), 0, atol=1e-15)


def test_first_kept_takes_the_first_groups_that_differ():
    differ = np.array([True, False, True, True, False, True])
    assert first_kept(differ, 2).tolist() == [True, False, True, False, False, False]
    assert first_kept(differ, 0).tolist() == first_kept(differ, 9).tolist() == differ.tolist()


def test_a_round_learns_from_at_most_max_groups():
    """Dynamic sampling: of 4 groups, 3 differ; the update takes the first 2 of them, only their replies."""
    model = load_tiny(np.float32)
    cfg = GRPOConfig(group=4, max_new_tokens=3, batch_size=4, max_groups=2)
    prompts = [[1, 5], [1, 6], [1, 7], [1, 8]]
    score = lambda i, r: {"reward": 0.0 if i == 1 else float(r.reply[0] % 2)}  # group 1: one value
    for first in range(0, 200, 4):  # seeds under which groups 0, 2 and 3 each have replies of both parities
        seeds = [first + k for k in range(4)]
        groups = sample_groups(model, prompts, cfg, None, seeds)
        if all(len({r.reply[0] % 2 for r in groups[i]}) == 2 for i in (0, 2, 3)):
            break
    else:
        pytest.fail("no seeds gave three groups with both parities")
    res = grpo_round(model, prompts, score, cfg, adamw_init(model.params), 1e-3, seeds, 0, None)
    assert (res.kept, res.skipped, res.surplus) == (2, 1, 1)
    assert res.updates[0].n_tokens == 2 * 4 * 3  # groups 0 and 2: 4 replies of 3 tokens each


def test_policy_batches_share_the_prompt_and_count_reply_tokens_only():
    prompts = [[1, 5, 6], [1, 7]]
    groups = [[Rollout(0, [9, 2], "stop"), Rollout(0, [8, 8, 8], "length")],
              [Rollout(1, [3], "length"), Rollout(1, [3], "length")]]
    adv, kept = group_advantages(np.array([[1.0, 0.0], [0.5, 0.5]]))
    laid = policy_batches(prompts, groups, adv, kept, pad_id=2, batch_size=4)
    assert len(laid) == 1 and len(laid[0].batches) == 1  # the second group has one reward value: skipped
    np.testing.assert_array_equal(laid[0].prefix, [1, 5])  # run once; each row starts at the prompt's last token
    b = laid[0].batches[0]
    np.testing.assert_array_equal(b["inputs"], [[6, 9, 2], [6, 8, 8]])
    np.testing.assert_array_equal(b["targets"], [[9, 2, 2], [8, 8, 8]])
    np.testing.assert_array_equal(b["mask"], [[1, 1, 0], [1, 1, 1]])  # the stop token counts
    np.testing.assert_allclose(b["adv"][:, 0], adv[0])
    assert laid[0].reply_tokens == 5


@pytest.mark.parametrize("beta", [0.0, 0.2])
def test_a_shared_prompt_gives_the_loss_and_gradient_of_whole_sequences(beta):
    """A prompt run once, its replies continuing it in two batches, gives the loss, log-probabilities and
    every parameter's gradient that the replies give as whole prompt + reply sequences (float64)."""
    model = load_tiny(np.float64)
    rng = np.random.default_rng(6)
    prompt = [int(t) for t in rng.integers(3, 60, 7)]
    replies = [[int(t) for t in rng.integers(3, 60, n)] for n in (4, 2, 5)]
    adv = np.array([0.9, -1.2, 0.3])
    wte = "model.embed_tokens.weight"

    def terms(a, mask, targets):  # a reference log p (per target token) unlike the model's: the KL has a gradient
        ref = np.where(mask, -2.0 - 0.02 * targets, 0.0)
        return PolicyTerms(np.repeat(a[:, None], mask.shape[1], axis=1), None, ref, EPS, beta)

    # whole sequences: prompt + reply, the loss on the reply tokens
    whole = collate([Example(np.array(prompt + r), np.arange(len(prompt) + len(r)) >= len(prompt)) for r in replies], 0)
    denom = int(whole["mask"].sum())
    h, caches = model.forward(whole["inputs"])
    out = lm_head_loss(h, model.params[wte], whole["targets"], whole["mask"], kind="grpo", denom=denom,
                       terms=terms(adv, whole["mask"], whole["targets"]))
    want = model.backward(out.dh, caches, {wte: out.dwte})
    want_logp = [out.logp[i][whole["mask"][i]] for i in range(3)]

    # shared: the prompt once, the replies in batches of 2 and 1 continuing it
    laid = policy_batches([prompt], [[Rollout(0, r, "length") for r in replies]], adv[None], np.array([True]), 0, 2)
    (gb,) = laid
    prefix, prefix_caches = run_prefix(model, gb.prefix)
    grads, loss, logp = None, 0.0, []
    for k, b in enumerate(gb.batches):
        h, caches = model.forward(b["inputs"], prefix=prefix)
        o = lm_head_loss(h, model.params[wte], b["targets"], b["mask"], kind="grpo", denom=denom,
                         dwte=None if grads is None else grads[wte], terms=terms(adv[2 * k:2 * k + 2], b["mask"], b["targets"]))
        loss += o.loss
        logp += [o.logp[i][b["mask"][i]] for i in range(len(b["mask"]))]
        grads = model.backward(o.dh, caches, grads or {wte: o.dwte}, prefix=prefix)
    grads = model.backward_prefix(prefix, prefix_caches, grads)

    assert loss == pytest.approx(out.loss, rel=1e-10)
    for a, w in zip(logp, want_logp):
        np.testing.assert_allclose(a, w, rtol=1e-10)
    assert set(grads) == set(want)
    for name in want:
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-8, atol=1e-12, err_msg=name)
    # and the reference model's log p, through the same shared prompt
    (ref_logp,) = reference_logp(model, laid)
    got = [lp[i][b["mask"][i]] for lp, b in zip(ref_logp, gb.batches) for i in range(len(b["mask"]))]
    for a, w in zip(got, want_logp):
        np.testing.assert_allclose(a, w, rtol=1e-10)


def test_sample_groups_share_a_prompt_and_repeat_with_their_seeds():
    model = load_tiny(np.float32)
    cfg = GRPOConfig(group=4, max_new_tokens=6, sampling=SamplingParams(temperature=1.0))
    prompts = [[1, 20, 30], [1, 40]]
    stop = int(np.argmax(model.logits(prompts[0])[-1]))  # the likeliest first token: some replies stop on it
    a = sample_groups(model, prompts, cfg, stop_id=stop, seeds=[7, 8])
    b = sample_groups(model, prompts, cfg, stop_id=stop, seeds=[7, 8])
    assert [[r.reply for r in g] for g in a] == [[r.reply for r in g] for g in b]
    assert [len(g) for g in a] == [4, 4] and all(r.prompt == i for i, g in enumerate(a) for r in g)
    assert len({tuple(r.reply) for r in a[0]}) > 1  # the samples of one prompt differ
    for r in (r for g in a for r in g):  # the stop token ends a reply that stopped, and is nowhere else
        assert (r.finish_reason == "stop") == (r.reply[-1] == stop and stop not in r.reply[:-1])
        assert r.finish_reason == "stop" or len(r.reply) == 6
    assert any(r.finish_reason == "stop" for g in a for r in g)


def test_update_figures_kl_and_clipping():
    """KL to an identical reference is 0; a second update on the same samples has ratios away from 1."""
    model, ref = load_tiny(np.float32), load_tiny(np.float32)
    cfg = GRPOConfig(group=4, max_new_tokens=5, beta=0.1, clip_eps=0.05, batch_size=3)
    prompts = [[1, 20, 30], [1, 40]]
    groups = sample_groups(model, prompts, cfg, None, [1, 2])
    adv, kept = group_advantages(np.array([[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 1.0, 0.0]]))
    laid = policy_batches(prompts, groups, adv, kept, pad_id=2, batch_size=cfg.batch_size)
    refs = reference_logp(ref, laid)
    state = adamw_init(model.params)
    first, olds = policy_update(model, laid, state, 3e-3, cfg, refs)
    assert first.kl == pytest.approx(0.0, abs=1e-9) and first.clip_frac == 0.0
    assert first.n_tokens == 8 * 5 and np.isfinite(first.grad_norm) and state.step == 1
    second, _ = policy_update(model, laid, state, 3e-3, cfg, refs, olds)
    assert second.kl > 0 and 0 < second.clip_frac < 1


# ---- a toy task: the reward is the share of reply tokens that are one fixed token ---------------------------

def test_the_reward_rises_on_a_toy_task():
    model = load_tiny(np.float32)
    prompts = [[1, 5 + i, 9, 12] for i in range(4)]
    logits = model.logits(prompts[0])[-1]
    target = int(np.argsort(-logits)[20])  # a token the start gives under 1%
    cfg = GRPOConfig(group=8, max_new_tokens=4, sampling=SamplingParams(temperature=1.0), batch_size=8)
    state = adamw_init(model.params)
    score = lambda i, r: {"reward": float(np.mean([t == target for t in r.reply]))}
    curve = [grpo_round(model, prompts, score, cfg, state, 3e-3, round_seeds(0, step, 4), 0, None).figures["reward"]
             for step in range(30)]
    assert np.mean(curve[:3]) < 0.15, curve
    assert np.mean(curve[-5:]) > 0.9, curve


# ---- tool prompts from data rows, and the command ----------------------------------------------------------

TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(c) for c in range(ord("!"), ord("!") + 124)] + ["ab"]
WEATHER = {"name": "get_weather", "description": "weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def tiny_tokenizer(path=None):
    tok = tokenizer_from_gguf_vocab(TOKENS, ["a b"], [3, 3, 3] + [1] * 125)
    if path is not None:
        tok.save(str(path))
    return Tokenizer(tok)


def rows():
    call = {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}
    return [
        {"messages": [{"role": "user", "content": "Oslo?"}, call, {"role": "tool", "content": "3C"},
                      {"role": "assistant", "content": "3C."}], "tools": [WEATHER]},
        {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}],
         "tools": [{"type": "function", "function": WEATHER}]},  # no call is the answer
        {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}]},  # no tools
        {"messages": [{"role": "user", "content": "Oslo?"}, {**call, "tool_calls": [
            {"name": "get_weather", "arguments": {"town": "Oslo"}}]}], "tools": [WEATHER]},  # fails its own check
        {"text": "not a chat"},
    ]


def test_tool_prompts_from_rows():
    tok = tiny_tokenizer()
    prompts, skipped = P.tool_prompts(rows(), tok, max_prompt_tokens=10_000)
    assert [p.reference for p in prompts] == [[{"name": "get_weather", "arguments": {"city": "Oslo"}}], []]
    assert skipped == {"no tools offered": 1, "reference call fails the checker": 1, "not a chat": 1}
    assert tok.decode(prompts[0].ids).endswith("<|im_start|>user\nOslo?<|im_end|>\n<|im_start|>assistant\n"
                                               .replace("\n", ""))  # the tiny vocabulary has no newline
    assert prompts[1].tools == [WEATHER] and prompts[0].answer is None and prompts[1].answer is None
    problem = {"messages": [{"role": "user", "content": "20 dogs, then twice as many came. How many?"},
                            {"role": "assistant", "content": "20 * 2 = 40; 20 + 40 = 60.\nThe answer is 60."}],
               "tools": [WEATHER]}
    assert P.tool_prompts([problem], tok, max_prompt_tokens=10_000)[0][0].answer == 60.0  # the row's stated answer
    short, skipped = P.tool_prompts(rows(), tok, max_prompt_tokens=50)
    assert short == [] and skipped["prompt longer than --max-prompt-tokens"] == 2
    tagged = [{**r, "source": s} for r, s in zip(rows(), ("glaive", "near-miss", "glaive", "glaive", "glaive"))]
    some, skipped = P.tool_prompts(tagged, tok, max_prompt_tokens=10_000, sources=frozenset({"near-miss"}))
    assert [p.reference for p in some] == [[]] and skipped["source not in --sources"] == 3
    # --exclude: a row whose first user turn a fine-tune trained on is left out
    unseen, skipped = P.tool_prompts(rows(), tok, max_prompt_tokens=10_000, seen=frozenset({"Oslo?"}))
    assert [p.reference for p in unseen] == [[]] and skipped["request seen in --exclude"] == 2
    # rounds of 2 prompts out of 5: an epoch is 3 rounds (the last one short), each a seeded permutation
    epochs = [[i for step in range(3 * e, 3 * e + 3) for i in P.round_prompts(5, step, 2, seed=0)] for e in (0, 1)]
    assert [sorted(e) for e in epochs] == [list(range(5))] * 2 and epochs[0] != epochs[1]
    assert len(P.round_prompts(5, 2, 2, seed=0)) == 1


def test_balanced_rounds_pull_both_ways():
    """--balance: the kinds take turns slot by slot across rounds (an even round holds as many of each, an
    odd slot goes to each kind in turn), and each kind walks its own seeded order through whole epochs."""
    mixed = [P.ToolPrompt([k], [WEATHER], [{"name": "get_weather", "arguments": {"city": "Oslo"}}] if k % 3 else [])
             for k in range(9)]  # 6 with a call, 3 without
    rounds = [P.balanced_prompts(mixed, step, 4, 0, "calls") for step in range(3)]
    assert all([bool(mixed[i].reference) for i in r] == [True, False, True, False] for r in rounds)
    calls = [i for r in rounds for i in r[0::2]]
    plain = [i for r in rounds for i in r[1::2]]
    assert sorted(calls) == [1, 2, 4, 5, 7, 8] and sorted(plain[:3]) == sorted(plain[3:]) == [0, 3, 6]
    assert plain[:3] != plain[3:]  # the second epoch of the no-call prompts is another order
    odd = [[bool(mixed[i].reference) for i in P.balanced_prompts(mixed, step, 3, 0, "calls")] for step in range(2)]
    assert odd == [[True, False, True], [False, True, False]]


def test_balanced_rounds_by_bfcl_kind():
    """--balance kinds: simple (one tool, one call), multiple (several tools, one call), parallel (two calls
    or more) and no call take turns; a kind with no prompts is left out of the turns."""
    other = {"name": "get_time", "description": "Time in a city", "parameters": WEATHER["parameters"]}
    call = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    prompts = [P.ToolPrompt([0], [WEATHER], [call]), P.ToolPrompt([1], [WEATHER, other], [call]),
               P.ToolPrompt([2], [WEATHER], [call, call]), P.ToolPrompt([3], [WEATHER], []),
               P.ToolPrompt([4], [WEATHER, other], [call])]
    assert [P.kind(p, "kinds") for p in prompts] == ["simple", "multiple", "parallel", "no call", "multiple"]
    assert [P.kind(p, "calls") for p in prompts] == ["call"] * 3 + ["no call", "call"]
    rounds = [P.balanced_prompts(prompts, step, 2, 0, "kinds") for step in range(4)]
    assert [[P.kind(prompts[i], "kinds") for i in r] for r in rounds] == \
        [["simple", "multiple"], ["parallel", "no call"]] * 2
    assert {rounds[0][1], rounds[2][1]} == {1, 4}  # the two multiple prompts, one epoch of that kind
    no_parallel = prompts[:2] + prompts[3:]
    assert [P.kind(no_parallel[i], "kinds") for i in P.balanced_prompts(no_parallel, 0, 3, 0, "kinds")] == \
        ["simple", "multiple", "no call"]


@pytest.fixture
def tiny_run(tmp_path):
    """The tiny model as an HF folder (a context long enough for the tools prompt) and a rows file."""
    tiny = load_tiny()
    tiny_tokenizer(tmp_path / "tok.json")
    folder = save_folder(tmp_path / "tiny", replace(tiny.config, max_position_embeddings=1024), tiny.params,
                         tmp_path / "tok.json")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    return folder, data


def cli_args(folder, data, out, *extra):
    return ["--model", str(folder), "--data", str(data), "--out", str(out), "--group", "4", "--prompts", "2",
            "--steps", "2", "--max-new-tokens", "6", "--temperature", "1.5", "--lr", "1e-3", "--beta", "0.1",
            "--batch-size", "4", "--quiet", *extra]


def test_command_on_the_tiny_folder_and_resume(tiny_run, tmp_path):
    folder, data = tiny_run
    full = rl.run(cli_args(folder, data, tmp_path / "a"))
    assert full["done"] and [h["step"] for h in full["history"]] == [1, 2]
    out = tmp_path / "a"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == full["history"]
    assert {"reward", "correct", "format", "kl", "clip_frac", "kept_groups", "skipped_groups", "reply_tokens",
            "sample"} <= set(log[0])
    assert sum(h["kept_groups"] for h in log) > 0 and all(h["kept_groups"] + h["skipped_groups"] == 2 for h in log)
    for h in log:  # a round draws both prompts: one call among one tool (simple) and no call, 4 replies each
        assert set(h["correct_by_kind"]) == {"simple", "no call"}
        assert np.isclose(np.mean(list(h["correct_by_kind"].values())), h["correct"])
    if rl.Figure is not None:  # matplotlib is optional
        assert (out / "rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final, start = read_model(out / "model"), read_model(folder)
    assert not np.allclose(final.params["model.norm.weight"], start.params["model.norm.weight"])
    assert (out / "model" / "tokenizer.json").is_file() and (out / "checkpoint" / "optimizer.safetensors").is_file()
    # stopped after one round and resumed: the same rounds, the same log, the same weights
    part = rl.run(cli_args(folder, data, tmp_path / "b", "--stop-after", "1"))
    assert not part["done"] and len(part["history"]) == 1 and not (tmp_path / "b" / "model").exists()
    rest = rl.run(["--resume", "--out", str(tmp_path / "b"), "--quiet"])
    assert rest["done"]
    strip = lambda hs: [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in hs]
    assert strip(rest["history"]) == strip(full["history"])
    assert strip(json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()) == strip(log)
    again = read_model(tmp_path / "b" / "model")
    for k in final.params:
        np.testing.assert_array_equal(again.params[k], final.params[k], err_msg=k)


def test_draw_samples_more_prompts_than_the_update_takes(tiny_run, tmp_path):
    folder, data = tiny_run
    argv = cli_args(folder, data, tmp_path / "d", "--steps", "3", "--balance")
    argv[argv.index("--prompts") + 1] = "1"
    log = rl.run(argv + ["--draw", "2"])["history"]
    assert all(h["kept_groups"] <= 1 and h["kept_groups"] + h["skipped_groups"] + h["surplus_groups"] == 2
               for h in log), log
    assert sum(h["kept_groups"] for h in log) > 0
    with pytest.raises(SystemExit):
        rl.parse_args(argv + ["--draw", "0"])


def test_the_module_runs_with_a_progress_bar_and_a_time_limit(tiny_run, tmp_path):
    """`python -m nanoagent.rl`: the bar shows reward, format rate, KL and tokens/s; --max-minutes 0 ends the
    run after its first round, with the final model written."""
    folder, data = tiny_run
    out = tmp_path / "t"
    argv = [a for a in cli_args(folder, data, out, "--max-minutes", "0", "--beta", "0") if a != "--quiet"]
    r = subprocess.run([sys.executable, "-m", "nanoagent.rl", *argv], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert all(f in r.stderr for f in ("reward=", "fmt=", "kl=-", "gen_tok_s=", "train_tok_s=")), r.stderr
    assert "--max-minutes 0.0 reached after round 1" in r.stderr and f"wrote {out / 'model'}" in r.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["kl"] is None  # beta 0: no reference model, no KL
    assert (out / "model" / "model.safetensors").is_file()


def test_command_errors(tiny_run, tmp_path):
    folder, data = tiny_run
    with pytest.raises(SystemExit):
        rl.parse_args(["--data", str(data), "--group", "1"])
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps(rows()[2]) + "\n")
    with pytest.raises(SystemExit) as e:
        rl.main(cli_args(folder, bare, tmp_path / "o"))
    assert "makes a tool prompt (1 no tools offered)" in str(e.value)
    with pytest.raises(SystemExit) as e:
        rl.main(["--resume", "--out", str(tmp_path / "nothing"), "--quiet"])
    assert "holds no checkpoint" in str(e.value)


def test_rejection_sampling_keeps_a_reply_with_the_reference_calls():
    from nanoagent.tuner.rejection import right_call_reply
    call = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    prompt = P.ToolPrompt([0], [WEATHER], [call], ({"role": "user", "content": "Oslo?"},))
    right = '<tool_call>[{"name": "get_weather", "arguments": {"city": "Oslo"}}]</tool_call>'
    wrong = right.replace("Oslo", "Lima")
    assert right_call_reply([(wrong, "stop"), (right, "stop")], prompt) == (right, "rejection")
    assert right_call_reply([(wrong, "stop"), (right, "length")], prompt) is None  # cut off: not clean
    plain = P.ToolPrompt([0], [WEATHER], [], ({"role": "user", "content": "Hi!"},))
    assert right_call_reply([(right, "stop"), ("Hello!", "stop")], plain) == ("Hello!", "rejection")


def test_rejection_by_kind_samples_each_kind_until_it_has_k_rows():
    """A fake sampler answers every simple prompt rightly and one parallel prompt in three: with K = 2 the simple
    kind takes two prompts, parallel takes waves until two pass, the lone no-call prompt is sampled once (the
    kind runs out), and the kind with no prompts is no trouble. Without K, every prompt once."""
    from nanoagent.tuner.rejection import right_call_reply, right_calls_by_kind

    def prompt(i, cities):
        calls = [{"name": "get_weather", "arguments": {"city": c}} for c in cities]
        return P.ToolPrompt([i], [WEATHER], calls, ({"role": "user", "content": f"request {i}"},))
    simple = [prompt(i, ["Oslo"]) for i in range(5)]
    parallel = [prompt(10 + i, ["Oslo", "Lima"]) for i in range(9)]
    waves = []

    def judge(batch, wave):
        waves.append(len(batch))
        right = lambda p: (f"<tool_call>{json.dumps(p.reference)}</tool_call>" if p.reference  # noqa: E731
                           else "Hello!")
        return [right_call_reply([(right(p) if len(p.reference) < 2 or p.ids[0] % 3 == 0 else "Let me check.",
                                   "stop")], p) for p in batch]
    judged = right_calls_by_kind(simple + parallel + [prompt(30, [])], 2, seed=0, judge=judge)
    tally = Counter((P.kind(p, "kinds"), reply is not None) for p, reply in judged)
    assert tally[("simple", True)] == 2 and tally[("simple", False)] == 0
    assert tally[("parallel", True)] == 2 and 1 <= tally[("parallel", False)] <= 7  # never more than K kept
    assert tally[("no call", True)] == 1 and len(judged) == len({p.ids[0] for p, _ in judged})
    assert waves[0] == 5 and len(waves) > 1 and sum(waves) == len(judged)
    assert len(right_calls_by_kind(simple + parallel, None, seed=0, judge=judge)) == 14


def test_rejection_sampling_on_tool_prompts_writes_chats_with_their_tools(tiny_run, tmp_path, capsys):
    """The tiny model's random replies never hold the Oslo call, and some stop without a call: the no-call
    prompt gets a training row, with its tools and its user turn, the call prompt none."""
    folder, data = tiny_run
    summary = rl.run(["--rejection", "8", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "rs"),
                      "--max-new-tokens", "40", "--temperature", "1.5", "--references", "--quiet"])
    assert summary["prompts"] == 2 and summary["passed"] == 1 and summary["references"] == 1
    out = capsys.readouterr().out
    assert "kept by kind: 0 of 1 simple, 1 of 1 no call" in out and "1 prompt with calls got no reply right" in out
    row = json.loads((tmp_path / "rs" / "rejection.jsonl").read_text())
    assert row["tools"] == [WEATHER] and row["messages"][0] == {"role": "user", "content": "Hi!"}
    assert row["messages"][-1]["role"] == "assistant" and "tool_call" not in row["messages"][-1]["content"]
    missed = json.loads((tmp_path / "rs" / "references.jsonl").read_text())  # the Oslo prompt, with its own call
    assert missed["source"] == "reference" and missed["tools"] == [WEATHER]
    assert missed["messages"][-1]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    messages, tools = row_to_chat(missed)
    assert messages[0] == {"role": "user", "content": "Oslo?"} and tools == [WEATHER]
    for bad in (["--repair"], ["--references", "--task", "instructions"]):
        with pytest.raises(SystemExit):
            rl.parse_args(["--rejection", "2", *bad, "--model", str(folder), "--data", str(data)])
    with pytest.raises(SystemExit):
        rl.parse_args(["--references", "--model", str(folder), "--data", str(data)])


def test_rejection_sampling_interrupted_goes_on_with_resume(tiny_run, tmp_path, monkeypatch):
    """One prompt a chunk; Ctrl-C while sampling the second: --resume (the settings from the progress file)
    samples only that one and writes what the unbroken run writes; the progress file is gone at the end."""
    folder, data = tiny_run
    monkeypatch.setattr(rl, "CHUNK", 1)
    args = ["--rejection", "8", "--model", str(folder), "--data", str(data), "--max-new-tokens", "40",
            "--temperature", "1.5", "--quiet"]
    rl.run(args + ["--out", str(tmp_path / "whole")])
    sampled, sample = [], rl.sample_replies

    def breaks_at_the_second(model, prompts, *rest):
        sampled.append(len(prompts))
        if len(sampled) == 2:
            raise KeyboardInterrupt
        return sample(model, prompts, *rest)
    monkeypatch.setattr(rl, "sample_replies", breaks_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        rl.run(args + ["--out", str(tmp_path / "cut")])
    progress = tmp_path / "cut" / "rejection.progress.jsonl"
    assert len(progress.read_text().splitlines()) == 2  # the settings, one prompt judged
    with progress.open("a") as f:
        f.write('{"wave": 0, "at": 1, "ke')  # a line cut off by a crash: not taken, its prompt sampled again
    sampled.clear()
    rl.run(["--rejection", "8", "--resume", "--out", str(tmp_path / "cut"), "--quiet"])
    assert sampled == [1]
    assert (tmp_path / "cut" / "rejection.jsonl").read_text() == (tmp_path / "whole" / "rejection.jsonl").read_text()
    assert not (tmp_path / "cut" / "rejection.progress.jsonl").exists()
    with pytest.raises(TrainingError, match="does not exist"):
        rl.run(["--rejection", "8", "--resume", "--out", str(tmp_path / "cut"), "--quiet"])


def test_rejection_sampling_stops_at_max_minutes_and_resume_samples_the_rest(tiny_run, tmp_path, monkeypatch):
    """A clock that passes the budget after each prompt (one a chunk): the first prompt's row is written, the
    second is neither sampled nor counted, the progress file stays; --resume without the budget samples that
    one alone and writes what an unbroken run writes. Out of time with no row kept: an error, nothing written."""
    folder, data = tiny_run
    monkeypatch.setattr(rl, "CHUNK", 1)
    hi_first = tmp_path / "hi-first.jsonl"  # the no-call prompt, which the tiny model passes, first
    hi_first.write_text("".join(reversed(data.read_text().splitlines(keepends=True))))
    args = ["--rejection", "8", "--model", str(folder), "--max-new-tokens", "40", "--temperature", "1.5", "--quiet"]
    rl.run(args + ["--data", str(hi_first), "--out", str(tmp_path / "whole")])
    sampled, sample, clock = [], rl.sample_replies, [0.0]

    def sample_then_a_minute_passes(model, prompts, *rest):
        sampled.append(len(prompts))
        clock[0] += 61.0
        return sample(model, prompts, *rest)
    monkeypatch.setattr(rl, "sample_replies", sample_then_a_minute_passes)
    monkeypatch.setattr(rl, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    cut = tmp_path / "cut"
    summary = rl.run(args + ["--data", str(hi_first), "--out", str(cut), "--max-minutes", "1"])
    assert sampled == [1] and summary["prompts"] == 1 and summary["passed"] == 1
    assert len((cut / "rejection.jsonl").read_text().splitlines()) == 1 and (cut / "rejection.progress.jsonl").exists()
    sampled.clear()
    summary = rl.run(["--rejection", "8", "--resume", "--out", str(cut), "--quiet"])
    assert sampled == [1] and summary["prompts"] == 2
    assert (cut / "rejection.jsonl").read_text() == (tmp_path / "whole" / "rejection.jsonl").read_text()
    assert not (cut / "rejection.progress.jsonl").exists()
    with pytest.raises(DataError, match="1 prompt not sampled, and none of the 1 sampled"):  # the call: missed
        rl.run(args + ["--data", str(data), "--out", str(tmp_path / "call-first"), "--max-minutes", "1"])
    assert not (tmp_path / "call-first" / "rejection.jsonl").exists()
    assert (tmp_path / "call-first" / "rejection.progress.jsonl").exists()
