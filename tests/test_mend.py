"""Recovery rows from the model's own failed calls (tuner/mend.py) and the requests they start from
(data/requests.py): scripted agents with the real calculator and clock, and the command on the tiny model."""
import json
import zoneinfo

import pytest

from nanoagent.agent import Agent, ScriptedModel
from nanoagent.agent.calculator import evaluate
from nanoagent.data.requests import EVAL_ZONES, agent_requests, time_cities
from nanoagent.eval import inuse as U
from nanoagent.tuner import mend as M


def call(name: str, **arguments) -> str:
    return "<tool_call>" + json.dumps([{"name": name, "arguments": arguments}]) + "</tool_call>"


def request(kind: str, **fields) -> dict:
    return {"id": f"{kind}-t", "kind": kind} | fields


SUM = request("sums", question="What is 2 to the power of 10?", gold=1024, expression="2**10")
TIME = request("time", question="What time is it in Bujumbura?", gold="Africa/Bujumbura", city="Bujumbura")
DIRECT = request("direct", question="What is the capital of Japan?", gold="tokyo",
                 answer="The capital of Japan is Tokyo.")


def mended(replies, item):
    """The scripted replies run as the agent -> (what the run became, its rows)."""
    agent = Agent(ScriptedModel(replies), tools=list(U.TOOLS), max_steps=3, temperature=0.0)
    result = agent.run(item["question"])
    return M.mend(item, result.messages, result.steps, agent)


def learned(row):
    return [m for m in row if m["role"] == "assistant" and m.get("weight", 1) != 0]


def test_the_requests_are_none_of_the_evaluations_and_answer_themselves():
    items = agent_requests(400, seed=3)
    assert items == agent_requests(400, seed=3) and items != agent_requests(400, seed=4)
    assert {it["kind"] for it in items} == {"sums", "word", "time", "direct"}
    assert not {it["question"] for it in items} & {it["question"] for it in U.inuse_items()}
    assert set(EVAL_ZONES) == {zone for _, zone in U.TIMES}
    eval_cities = {q.lower() for q, _ in U.TIMES}
    for it in items:
        if it["kind"] in ("sums", "word"):
            assert evaluate(it["expression"]) == pytest.approx(it["gold"]), it
        elif it["kind"] == "time":
            zoneinfo.ZoneInfo(it["gold"])
            assert it["gold"] not in EVAL_ZONES and it["city"].lower() not in " ".join(eval_cities)
    assert all(zone not in EVAL_ZONES for _, zone in time_cities()) and len(time_cities()) > 300


def test_a_hint_that_gives_the_right_result_is_the_mend_and_the_failed_call_is_not_learned():
    outcome, rows = mended([call("calculator", expression="2 to the power of 10"), "It is 1024."], SUM)
    assert outcome == "mended" and len(rows) == 1
    row = rows[0]
    assert row[1]["weight"] == 0 and "2 to the power of 10" in row[1]["content"]
    assert "did you mean '2**10'?" in row[2]["content"]
    mend, result, answer = learned(row)[0], row[-2], row[-1]
    assert mend["tool_calls"] == [{"name": "calculator", "arguments": {"expression": "2**10"}}]
    assert result["content"] == "1024" and answer["content"] == "2**10 = 1024."


def test_a_repeated_failed_call_makes_a_second_row_that_ends_at_the_repeat():
    bad = call("get_current_time", timezone="America/Bujumbura")  # "did you mean 'Africa/Bujumbura'?"
    outcome, rows = mended([bad, bad, "done"], TIME)
    assert outcome == "mended" and len(rows) == 2
    assert [m.get("weight") for m in rows[1] if m["role"] == "assistant"][:2] == [0, 0]
    for row in rows:
        assert learned(row)[0]["tool_calls"][0]["arguments"] == {"timezone": "Africa/Bujumbura"}
        assert U.said_time(row[-1]["content"], row[-2]["content"])
    assert len(mended([bad, call("get_current_time", timezone="Africa/Bujumbura"), "done"], TIME)[1]) == 1


def test_a_hint_to_another_place_gives_way_to_the_right_call():
    cordoba = request("time", question="What time is it in Cordoba?", gold="America/Argentina/Cordoba", city="Cordoba")
    outcome, rows = mended([call("get_current_time", timezone="America/Buenos_Rico"), "done"], cordoba)
    assert "did you mean 'America/Puerto_Rico'?" in rows[0][2]["content"]  # UTC-4, where Cordoba is UTC-3
    assert learned(rows[0])[0]["tool_calls"][0]["arguments"] == {"timezone": "America/Argentina/Cordoba"}


def test_a_question_no_tool_fits_is_mended_by_answering_without_a_call():
    outcome, rows = mended([call("calculator", expression="capitalize")] * 3, DIRECT)
    assert outcome == "mended"
    assert [m["content"] for m in learned(rows[0])] == ["The capital of Japan is Tokyo."]
    assert mended(["Tokyo is the capital of Japan."], DIRECT)[0] == "right"
    outcome, rows = mended(["I cannot help with that."], DIRECT)
    assert outcome == "wrong" and rows[0][-1]["content"] == DIRECT["answer"] and len(rows[0]) == 2


def test_right_runs_are_kept_whole_and_a_missing_call_or_a_misread_result_is_written_right():
    outcome, rows = mended([call("calculator", expression="2**10"), "2**10 is 1024."], SUM)
    assert outcome == "right" and not any(m.get("weight") == 0 for m in rows[0])
    assert rows[0][-1]["content"] == "2**10 is 1024."
    outcome, rows = mended(["It is 1000."], SUM)
    assert outcome == "called" and learned(rows[0])[-1]["content"] == "2**10 = 1024."
    outcome, rows = mended([call("calculator", expression="2**10"), call("calculator", expression="1024*2"), "2048."],
                           SUM)
    assert outcome == "misread" and [m["role"] for m in rows[0]] == ["user", "assistant", "tool", "assistant"]


def test_the_command_on_the_tiny_model_writes_rows_and_counts_every_request(tiny_long, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    summary = M.run(["--model", str(tiny_long), "--n", "4", "--steps", "2", "--max-new-tokens", "4", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == summary["rows"] >= 4 and all(r["source"].startswith("own-") for r in rows)
    assert all(r["tools"] and r["messages"][0]["role"] == "user" for r in rows)
    printed = capsys.readouterr().out
    assert "(4 requests;" in printed and f"wrote {len(rows)} rows" in printed
