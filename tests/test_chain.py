"""The chain evaluation (GSM8K test through the agent with the real calculator, beside no tools), its answer
rule, remembered replies and --resume, the command on the tiny model, and the picture of reports."""
import json
from pathlib import Path

import pytest

from nanoagent.agent import ScriptedModel
from nanoagent.eval import chain as C
from nanoagent.eval.__main__ import main
from nanoagent.eval.cache import CachedReplies
from nanoagent.eval.plot import measures, plot_reports

GSM8K_TEST = Path(__file__).parent / "fixtures" / "data" / "gsm8k" / "test.jsonl"  # its first 50 rows
PNG = b"\x89PNG\r\n\x1a\n"


def call(expression: str) -> str:
    return '<tool_call>[{"name": "calculator", "arguments": {"expression": "%s"}}]</tool_call>' % expression


@pytest.fixture(scope="module")
def items():
    return C.chain_items(GSM8K_TEST, limit=3)


# ---- the answer rule --------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, number", [
    ("The answer is 1,234.", 1234),
    ("$18", 18),
    ("18.0", 18),
    ("She makes 9 * 2 = $18 every day.", 18),
    ("The answer is 5 + 3 = 8. Then she had 99 more.", 8),  # the answer's sentence, not the last number
    ("The final answer is: $1,234.50 in total", 1234.5),
    ("#### 72", 72),
    ("It drops to -4 degrees", -4),
    ("16-3-4=9", 9),  # a minus between numbers is not a sign
    ("The answer is below.\nIt is 7 eggs", 7),  # the phrase holds no number: the last one
    ("1,2,3", 3),
    ("no number here", None),
])
def test_final_number(reply, number):
    assert C.final_number(reply) == number


def test_same_number_tolerance():
    assert C.same_number(18.0000000001, 18) and C.same_number(1234.0, 1234)
    assert not C.same_number(18.01, 18) and not C.same_number(None, 18)


def test_items_are_the_first_test_questions_in_order(items):
    assert [it["id"] for it in items] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    assert [it["gold"] for it in items] == [18, 3, 70000]  # "#### 70000"; commas in a gold answer are read too
    assert items[0]["question"].startswith("Janet")


# ---- the two arms, scripted -----------------------------------------------------------------------------

def test_a_scripted_chain_with_two_calls_scores_correct(items):
    model = ScriptedModel([call("16 - 3 - 4"), call("9 * 2"), "She makes $18 every day. The answer is 18."])
    r = C.with_tools(C.agent_for(model), items[0])
    assert r["correct"] and r["finished"] and r["pred"] == 18
    assert r["tool_calls"] == 2 and r["tool_errors"] == 0 and r["steps"] == 3
    assert [m["content"] for m in r["transcript"] if m["role"] == "tool"] == ["9", "18"]  # the real calculator
    assert model.requests[0]["tools"][0]["name"] == "calculator"
    assert model.requests[0]["generation"]["temperature"] == 0.0


def test_a_wrong_number_or_no_answer_scores_wrong(items):
    wrong = C.with_tools(C.agent_for(ScriptedModel([call("16 - 3 - 4"), "The answer is 9."])), items[0])
    assert not wrong["correct"] and wrong["pred"] == 9 and wrong["finished"]
    endless = C.with_tools(C.agent_for(ScriptedModel(["18 " + call("9 * 2")]), max_steps=2), items[0])
    assert not endless["correct"] and not endless["finished"] and endless["tool_calls"] == 2


def test_run_chain_reports_both_arms(items):
    # the arm without tools asks first (one reply), then the agent (three replies)
    model = ScriptedModel(["I think it is 20.", call("16 - 3 - 4"), call("9 * 2"), "The answer is 18."])
    res = C.run_chain(model, GSM8K_TEST, limit=1, progress=False)
    s = res["summary"]
    assert s["n"] == 1 and s["with_tools"]["accuracy"] == 1.0 and s["without_tools"]["accuracy"] == 0.0
    assert s["with_tools"]["mean_tool_calls"] == 2.0 and s["with_tools"]["called"] == 1.0
    assert model.requests[0]["tools"] is None and model.requests[0]["messages"] == [
        {"role": "user", "content": items[0]["question"]}]
    assert res["results"][0]["without_tools"]["pred"] == 20
    table = C.format_table(s)
    assert "with calculator" in table and "100.0%" in table and "without tools" in table


# ---- remembered replies and --resume -----------------------------------------------------------------------

JANET = ["I think it is 20.", call("16 - 3 - 4"), call("9 * 2"), "The answer is 18."]
ROBE = ["It takes 3 bolts.", call("2 / 2"), call("2 + 1"), "The answer is 3."]


def test_resume_skips_remembered_items(tmp_path, items):
    path, who = tmp_path / "r.replies.jsonl", {"model": "scripted"}
    first = C.run_chain(CachedReplies(ScriptedModel(JANET), path, who), GSM8K_TEST, limit=1, progress=False)
    assert len(path.read_text().splitlines()) == 1 + 4  # the header and four replies
    # "interrupted" after the first question; the resumed run asks the model about the second one only
    model = ScriptedModel(ROBE)
    cached = CachedReplies(model, path, who, resume=True)
    again = C.run_chain(cached, GSM8K_TEST, limit=2, progress=False)
    assert cached.hits == 4 and cached.made == 4 and len(model.requests) == 4
    assert all("Janet" not in r["messages"][0]["content"] for r in model.requests)
    timeless = lambda r: {**r, "with_tools": {k: v for k, v in r["with_tools"].items() if k != "seconds"}}
    assert timeless(again["results"][0]) == timeless(first["results"][0])  # the same, without asking again
    assert [r["with_tools"]["correct"] for r in again["results"]] == [True, True]
    assert [r["without_tools"]["correct"] for r in again["results"]] == [False, True]
    # everything remembered: nothing is asked at all
    idle = ScriptedModel(["unused"])
    C.run_chain(CachedReplies(idle, path, who, resume=True), GSM8K_TEST, limit=2, progress=False)
    assert idle.requests == []


def test_remembered_replies_belong_to_one_model(tmp_path):
    path = tmp_path / "r.replies.jsonl"
    cached = CachedReplies(ScriptedModel(["a"]), path, {"model": "one"})
    assert not path.exists()  # begun at the first reply made, so a run that fails first leaves no file
    cached.chat([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="not of other"):
        CachedReplies(ScriptedModel(["b"]), path, {"model": "other"}, resume=True)
    with path.open("a") as f:
        f.write('{"key": "cut sh')  # an interrupted write
    again = CachedReplies(ScriptedModel(["b"]), path, {"model": "one"}, resume=True)
    assert again.chat([{"role": "user", "content": "hi"}]) == "a" and again.hits == 1
    fresh = CachedReplies(ScriptedModel(["c"]), path, {"model": "one"})  # no --resume: start afresh
    assert fresh.chat([{"role": "user", "content": "hi"}]) == "c"
    assert len(path.read_text().splitlines()) == 2


# ---- the command, on the tiny model --------------------------------------------------------------------------

def test_chain_command_on_the_tiny_model_and_resume(tiny_long, tmp_path, capsys):
    out = tmp_path / "eval-chain.json"
    args = ["chain", "--model", str(tiny_long), "--data", str(GSM8K_TEST), "--limit", "2", "--max-new-tokens", "3",
            "--max-steps", "2", "--batch", "2", "--out", str(out), "--quiet"]
    report = main(args)
    s = json.loads(out.read_text())["chain"]["summary"]
    assert s == report["chain"]["summary"] and s["n"] == 2 and set(s) == {"n", "with_tools", "without_tools"}
    assert "== chain" in capsys.readouterr().out
    made = len((tmp_path / "eval-chain.replies.jsonl").read_text().splitlines()) - 1
    again = main(args + ["--resume"])
    assert again["chain"]["remembered_replies"] == made
    plain = lambda rep: [r["without_tools"] for r in rep["chain"]["results"]]
    assert plain(again) == plain(report)


def test_command_usage_errors(capsys):
    for args, words in ((["chain", "--limit", "0"], "--limit must be at least 1"),
                        (["plot"], "plot needs --reports"),
                        (["plot", "--reports", "a.json", "b.json", "--names", "a"], "2 reports"),
                        (["chain", "--reports", "a.json"], "for the plot task"),
                        (["toolcall", "--first", "40"], "for the plot task"),
                        (["ifeval", "--lines"], "for the plot task"),
                        (["plot", "--reports", "a.json", "--first", "0"], "--first must be at least 1")):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2 and words in capsys.readouterr().err


# ---- the picture -----------------------------------------------------------------------------------------------

def report(simple, irrelevance, chain_tools=None):
    r = {"model": "runs/sft", "toolcall": {"summary": {
        "categories": {"simple_python": {"accuracy": simple, "n": 2}, "irrelevance": {"accuracy": irrelevance, "n": 2}},
        "overall": (simple + irrelevance) / 2, "format_compliance": 0.9}},
        "ifeval": {"summary": {"prompt_strict": 0.3}}}
    if chain_tools is not None:
        r["chain"] = {"summary": {"with_tools": {"accuracy": chain_tools}, "without_tools": {"accuracy": 0.02}}}
    return r


def test_measures_of_a_report():
    m = measures(report(0.6, 0.5, 0.1))
    assert m == pytest.approx({"simple_python": 60, "irrelevance": 50, "BFCL mean": 55, "format compliance": 90,
                               "IFEval prompt strict": 30, "chain, calculator": 10, "chain, no tools": 2})
    assert measures({"model": "x"}) == {}


def test_measures_of_the_first_items_of_each_category():
    rows = [{"category": c, "correct": ok, "format_ok": True, "reply": "<tool_call>[]</tool_call>"}
            for c, oks in (("simple_python", (1, 1, 0, 0)), ("irrelevance", (0, 1, 1, 1))) for ok in oks]
    run = {"toolcall": {"summary": {"categories": {}}, "results": rows}}
    assert measures(run, first=2) == pytest.approx({"simple_python": 100, "irrelevance": 50, "BFCL mean": 75,
                                                     "format compliance": 100})
    assert measures(run, first=4)["BFCL mean"] == pytest.approx(62.5)


def test_plot_writes_a_png(tmp_path):
    out = plot_reports([report(0.0, 1.0), report(0.6, 0.2, 0.1)], ["base", "SFT"], tmp_path / "docs" / "eval.png",
                       title="tiny")
    assert out.read_bytes()[:8] == PNG and [p.name for p in out.parent.iterdir()] == ["eval.png"]
    with pytest.raises(ValueError, match="no figure"):
        plot_reports([{"model": "x"}], ["x"], tmp_path / "none.png")
    rounds = plot_reports([report(0.0, 1.0), {"model": "y"}, report(0.6, 0.2, 0.1)], ["start", "one", "two"],
                          tmp_path / "rounds.png", lines=True)  # a round with no figures is a gap in each line
    assert rounds.read_bytes()[:8] == PNG


def test_plot_command(tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b-toolcall.json", tmp_path / "b-chain.json"
    a.write_text(json.dumps(report(0.0, 1.0)))
    full = report(0.6, 0.2, 0.1)
    b.write_text(json.dumps({k: v for k, v in full.items() if k != "chain"}))
    c.write_text(json.dumps({"model": "runs/sft", "chain": full["chain"]}))
    out = tmp_path / "eval.png"
    main(["plot", "--reports", str(a), f"{b},{c}", "--out", str(out)])  # one model's reports joined by commas
    assert out.read_bytes()[:8] == PNG and "wrote" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["plot", "--reports", str(tmp_path / "missing.json"), "--out", str(out)])
    assert "cannot read the report" in str(e.value.code)
