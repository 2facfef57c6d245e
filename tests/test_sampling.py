"""Sampling: each filter keeps the tokens it should, and a seed makes sampling repeatable."""
import numpy as np
import pytest

from nanoagent.sampling import SamplingParams, apply_repetition_penalty, filter_probs, sample_next

P = np.array([0.05, 0.4, 0.1, 0.3, 0.15])


def test_greedy_is_argmax():
    assert sample_next(np.log(P), SamplingParams(), np.random.default_rng(0)) == 1


def test_top_k_keeps_the_k_most_likely():
    np.testing.assert_allclose(filter_probs(P, top_k=2), [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0])


def test_top_p_keeps_the_fewest_reaching_p():
    np.testing.assert_allclose(filter_probs(P, top_p=0.7), [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0])
    np.testing.assert_allclose(filter_probs(P, top_p=0.71), [0, 0.4, 0, 0.3, 0.15] / np.float64(0.85))


def test_min_p_is_relative_to_the_most_likely():
    np.testing.assert_allclose(filter_probs(P, min_p=0.5), [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0])


def test_repetition_penalty_lowers_seen_tokens_either_sign():
    out = apply_repetition_penalty(np.array([2.0, -2.0, 1.0]), [0, 1, 1], 2.0)
    np.testing.assert_allclose(out, [1.0, -4.0, 1.0])


def test_sampling_follows_the_distribution_and_the_seed():
    logits = np.log(P)
    params = SamplingParams(temperature=1.0, seed=3)
    draws = [sample_next(logits, params, np.random.default_rng(i)) for i in range(4000)]
    freq = np.bincount(draws, minlength=5) / len(draws)
    np.testing.assert_allclose(freq, P, atol=0.03)
    a = [sample_next(logits, params, rng) for rng in [np.random.default_rng(7)] for _ in range(20)]
    b = [sample_next(logits, params, rng) for rng in [np.random.default_rng(7)] for _ in range(20)]
    assert a == b


def test_low_temperature_approaches_greedy():
    draws = {sample_next(np.log(P), SamplingParams(temperature=0.01), np.random.default_rng(i)) for i in range(50)}
    assert draws == {1}


@pytest.mark.parametrize("kw", [{"temperature": -1}, {"top_p": 0}, {"top_k": -2}, {"min_p": 1.0},
                                {"repetition_penalty": 0}])
def test_bad_parameters_are_refused(kw):
    with pytest.raises(ValueError):
        SamplingParams(**kw)
