"""The recovery family (data/recovery.py): each wrong call is answered by the real agent with the error the row
shows, the mended call is right, and only the mended call and the answer are learned; and calc-ask's results."""
import re
import zoneinfo
from datetime import datetime, timezone

import numpy as np
import pytest

from nanoagent.agent.builtin import BUILTIN_TOOLS
from nanoagent.agent.calculator import calculator
from nanoagent.agent.clock import suggest_zone
from nanoagent.agent.registry import run_call
from nanoagent.agent.schema import validate_arguments
from nanoagent.data import derived as D
from nanoagent.data import families as F
from nanoagent.data import recovery as R
from nanoagent.data.io import read_rows
from nanoagent.tokenizer import render_chat_spans


@pytest.fixture(scope="module")
def inputs(data_dir):
    return D.Inputs.make(read_rows(str(data_dir / "glaive" / "glaive_toolcall_en_demo.json")),
                         read_rows(str(data_dir / "gsm8k" / "train.jsonl")))


@pytest.fixture(scope="module")
def rows(inputs):
    return list(F.derive("recovery", inputs, 300, seed=0))


def agent_tools(row):
    """The real tools the row offers, in its order (the order an unknown-tool error lists them in)."""
    return {t["name"]: BUILTIN_TOOLS[t["name"]] for t in row["tools"]}


def test_each_wrong_call_gets_the_real_agents_error(rows):
    assert len(rows) == 300
    for r in rows:
        user, wrong, error, right, result, answer = r["messages"]
        assert (user["role"], error["role"], result["role"]) == ("user", "tool", "tool")
        assert wrong["weight"] == 0 and "weight" not in right and answer["content"] and not answer.get("tool_calls")
        (call,) = wrong["tool_calls"]
        assert run_call(call, agent_tools(r)).content == error["content"]


def test_every_kind_of_mistake_is_made(rows):
    errors = " ".join(r["messages"][2]["content"] for r in rows)
    for text in ("cannot read", "unknown time zone 'America/", "unknown time zone", "did you mean",
                 "missing required argument", "unexpected argument (expected", "required: unexpected",
                 "type: unexpected", "unknown tool"):
        assert text in errors, text
    assert {r["messages"][3]["tool_calls"][0]["name"] for r in rows} == set(R.SCHEMAS)


def test_the_mended_call_is_right(rows):
    for r in rows:
        (call,) = r["messages"][3]["tool_calls"]
        suggested = re.search(r"did you mean '(.*)'\?$", r["messages"][2]["content"])
        if suggested:  # the row mends the call as the error said
            assert suggested.group(1) in call["arguments"].values()
        _, errors = validate_arguments(call["arguments"], R.SCHEMAS[call["name"]]["parameters"])
        assert errors == []
        if call["name"] == "calculator":  # the result is the real calculator's
            assert calculator(call["arguments"]["expression"]) == r["messages"][4]["content"]
        if call["name"] == "get_current_time":
            zoneinfo.ZoneInfo(call["arguments"]["timezone"])
            assert r["messages"][4]["content"].endswith(f", {call['arguments']['timezone']})")


def test_only_the_mended_call_and_the_answer_are_learned(rows):
    for r in rows[:40]:
        text, spans = render_chat_spans(r["messages"], r["tools"], add_generation_prompt=False)
        learned = [text[a:b] for a, b in spans]
        assert len(learned) == 2 and learned[0].startswith("<tool_call>") and learned[1].startswith(
            r["messages"][5]["content"])
        wrong = text.index("<tool_call>", text.index("<|im_start|>assistant"))  # the first call in the chat
        assert not any(a <= wrong < b for a, b in spans)


@pytest.mark.parametrize("expression", ["1200*3", "17*23+4", "(2500-100)/4", "0.5*1500", "48/2"])
def test_unreadable_forms_are_the_calculators_errors(expression):
    seen = set()
    for seed in range(30):
        bad, error, meant = R.unreadable(expression, np.random.default_rng(seed))
        seen.add(bad)
        assert bad != expression
        assert run_call({"name": "calculator", "arguments": {"expression": bad}},
                        {"calculator": BUILTIN_TOOLS["calculator"]}).content == error
        assert error.endswith(f"did you mean '{meant}'?") and calculator(meant) == calculator(expression)
    assert any("$" in b for b in seen)
    assert ("*" in expression) == any(" x " in b or " times " in b for b in seen)
    assert bool(re.search(r"\d{4}", expression)) == any(re.search(r"\d,\d{3}", b) for b in seen)


def test_no_city_of_the_time_rows_is_a_time_zone_by_its_bare_name():
    assert len(R.CITY_ZONES) >= 15 and "Singapore" not in dict(R.CITY_ZONES)


def test_the_clock_suggests_the_zone_of_most_cities_and_the_rows_say_it(rows):
    now = datetime(2025, 7, 1, tzinfo=timezone.utc)
    for city, zone in R.CITY_ZONES:  # the hint is the clock's, and a zone of the city's own time
        meant = R.zone_hint(city)
        assert meant == suggest_zone(city)
        if meant:
            offset = [now.astimezone(zoneinfo.ZoneInfo(z)).utcoffset() for z in (meant, zone)]
            assert offset[0] == offset[1]
    assert sum(R.zone_hint(city) is not None for city, _ in R.CITY_ZONES) >= len(R.CITY_ZONES) - 3  # not Mumbai
    errors = [r["messages"][2]["content"] for r in rows if "unknown time zone" in r["messages"][2]["content"]]
    assert errors and all("did you mean" in e or "'Mumbai'" in e for e in errors)


def test_calc_ask_asks_one_expression_and_answers_with_the_calculators_result(inputs):
    rows = list(F.derive("calc-ask", inputs, 50))
    assert rows
    for r in rows:
        ask, call, result, answer = r["messages"]
        expression = call["tool_calls"][0]["arguments"]["expression"]
        assert expression in ask["content"] and result["content"] == calculator(expression)
        assert answer["content"] == f"{expression} = {result['content']}."
