"""Tool-call rewards on hand-written replies: exact, partial, wrong, malformed, extra text, parallel calls in
another order, "no call" items, and the format term."""
import json

import pytest

from nanoagent.tuner.rewards import (FORMAT_WEIGHT, PARTIAL, clean_format, correctness, expected_call, reference_problem,
                               reward)

TOOLS = [
    {"type": "function", "function": {  # OpenAI's wrapper is accepted
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                        "unit": {"type": "string", "enum": ["C", "F"]}},
                       "required": ["city"]}}},
    {"name": "add", "description": "a + b",
     "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "number"},
                                                     "tags": {"type": "array", "items": {"type": "string"}},
                                                     "opts": {"type": "object"}},
                    "required": ["a", "b"]}},
]
PARIS = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}
ROME = {"name": "get_weather", "arguments": {"city": "Rome", "unit": "C"}}
ADD = {"name": "add", "arguments": {"a": 2, "b": 3.5, "tags": ["x", "y"], "opts": {"round": True, "to": [1, 2]}}}


def tag(*calls, raw=None):
    return "<tool_call>" + (raw if raw is not None else json.dumps(list(calls))) + "</tool_call>"


def test_an_exact_call_is_worth_one_plus_the_format_term():
    r = reward(tag(PARIS), "stop", [PARIS], TOOLS)
    assert (r.correct, r.format, r.reason) == (1.0, 1.0, "")
    assert r.total == pytest.approx(1.0 + FORMAT_WEIGHT)
    # nested values (a list, a dict holding a list) and BFCL's normalisation: case, spaces, int for a float
    same = {"name": "add", "arguments": {"b": 3.5, "a": 2, "tags": ["X", "y"], "opts": {"to": [1, 2], "round": True}}}
    assert correctness(tag(same), [ADD], TOOLS) == (1.0, "")
    assert correctness(tag({"name": "get_weather", "arguments": {"city": "paris ", "unit": "c"}}), [PARIS], TOOLS)[0] == 1
    four = {"name": "add", "arguments": {"a": 2, "b": 4}}
    assert correctness(tag({"name": "add", "arguments": {"a": 2, "b": 4.0}}), [four], TOOLS)[0] == 1.0
    # text before the call is fine for the format
    assert reward("Checking.\n" + tag(PARIS), "stop", [PARIS], TOOLS).format == 1.0


def test_right_function_with_wrong_arguments_earns_partial_credit():
    for wrong in ({"city": "Lyon", "unit": "C"},  # a wrong value
                  {"city": "Paris"},  # an argument the answer needs, left out
                  {"city": "Paris", "unit": "C", "day": "Monday"},  # an undeclared argument
                  {"unit": "C"},  # a required argument missing
                  {"city": 7, "unit": "C"}):  # a value of the wrong type
        r = reward(tag({"name": "get_weather", "arguments": wrong}), "stop", [PARIS], TOOLS)
        assert r.correct == PARTIAL and r.format == 1.0, wrong
        assert "wrong arguments" in r.reason
    # a bool is never an int
    assert correctness(tag({"name": "add", "arguments": {**ADD["arguments"], "a": True}}), [ADD], TOOLS)[0] == PARTIAL


def test_wrong_missing_or_unparsable_calls_earn_nothing():
    assert correctness(tag(ADD), [PARIS], TOOLS) == (0.0, "wrong functions: ['add'] instead of ['get_weather']")
    assert correctness("It is sunny in Paris.", [PARIS], TOOLS) == (0.0, "no call")
    assert correctness(tag(PARIS, PARIS), [PARIS], TOOLS)[0] == 0.0  # one call too many
    bad = reward(tag(raw="get the weather in Paris please"), "stop", [PARIS], TOOLS)
    assert (bad.correct, bad.format) == (0.0, 0.0) and bad.reason.startswith("unparsable call")
    nameless = reward(tag(raw='[{"arguments": {"city": "Paris"}}]'), "stop", [PARIS], TOOLS)
    assert (nameless.correct, nameless.format) == (0.0, 0.0)


def test_parallel_calls_match_in_any_order():
    assert correctness(tag(ROME, PARIS), [PARIS, ROME], TOOLS) == (1.0, "")
    assert correctness(tag(ADD, PARIS), [PARIS, ADD], TOOLS) == (1.0, "")
    lyon = {"name": "get_weather", "arguments": {"city": "Lyon", "unit": "C"}}
    # the right functions, one of the two calls right: partial credit grows with the calls matched
    half = PARTIAL + (1 - PARTIAL) / 2
    assert correctness(tag(lyon, PARIS), [PARIS, ROME], TOOLS)[0] == pytest.approx(half)
    assert correctness(tag(PARIS, PARIS), [PARIS, ROME], TOOLS)[0] == pytest.approx(half)  # a call matches once
    assert correctness(tag(lyon, lyon), [PARIS, ROME], TOOLS)[0] == PARTIAL
    assert correctness(tag(PARIS, ADD), [PARIS, ROME], TOOLS)[0] == 0.0  # a wrong function among them
    # several tags, or a single object instead of a list: the checker reads the calls, the format says no
    split = reward(tag(ROME) + tag(PARIS), "stop", [PARIS, ROME], TOOLS)
    assert (split.correct, split.format) == (1.0, 0.0)


def test_no_call_items():
    good = reward("I cannot check flights, but I can tell you the weather.", "stop", [], TOOLS)
    assert (good.correct, good.format) == (1.0, 1.0)
    called = reward(tag(PARIS), "stop", [], TOOLS)
    assert (called.correct, called.format) == (0.0, 1.0) and "none fits" in called.reason
    assert correctness("", [], TOOLS) == (0.0, "an empty reply")
    assert correctness(tag(raw="[{oops"), [], TOOLS)[0] == 0.0  # an attempted call, unreadable
    assert correctness('[{"name": "get_weather", "arguments": {"city": "Paris"}}]', [], TOOLS)[0] == 0.0  # untagged


def test_a_word_problem_beside_tools_that_do_not_fit_needs_its_answer():
    """No call is right, and the row's reply states 60 as its answer: only a reply whose final number is 60."""
    right = reward("20 * 2 = 40 dogs came in, and 20 + 40 = 60.\nThe answer is 60.", "stop", [], TOOLS, answer=60)
    assert (right.correct, right.format) == (1.0, 1.0)
    wrong = correctness("20 + 2 = 22.\nThe answer is 22.", [], TOOLS, answer=60)
    assert wrong == (0.0, "a final number other than the answer (60)")
    assert correctness("Sorry, I have no tool for that.", [], TOOLS, answer=60)[0] == 0.0
    assert correctness("Sorry, I have no tool for that.", [], TOOLS)[0] == 1.0  # no stated answer: any text


def test_format_term():
    ok = tag(PARIS)
    assert clean_format(ok, "stop") == (True, "")
    assert clean_format(ok, "length") == (False, "did not end at <|im_end|>")
    assert clean_format(ok + "\n", "stop") == (True, "")
    assert clean_format(ok + " Let me know if you need more!", "stop") == (False, "text after </tool_call>")
    assert clean_format(ok + ok, "stop")[1] == "not exactly one <tool_call>...</tool_call>"
    assert clean_format(ok[:-len("</tool_call>")], "stop")[1] == "not exactly one <tool_call>...</tool_call>"
    assert clean_format(tag(raw="[get_weather(city='Paris')]"), "stop")[1] == "the calls are not strict JSON"
    assert clean_format(tag(raw=json.dumps(PARIS)), "stop")[1] == 'not a list of {"name", "arguments"} objects'
    assert clean_format(tag(raw="[]"), "stop")[0] is False
    assert clean_format('[{"name": "add", "arguments": {}}]', "stop") == (False, "a call without a <tool_call> tag")
    assert clean_format("Plain answer.", "stop") == (True, "")
    # the reply with text after the call is still correct, only not clean
    extra = reward(ok + " Anything else?", "stop", [PARIS], TOOLS)
    assert (extra.correct, extra.format) == (1.0, 0.0)
    assert extra.total == 1.0
    # a Python-syntax call inside the tag is read by the forgiving parser, but is not the format
    python = reward(tag(raw='[get_weather(city="Paris", unit="C")]'), "stop", [PARIS], TOOLS)
    assert (python.correct, python.format) == (1.0, 0.0)


def test_references_are_checked_against_their_own_tools():
    assert expected_call(ADD) == {"add": {"a": [2], "b": [3.5], "tags": [["x", "y"]],
                                          "opts": [{"round": [True], "to": [[1, 2]]}]}}
    assert reference_problem([PARIS, ADD], TOOLS) is None
    assert reference_problem([], TOOLS) is None
    assert "not among the tools" in reference_problem([{"name": "fly", "arguments": {}}], TOOLS)
    assert "unexpected parameter" in reference_problem([{"name": "add", "arguments": {"a": 1, "b": 2, "c": 3}}], TOOLS)
    assert "not of type" in reference_problem([{"name": "add", "arguments": {"a": 1.5, "b": 2}}], TOOLS)
