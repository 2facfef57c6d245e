"""Evaluation: each BFCL checker rule, real BFCL items through a scripted model, each IFEval instruction
type, perplexity, and one short real-model run of the command."""
import json
import math

import numpy as np
import pytest

from nanoagent.agent import ScriptedModel
from nanoagent.data import benchmarks as BD
from nanoagent.eval import bfcl as B
from nanoagent.eval import ifeval as I
from nanoagent.eval.ppl import nll_sum, run_ppl


@pytest.fixture(scope="session")
def bfcl_dir():
    """The BFCL data out of the bfcl-eval wheel (fetched with pip once, then cached)."""
    return BD.bfcl_data_dir()


FN = {"name": "calc.area", "parameters": {"type": "dict", "required": ["base", "height"], "properties": {
    "base": {"type": "integer"}, "height": {"type": "float"}, "unit": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string"}}, "exact": {"type": "boolean"},
    "opts": {"type": "dict", "properties": {"scale": {"type": "float"}, "mode": {"type": "string"}}}}}}
GT = {"calc.area": {"base": [10], "height": [5.0], "unit": ["cm", ""], "tags": [["Big Red", "b"], ""],
                    "exact": [True, ""], "opts": [{"scale": [2.0], "mode": ["fast", ""]}, ""]}}


def call(**arguments):
    return {"name": "calc.area", "arguments": arguments}


# ---- the checker, rule by rule ----------------------------------------------------------------------

def test_bfcl_string_normalisation():
    assert B.normalize_string("New York, NY") == B.normalize_string("new york ny") == "newyorkny"
    assert B.normalize_string("a-b_c/d.e*f^g") == "abcdefg" and B.normalize_string("it's") == 'it"s'


@pytest.mark.parametrize("c, ok", [
    (call(base=10, height=5.0), True),
    (call(base=10, height=5), True),  # an int is accepted for a float
    (call(base=10, height=5.0, unit="CM"), True),  # strings compare normalised
    (call(base=10.0, height=5.0), False),  # ... but a float is not an int
    (call(base="10", height=5.0), False),  # a string is not a number
    (call(base=10, height=True), False),  # a bool is not a number
    (call(base=10), False),  # a required parameter is missing
    (call(base=10, height=5.0, colour="red"), False),  # an unknown parameter
    (call(base=11, height=5.0), False),  # a wrong value
    (call(base=10, height=5.0, tags=["big red", "B"]), True),  # list items normalised, in order
    (call(base=10, height=5.0, tags=["b", "big red"]), False),  # list order matters
    (call(base=10, height=5.0, tags=["big red", 1]), False),  # list item types are checked
    (call(base=10, height=5.0, exact=True), True),
    (call(base=10, height=5.0, exact=1), False),
    (call(base=10, height=5.0, opts={"scale": 2}), True),  # dicts: recursive, optional keys may be left out
    (call(base=10, height=5.0, opts={"scale": 2.0, "mode": "Fast"}), True),
    (call(base=10, height=5.0, opts={"scale": 3.0}), False),
    (call(base=10, height=5.0, opts={"scale": 2.0, "other": 1}), False),
    (call(base=10, height=5.0, opts={"mode": "fast"}), False),  # a dict key the answer needs is missing
    ({"name": "calc_area", "arguments": {"base": 10, "height": 5.0}}, False),  # the exact function name
])
def test_check_call_rules(c, ok):
    assert (B.check_call(c, FN, GT) is None) == ok


def test_optional_parameter_may_be_left_out_only_when_empty_string_is_allowed():
    gt = {"calc.area": {"base": [10], "height": [5.0], "unit": ["cm"]}}
    assert "left out" in B.check_call(call(base=10, height=5.0), FN, gt)
    assert B.check_call(call(base=10, height=5.0, unit="cm"), FN, gt) is None


def test_parallel_calls_match_in_any_order_and_count_must_match():
    item = {"category": "parallel", "functions": [FN], "ground_truth": [
        {"calc.area": {"base": [1], "height": [1.0]}}, {"calc.area": {"base": [2], "height": [2.0]}}]}
    a, b = call(base=1, height=1.0), call(base=2, height=2.0)
    assert B.check_item(item, [a, b])[0] and B.check_item(item, [b, a])[0]
    assert not B.check_item(item, [a, a])[0]  # each expected call needs its own produced call
    assert not B.check_item(item, [a])[0] and not B.check_item(item, [a, b, b])[0]
    assert B.check_item(item, [])[1] == "no call"


def test_irrelevance_means_no_call():
    item = {"category": "irrelevance", "functions": [FN], "ground_truth": None}
    assert B.check_item(item, [])[0] and not B.check_item(item, [call(base=1, height=1.0)])[0]


def test_bfcl_types_become_json_schema():
    out = B.bfcl_tools([FN | {"description": "d"}])[0]
    p = out["parameters"]
    assert p["type"] == "object" and p["properties"]["height"]["type"] == "number"
    assert p["properties"]["opts"]["type"] == "object" and p["properties"]["opts"]["properties"]["scale"]["type"] == "number"
    assert B.to_json_schema({"type": "tuple", "items": {"type": "float"}}) == {"type": "array", "items": {"type": "number"}}
    assert B.to_json_schema({"type": "any", "description": "x"}) == {"description": "x"}


# ---- real BFCL items through a scripted model ----------------------------------------------------------

def answer_from(ground_truth):
    """A correct reply: for each expected call, the first allowed value of each parameter ("" = leave out)."""
    calls = [{"name": name, "arguments": {p: v[0] for p, v in params.items() if v[0] != ""}}
             for gt in ground_truth for name, params in gt.items()]
    return "<tool_call>" + json.dumps(calls) + "</tool_call>"


def test_real_items_scored_with_a_scripted_model(bfcl_dir):
    items = {c: BD.load_category(bfcl_dir, c) for c in BD.CATEGORIES}
    assert [len(items[c]) for c in BD.CATEGORIES] == [400, 200, 200, 200, 240]
    for c in BD.CATEGORIES[:-1]:
        for it in items[c][:5]:
            r = B.evaluate_item(ScriptedModel([answer_from(it["ground_truth"])]), it)
            assert r["correct"] and r["format_ok"], (it["id"], r["reason"])
    # parallel: the same calls in reverse order still match
    it = items["parallel"][0]
    calls = json.loads(answer_from(it["ground_truth"])[len("<tool_call>"):-len("</tool_call>")])
    assert B.evaluate_item(ScriptedModel(["<tool_call>" + json.dumps(calls[::-1]) + "</tool_call>"]), it)["correct"]
    # a changed value, and prose, are wrong; prose is right for irrelevance
    it = items["simple_python"][0]
    bad = answer_from(it["ground_truth"]).replace("10", "11")
    assert not B.evaluate_item(ScriptedModel([bad]), it)["correct"]
    prose = B.evaluate_item(ScriptedModel(["The area is 25."]), it)
    assert not prose["correct"] and not prose["format_ok"]
    assert B.evaluate_item(ScriptedModel(["I cannot help with that."]), items["irrelevance"][0])["correct"]
    broken = B.evaluate_item(ScriptedModel(['<tool_call>[{"name": 5}]</tool_call>']), it)
    assert not broken["correct"] and not broken["format_ok"]


def test_run_toolcall_summary_and_prompt(bfcl_dir):
    model = ScriptedModel(["No tool needed."])
    res = B.run_toolcall(model, limit=2, bfcl_dir=bfcl_dir, progress=False)
    s = res["summary"]
    assert s["n"] == 10 and s["categories"]["irrelevance"]["accuracy"] == 1.0
    assert s["categories"]["simple_python"]["accuracy"] == 0.0 and math.isclose(s["overall"], 0.2)
    assert s["format_compliance"] == 0.0
    tools = model.requests[0]["tools"]
    assert tools[0]["name"] == "calculate_triangle_area" and tools[0]["parameters"]["type"] == "object"
    table = B.format_table(s)
    assert "overall" in table and "format compliance" in table


def test_bfcl_dir_errors(tmp_path):
    with pytest.raises(BD.BFCLDataError, match="holds no BFCL data"):
        BD.bfcl_data_dir(tmp_path)
    with pytest.raises(BD.BFCLDataError):
        (tmp_path / "x.whl").write_bytes(b"not a zip")
        BD.extract_bfcl_data(tmp_path / "x.whl", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- IFEval, one instruction type at a time ---------------------------------------------------------------

PASS_FAIL = [  # (instruction, kwargs, a reply that follows it, a reply that does not)
    ("keywords:existence", {"keywords": ["apple", "pie"]}, "Apple pie is great.", "Apple tart."),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "cat Cat", "one cat"),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "one cat", "cat cat"),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "A badge is fine.", "That is Bad."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"}, "Zz", "z"),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "Dr. Smith came. He left.", "One. Two. Three."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\nSecond.", "First.\n***\n\n***\nx"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, "one two three four five", "one two"),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First part.\n\nThen, more.", "First part.\n\nAnd more."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name] at [address]", "Dear [name]"),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\nP.S. bye", "Hi. PS bye"),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.P.S more", "Hi.\nP.S. more"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b", "* a\n* b\n- c"),
    ("detectable_format:constrained_response", {}, "My answer is yes.", "Yes."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", "*one* and ** **"),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nfoo\nSection 2\nbar", "Section 1\nfoo"),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{a: 1}"),
    ("detectable_format:title", {}, "<<My Title>>\ntext", "My Title\ntext"),
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", "Same.\n******\nSame."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "Say hi. Hi!", "Hi! Say hi."),
    ("startend:end_checker", {"end_phrase": "Any questions?"}, "Done. Any questions?", "Any questions? Done."),
    ("startend:quotation", {}, '"All quoted."', 'Not "quoted".'),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "ONE capital word", "TWO CAPITAL words"),
    ("change_case:english_capital", {}, "THIS IS ALL CAPITALS IN ENGLISH.", "This is not."),
    ("change_case:english_lowercase", {}, "this is all lowercase english text.", "This is not."),
    ("punctuation:no_comma", {}, "No commas here.", "Yes, one."),
]


@pytest.mark.parametrize("iid, kwargs, good, bad", PASS_FAIL, ids=[p[0] for p in PASS_FAIL])
def test_ifeval_checkers(iid, kwargs, good, bad):
    assert I.check_instruction(iid, good, kwargs) is True
    assert I.check_instruction(iid, bad, kwargs) is False


def test_every_ifeval_type_in_the_data_has_a_checker(data_dir):
    items = BD.ifeval_items(data_dir / "ifeval" / "input_data.jsonl")
    assert len(items) == 52  # the sample (tests/fixtures/data): IFEval's first 50 prompts and two more
    assert {i for it in items for i in it["instruction_id_list"]} == set(I.CHECKERS)  # all 25 types, each checked
    assert {p[0] for p in PASS_FAIL} == set(I.CHECKERS) - {"language:response_language"}


def test_language_is_checked_with_langdetect_or_reported_unchecked(monkeypatch):
    kw = {"language": "de"}
    if I.detect_language("hello") is not None:
        assert I.check_instruction("language:response_language", "Das ist ein deutscher Satz über das Wetter.", kw)
        assert not I.check_instruction("language:response_language", "This is an English sentence about weather.", kw)
    monkeypatch.setattr(I, "detect_language", lambda text: None)
    assert I.check_instruction("language:response_language", "Das ist gut.", kw) is I.UNCHECKED
    res = [I.check_prompt({"key": 1, "instruction_id_list": ["language:response_language", "punctuation:no_comma"],
                           "kwargs": [kw, {}]}, "Kein Komma hier.")]
    s = I.summarize(res)
    assert s["n_unchecked"] == 1 and s["unchecked_types"] == ["language:response_language"]
    assert s["instruction_strict"] == 1.0 and s["n_prompts_scored"] == 0
    assert "not checkable here" in I.format_table(s)


def test_loose_removes_first_and_last_lines_and_asterisks():
    reply = "Sure! Here it is:\n**no comma here**\nLet me know if you need more, ok?"
    assert I.check_instruction("punctuation:no_comma", reply, {}) is False
    assert I.check_instruction("punctuation:no_comma", reply, {}, loose=True) is True
    assert I.check_instruction("startend:quotation", '*"quoted"*', {}, loose=True) is True
    res = I.check_prompt({"key": 1, "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
                          "kwargs": [{}, {}]}, reply)
    s = I.summarize([res])
    assert s["prompt_strict"] == 0.0 and s["instruction_loose"] == 0.5


def test_run_ifeval_with_a_scripted_model(data_dir):
    res = I.run_ifeval(ScriptedModel(["hello there, friend"]), data_dir / "ifeval" / "input_data.jsonl", limit=3,
                       progress=False)
    assert res["summary"]["n_prompts"] == 3 and len(res["results"]) == 3


# ---- perplexity and the command -----------------------------------------------------------------------------

def test_nll_matches_a_direct_log_softmax(tiny_model):
    ids = np.array([1, 5, 9, 3, 7, 2])
    total, n = nll_sum(tiny_model, ids)
    z = tiny_model.logits(ids[:-1]).astype(np.float64)
    ref = -sum(z[t, ids[t + 1]] - np.log(np.exp(z[t]).sum()) for t in range(5))
    assert n == 5 and abs(total - ref) < 1e-6 * abs(ref)
    masked, m = nll_sum(tiny_model, ids, mask=np.array([0, 0, 1, 1, 0, 1], bool))
    assert m == 3 and masked < total


def test_real_model_eval_command_smoke(real_model, data_dir, bfcl_dir, tmp_path, monkeypatch, capsys):
    import nanoagent
    from nanoagent.eval.__main__ import main
    monkeypatch.setattr(nanoagent, "load", lambda path=None: real_model)
    out = tmp_path / "e.json"
    report = main(["all", "--limit", "2", "--categories", "simple_python,irrelevance", "--max-new-tokens", "12",
                   "--bfcl-dir", str(bfcl_dir), "--ifeval-data", str(data_dir / "ifeval" / "input_data.jsonl"),
                   "--out", str(out), "--quiet"])
    saved = json.loads(out.read_text())
    assert saved["toolcall"]["summary"]["n"] == 4 and saved["ifeval"]["summary"]["n_prompts"] == 2
    assert report["toolcall"]["summary"]["categories"].keys() == {"simple_python", "irrelevance"}
    printed = capsys.readouterr().out
    assert "== toolcall" in printed and "== ifeval" in printed
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 4)
    ppl = run_ppl(real_model, str(text), seq_len=32, progress=False)["summary"]
    assert ppl["tokens"] > 30 and 1 < ppl["perplexity"] < 1000


def test_batched_evaluation_gives_the_one_by_one_results(real_model, bfcl_dir):
    cats = ("simple_python", "parallel", "irrelevance")
    one = B.run_toolcall(real_model, cats, limit=2, bfcl_dir=bfcl_dir, max_new_tokens=24, progress=False, batch=1)
    many = B.run_toolcall(real_model, cats, limit=2, bfcl_dir=bfcl_dir, max_new_tokens=24, progress=False, batch=4)
    assert [r["reply"] for r in many["results"]] == [r["reply"] for r in one["results"]]
    assert many["summary"] == one["summary"]
