"""The agent in use (eval/inuse.py): its rules for a right answer on scripted agents with the real calculator and
clock, the calls repeated after an error, and the command on the tiny model."""
import json
from datetime import datetime

import pytest

from nanoagent.agent import ScriptedModel
from nanoagent.eval import inuse as U
from nanoagent.eval.__main__ import main
from nanoagent.eval.plot import measures


def call(name: str, **arguments) -> str:
    return "<tool_call>" + json.dumps([{"name": name, "arguments": arguments}]) + "</tool_call>"


def item(kind: str, i: int = 0) -> dict:
    return next(it for it in U.inuse_items() if it["id"] == f"{kind}-{i}")


def run(replies, it):
    agent = U.Agent(ScriptedModel(replies), tools=list(U.TOOLS), max_steps=U.MAX_STEPS, temperature=0.0)
    return U.run_item(agent, it)


class ReadsTheClock:
    """Calls get_current_time once, then answers with the hour and minute of its result (as `form` writes them)."""

    def __init__(self, zone: str, form):
        self.zone, self.form = zone, form

    def chat(self, messages, tools=None, **generation):
        if messages[-1]["role"] != "tool":
            return call("get_current_time", timezone=self.zone)
        result = messages[-1]["content"]
        return f"It is {self.form(datetime.fromisoformat(result.split(' ')[0]))} there."


def test_the_items_are_fixed_and_each_kind_is_there():
    items = U.inuse_items()
    assert len(items) == 28 and {it["kind"] for it in items} == set(U.NEEDS)
    assert [it["id"] for it in U.inuse_items(2)] == [f"{k}-{i}" for k in U.NEEDS for i in range(2)]


def test_a_sum_through_the_calculator_is_right_and_a_wrong_number_is_not():
    r = run([call("calculator", expression="17 * 23 + 4"), "The answer is 395."], item("sums"))
    assert r["correct"] and r["called_needed"] and r["tool_calls"] == 1 and r["tool_errors"] == 0
    r = run([call("calculator", expression="17 * 23 + 4"), "The answer is 394."], item("sums"))
    assert not r["correct"] and r["called_needed"]
    r = run(["17 times 23 plus 4 is 395."], item("sums"))  # right without the tool: right, but not called
    assert r["correct"] and not r["called_needed"]


def test_a_failed_call_sent_again_unchanged_is_counted_and_a_mended_one_is_not():
    bad, good = call("calculator", expression="17 x 23 + 4"), call("calculator", expression="17 * 23 + 4")
    r = run([bad, bad, good, "The answer is 395."], item("sums"))
    assert r["tool_errors"] == 2 and r["repeated"] == 1 and r["correct"]
    r = run([bad, good, "The answer is 395."], item("sums"))
    assert r["tool_errors"] == 1 and r["repeated"] == 0 and r["correct"]
    s = U.summarize([r, run([bad] * 6, item("sums"))])
    assert s["met_an_error"] == 2 and s["recovered"] == 1 and s["repeated_calls"] == 4 and s["accuracy"] == 0.5


@pytest.mark.parametrize("form", [lambda t: f"{t:%H:%M}", lambda t: f"{t.hour % 12 or 12}:{t:%M %p}"])
def test_the_time_is_right_when_read_from_a_call_in_the_citys_offset(form):
    it = item("time")  # Rome
    agent = U.Agent(ReadsTheClock("Europe/Rome", form), tools=list(U.TOOLS), max_steps=U.MAX_STEPS)
    assert U.run_item(agent, it)["correct"]
    agent = U.Agent(ReadsTheClock("Asia/Tokyo", form), tools=list(U.TOOLS), max_steps=U.MAX_STEPS)
    assert not U.run_item(agent, it)["correct"]  # a time, but another city's


def test_said_time_wants_the_hour_and_minute_of_the_result():
    result = "2026-12-07T16:05:09+01:00 (Monday, Europe/Rome)"
    assert U.said_time("It is 16:05.", result) and U.said_time("It is 4:05 PM.", result)
    assert U.said_time("It is 4:05:09 p.m.", result) and U.said_time(result, result)
    assert not U.said_time("It is 14:05.", result) and not U.said_time("It is 16:50.", result)
    assert not U.said_time("It is 4:05 AM.", result)  # the hour, but the wrong half of the day
    assert U.same_offset(result, "Europe/Paris") and not U.same_offset(result, "Europe/London")


def test_a_direct_question_is_right_only_without_a_call():
    assert run(["The capital of Italy is Rome."], item("direct"))["correct"]
    r = run([call("calculator", expression="1+1"), "The capital of Italy is Rome."], item("direct"))
    assert not r["correct"] and r["called_needed"]


def test_the_agent_command_on_the_tiny_model(tiny_long, tmp_path, capsys):
    out = tmp_path / "eval-agent.json"
    report = main(["agent", "--model", str(tiny_long), "--limit", "1", "--max-new-tokens", "3", "--max-steps", "2",
                   "--out", str(out), "--quiet"])
    s = json.loads(out.read_text())["agent"]["summary"]
    assert s == report["agent"]["summary"] and s["n"] == 4 and set(s["kinds"]) == set(U.NEEDS)
    assert "== agent" in capsys.readouterr().out
    assert "agent in use" in measures(report)
