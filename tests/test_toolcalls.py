"""The tool-call format: writing calls, and parsing the NanoAgent format, what small models really emit, never raising, in linear time."""

import json
import re
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nanoagent.toolcalls import (MAX_TAGS, _STRAY_TAG, close_open_call, decode_payload, format_tool_calls, parse_reply,
                                 parse_tool_calls, strip_fence, strip_think)

CALC = {"name": "calculator", "arguments": {"expression": "2+2"}}
TIME = {"name": "get_current_time", "arguments": {"timezone": "Europe/Paris"}}

# (reply as a model wrote it, calls expected)
CASES = [
    # the NanoAgent format itself
    ('<tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"}}]</tool_call>', [CALC]),
    # two calls in one list
    ('<tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"}}, '
     '{"name": "get_current_time", "arguments": {"timezone": "Europe/Paris"}}]</tool_call>', [CALC, TIME]),
    # a single object instead of a list
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call>', [CALC]),
    # several tags, Hermes style, with newlines
    ('<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n</tool_call>\n'
     '<tool_call>\n{"name": "get_current_time", "arguments": {"timezone": "Europe/Paris"}}\n</tool_call>', [CALC, TIME]),
    # Python-literal quoting
    ("<tool_call>[{'name': 'calculator', 'arguments': {'expression': '2+2'}}]</tool_call>", [CALC]),
    ("<tool_call>{'name': 'f', 'arguments': {'flag': True, 'other': None, 'n': -3}}</tool_call>",
     [{"name": "f", "arguments": {"flag": True, "other": None, "n": -3}}]),
    # JSON true/false/null inside otherwise Python quoting
    ("<tool_call>{'name': 'f', 'arguments': {'flag': true, 'x': null}}</tool_call>",
     [{"name": "f", "arguments": {"flag": True, "x": None}}]),
    # arguments as a JSON string (OpenAI style)
    ('<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"2+2\\"}"}</tool_call>', [CALC]),
    # OpenAI's function wrapper
    ('<tool_call>[{"type": "function", "function": {"name": "calculator", "arguments": "{\\"expression\\": \\"2+2\\"}"}}]'
     '</tool_call>', [CALC]),
    # "parameters" instead of "arguments"
    ('<tool_call>{"name": "calculator", "parameters": {"expression": "2+2"}}</tool_call>', [CALC]),
    # code fence inside the tag
    ('<tool_call>\n```json\n[{"name": "calculator", "arguments": {"expression": "2+2"}}]\n```\n</tool_call>', [CALC]),
    # code fence around the tag
    ('```\n<tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"}}]</tool_call>\n```', [CALC]),
    # text before and after
    ('Let me compute that.\n<tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"}}]</tool_call>\n'
     'I will wait for the result.', [CALC]),
    # a <think> block first, mentioning a tag that must not be read
    ('<think>I could use <tool_call>[{"name": "wrong", "arguments": {}}]</tool_call> maybe</think>\n'
     '<tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"}}]</tool_call>', [CALC]),
    # an unclosed final tag (generation stopped at </tool_call>)
    ('<tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"}}]', [CALC]),
    # truncated JSON: missing closing brackets
    ('<tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"', [CALC]),
    # trailing commas
    ('<tool_call>[{"name": "calculator", "arguments": {"expression": "2+2",},},]</tool_call>', [CALC]),
    # Python call syntax
    ('<tool_call>[calculator(expression="2+2")]</tool_call>', [CALC]),
    ('<tool_call>calculator(expression="2+2")</tool_call>', [CALC]),
    # two JSON objects back to back in one tag
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}\n'
     '{"name": "get_current_time", "arguments": {"timezone": "Europe/Paris"}}</tool_call>', [CALC, TIME]),
    # a second opening tag instead of a closing one
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}'
     '<tool_call>{"name": "get_current_time", "arguments": {"timezone": "Europe/Paris"}}', [CALC, TIME]),
    # capitalised tag, spaces inside the tag, backslash closing tag
    ('<TOOL_CALL>[{"name": "calculator", "arguments": {"expression": "2+2"}}]<\\tool_call>', [CALC]),
    ('< tool_call >[{"name": "calculator", "arguments": {"expression": "2+2"}}]</ tool_call >', [CALC]),
    # plural tag
    ('<tool_calls>[{"name": "calculator", "arguments": {"expression": "2+2"}}]</tool_calls>', [CALC]),
    # missing arguments means no arguments
    ('<tool_call>{"name": "get_current_time"}</tool_call>', [{"name": "get_current_time", "arguments": {}}]),
    ('<tool_call>{"name": "get_current_time", "arguments": null}</tool_call>', [{"name": "get_current_time", "arguments": {}}]),
    ('<tool_call>{"name": "get_current_time", "arguments": ""}</tool_call>', [{"name": "get_current_time", "arguments": {}}]),
    # no tag, but the whole reply is a call list (with or without a fence)
    ('[{"name": "calculator", "arguments": {"expression": "2+2"}}]', [CALC]),
    ('```json\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n```', [CALC]),
    # unicode survives
    ('<tool_call>[{"name": "web_search", "arguments": {"query": "café ☕ 東京"}}]</tool_call>',
     [{"name": "web_search", "arguments": {"query": "café ☕ 東京"}}]),
    # an OpenAI "tool_calls" wrapper object
    ('<tool_call>{"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]}</tool_call>', [CALC]),
    # think tags inside an argument are the argument's text, not thinking
    ('<tool_call>[{"name": "web_search", "arguments": {"query": "what does <think> or </think> mean"}}]</tool_call>',
     [{"name": "web_search", "arguments": {"query": "what does <think> or </think> mean"}}]),
    # a lone </think> (the thinking began in the prompt)
    ('reasoning here</think><tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"}}]</tool_call>', [CALC]),
]


@pytest.mark.parametrize("reply, expected", CASES)
def test_real_world_replies_parse_to_the_intended_calls(reply, expected):
    parsed = parse_reply(reply)
    assert parsed.calls == expected
    assert parsed.errors == []
    assert parse_tool_calls(reply) == expected


@pytest.mark.parametrize("reply", [
    "The answer is 4.",
    "Here is some JSON data: {\"a\": 1}",
    '{"name": "Alice", "age": 30}',          # a JSON answer that is not a call
    "",
    "<think>just thinking</think>The answer is 4.",
    "I'd use a <tool_call> here but won't",   # a tag with nothing call-like after it...
])
def test_replies_without_calls_give_no_calls(reply):
    parsed = parse_reply(reply)
    assert parsed.calls == []


def test_an_empty_tag_is_neither_call_nor_error():
    parsed = parse_reply("Nothing to do <tool_call></tool_call> here.")
    assert parsed.calls == [] and parsed.errors == []
    assert parsed.text == "Nothing to do  here."


@pytest.mark.parametrize("reply, fragment", [
    ("<tool_call>not json at all</tool_call>", "neither JSON nor a Python literal"),
    ('<tool_call>[{"arguments": {"x": 1}}]</tool_call>', "'name'"),
    ('<tool_call>["calculator"]</tool_call>', "'name'"),
    ('<tool_call>{"name": "calculator", "arguments": [1, 2]}</tool_call>', "must be an object"),
    ('<tool_call>{"name": "calculator", "arguments": "2+2"}</tool_call>', "could not read the arguments"),
    ("<tool_call>[f(**kw)]</tool_call>", "neither JSON"),
    ("<tool_call>" + "[" * 5000 + "</tool_call>", "tool call"),
    ("<tool_call>" + "x" * 30_000 + "</tool_call>", "longer than"),
])
def test_malformed_calls_become_errors_not_exceptions(reply, fragment):
    parsed = parse_reply(reply)
    assert parsed.calls == []
    assert len(parsed.errors) == 1 and fragment in parsed.errors[0]


def test_good_and_bad_calls_in_one_reply_are_both_reported():
    reply = ('<tool_call>[{"name": "calculator", "arguments": {"expression": "1+1"}}, {"oops": 1}]</tool_call>')
    parsed = parse_reply(reply)
    assert parsed.calls == [{"name": "calculator", "arguments": {"expression": "1+1"}}]
    assert len(parsed.errors) == 1


def test_text_outside_the_calls_is_kept_and_think_dropped():
    reply = ('<think>plan: use the calculator</think>Let me check.\n'
             '<tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"}}]</tool_call>\nOne moment.')
    parsed = parse_reply(reply)
    assert parsed.text == "Let me check.\n\nOne moment."
    assert "plan" not in parsed.text


def test_python_positional_arguments_are_kept_in_order_for_the_registry():
    calls = parse_tool_calls("<tool_call>[retrieve_payment_date(12, 'x')]</tool_call>")
    assert calls == [{"name": "retrieve_payment_date", "arguments": {"__positional__": [12, "x"]}}]


def test_decode_payload_repairs_and_refuses():
    assert decode_payload('{"a": [1, 2') == {"a": [1, 2]}
    assert decode_payload("{'a': 'it\\'s'}") == {"a": "it's"}
    with pytest.raises(ValueError):
        decode_payload("   ")
    with pytest.raises(ValueError):
        decode_payload("__import__('os').system('echo hi')")  # a call on an attribute result: refused


def test_non_string_input_does_not_raise():
    assert parse_tool_calls(None) == []
    assert parse_tool_calls(12345) == []


# ---------------------------------------------------------------- property: never raises

_fragments = st.sampled_from([
    "<tool_call>", "</tool_call>", "<think>", "</think>", "[", "]", "{", "}", '"', "'", ":", ",",
    '"name"', '"arguments"', "calculator", "(", ")", "=", "True", "null", "```", "```json", "\\",
    "\n", " ", "1e999", "-", "**", "<tool_calls>", "\\u12", "NaN",
])
_model_like = st.lists(st.one_of(_fragments, st.text(max_size=8)), max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), _model_like))
def test_parser_never_raises_and_returns_well_formed_calls(text):
    parsed = parse_reply(text)
    assert isinstance(parsed.errors, list) and all(isinstance(e, str) for e in parsed.errors)
    assert isinstance(parsed.text, str)
    for call in parsed.calls:
        assert set(call) == {"name", "arguments"}
        assert isinstance(call["name"], str) and call["name"]
        assert isinstance(call["arguments"], dict)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10),
                       st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20), st.booleans(),
                                 st.none(), st.lists(st.integers(), max_size=3)),
                       max_size=4),
       st.sampled_from(["json_list", "json_object", "python", "string_arguments"]))
def test_any_arguments_round_trip_through_each_format(arguments, style):
    call = {"name": "tool_x", "arguments": arguments}
    if style == "json_list":
        payload = json.dumps([call])
    elif style == "json_object":
        payload = json.dumps(call)
    elif style == "python":
        payload = repr([call])
    else:
        payload = json.dumps({"name": "tool_x", "arguments": json.dumps(arguments)})
    assert parse_tool_calls(f"<tool_call>{payload}</tool_call>") == [call]


# ---- the writer and the reader agree -------------------------------------------------------

def test_written_calls_read_back():
    calls = [{"name": "get_weather", "arguments": {"city": "Oslo"}},
             {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'}}]
    assert parse_tool_calls(format_tool_calls(calls)) == [{"name": "get_weather", "arguments": {"city": "Oslo"}},
                                                         {"name": "get_weather", "arguments": {"city": "Lima"}}]


@pytest.mark.parametrize("reply", ['<tool_call>[{"name": "f", "arguments": {}}', '<TOOL_CALL>[{"name": "f"',
                                   '< tool_calls >[{"name": "f", "arguments": {}}]'])
def test_close_open_call_closes_every_spelling_the_parser_reads(reply):
    closed = close_open_call(reply)
    assert closed.endswith("</tool_call>") and parse_reply(closed).calls == parse_reply(reply).calls


def test_close_open_call_leaves_closed_calls_alone():
    reply = '<Tool_Call>[{"name": "f", "arguments": {}}]</Tool_Call>'
    assert close_open_call(reply) == reply


# ---- adversarial replies: linear time, each read within a second -------------------------------

def _timed_parse(reply):
    """parse_reply(reply) and the seconds it took."""
    start = time.perf_counter()
    parsed = parse_reply(reply)
    return parsed, time.perf_counter() - start


_ONE_CALL = '<tool_call>[{"name": "calculator", "arguments": {"expression": "2+2"}}]</tool_call>'


@pytest.mark.parametrize("reply, expected_calls", [
    ("<think></think>" * 100_000, []),                       # strip_think searched for a tag from each block: quadratic
    ("<think></think>" * 100_000 + _ONE_CALL, [CALC]),
    ("<think>a <tool_call> b</think>" * 50_000 + _ONE_CALL, [CALC]),
    ("<" + " " * 200_000 + "x", []),                         # the stray-tag regex tried every split of the spaces
    ("< / " * 100_000, []),
    ("<" * 1_000_000, []),
    ("<tool_call>" * 100_000, []),
    ("<tool_call>x" * 100_000, []),                          # a flood of tags: only the first MAX_TAGS are decoded
    ("<tool_call>" + "[" * 200_000, []),
    ("<tool_call>" + "[{" * 100_000, []),
    ("<tool_call>```\nx" + " " * 200_000 + "y", []),           # the fence regex re-scanned the spaces from each one
    ("```\nx" + " " * 200_000 + "y" + "\n", []),
    ("```json\n[1," + " " * 10_000 + "2]```", []),             # short enough to be decoded: [1, 2] is no call
    ("```" * 300_000, []),
    ("<think>" * 200_000, []),
    ("</think>" * 200_000 + _ONE_CALL, [CALC]),
    ("<tool_call>[" + "," + " " * 200_000 + "x", []),
])
def test_adversarial_replies_are_read_within_a_second(reply, expected_calls):
    parsed, seconds = _timed_parse(reply)
    assert seconds < 1.0, f"{seconds:.2f} s"
    assert parsed.calls == expected_calls
    assert all(isinstance(e, str) and len(e) < 500 for e in parsed.errors)


def test_a_flood_of_tags_is_cut_at_the_budget_and_reported():
    parsed, seconds = _timed_parse(_ONE_CALL * 10_000)
    assert seconds < 1.0, f"{seconds:.2f} s"
    assert parsed.calls == [CALC] * MAX_TAGS
    assert len(parsed.errors) == 1 and f"{10_000 - MAX_TAGS} more tool call tag(s) left unread" in parsed.errors[0]
    assert parse_tool_calls(_ONE_CALL * 10) == [CALC] * 10  # an ordinary number of tags is all read


_adversarial_units = st.sampled_from([
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_calls>", "<", " ", "\n", "/", "```", "`", "[", "{",
    "(", ",", '"', "'", "x", "json", "< tool_call", "<\\", "f'{1}", "1<", "-",
])


@settings(max_examples=25, deadline=None)
@given(st.lists(_adversarial_units, min_size=1, max_size=5).map("".join), st.lists(_adversarial_units, max_size=3).map("".join))
@example('<tool_call>"""', "")  # two bad calls a tag: the errors once outgrew the tag budget
def test_any_long_repetition_is_read_within_a_second(unit, tail):
    reply = unit * (300_000 // len(unit)) + tail
    parsed, seconds = _timed_parse(reply)
    assert seconds < 1.0, f"{len(reply)} characters of {unit!r}: {seconds:.2f} s"
    assert all(set(call) == {"name", "arguments"} for call in parsed.calls)
    assert len(parsed.errors) <= MAX_TAGS + 1


# ---- the linear rewrites read short replies exactly as the straightforward versions did -------------

_FENCE_BEFORE = re.compile(r"^\s*```[\w-]*\s*\n?(?P<body>.*?)\n?\s*(```\s*)?$", re.DOTALL)  # quadratic on long spaces
_STRAY_BEFORE = re.compile(r"<\s*[/\\]?\s*tool_calls?\s*>", re.IGNORECASE)  # quadratic on `<` and long spaces


def _strip_think_before(text):
    """strip_think as first written: it searched for a `<tool_call>` from each block (quadratic)."""
    lone_close, first_call = re.search("</think>", text, re.I), re.search(r"<\s*tool_calls?\s*>", text, re.I)
    if lone_close and not re.search("<think>", text, re.I) and (first_call is None or lone_close.start() < first_call.start()):
        text = text[lone_close.end():]
    kept, i = [], 0
    while (opening := re.compile("<think>", re.I).search(text, i)) is not None:
        call = re.compile(r"<\s*tool_calls?\s*>", re.I).search(text, i)
        if call is not None and call.start() < opening.start():
            break
        kept.append(text[i:opening.start()])
        closing = re.compile("</think>", re.I).search(text, opening.end())
        if closing is None:
            call = re.compile(r"<\s*tool_calls?\s*>", re.I).search(text, opening.end())
            i = call.start() if call else len(text)
            break
        i = closing.end()
    kept.append(text[i:])
    return "".join(kept)


_tag_text = st.lists(st.one_of(_adversarial_units, st.sampled_from(["TOOL_CALL", "\t", "\u00a0", "\\", ">", "-x"]),
                               st.text(max_size=3)), max_size=25).map("".join)


@settings(max_examples=300, deadline=None)
@given(_tag_text)
def test_rewrites_agree_with_the_straightforward_versions(text):
    before = _FENCE_BEFORE.match(text)
    assert strip_fence(text) == (before.group("body") if before else text)
    assert strip_fence("```" + text) == _FENCE_BEFORE.match("```" + text).group("body")
    assert _STRAY_TAG.sub("", text) == _STRAY_BEFORE.sub("", text)
    assert strip_think(text) == _strip_think_before(text)
