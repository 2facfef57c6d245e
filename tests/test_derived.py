"""Derived training examples (data/derived.py) and the agent recipe, on the sample data under tests/fixtures/data."""
import json
import re
import zoneinfo

import numpy as np
import pytest

from nanoagent.agent.builtin import BUILTIN_TOOLS
from nanoagent.agent.calculator import calculator
from nanoagent.agent.schema import validate_arguments
from nanoagent.data import chains as C
from nanoagent.data import derived as D
from nanoagent.data import families as F
from nanoagent.data import own_tools as O
from nanoagent.data.benchmarks import bfcl_data_dir, bfcl_prompts, eval_prompts
from nanoagent.data.clean import normalize_text
from nanoagent.data.io import read_rows
from nanoagent.data.mix import AGENT, CALL_INPUTS, RECIPES, Options, build, stats_table
from nanoagent.data.toolsets import read_toolset, tool_specs
from nanoagent.toolcalls import parse_reply
from nanoagent.tokenizer import render_chat


@pytest.fixture(scope="module")
def inputs(data_dir):
    glaive = read_rows(str(data_dir / "glaive" / "glaive_toolcall_en_demo.json"))
    gsm8k = read_rows(str(data_dir / "gsm8k" / "train.jsonl"))
    calls = [c for name in CALL_INPUTS for c in read_toolset(name, data_dir, np.random.default_rng(0)) if isinstance(c, dict)]
    return D.Inputs.make(glaive, gsm8k, specs=tool_specs(data_dir), call_chats=calls)


@pytest.fixture(scope="module")
def made(inputs):
    """family -> its rows (Drops left out), 200 asked of each."""
    return {f: [r for r in F.derive(f, inputs, 200) if isinstance(r, dict)] for f in F.FAMILIES}


def calls_of(row):
    return [m["tool_calls"] for m in row["messages"] if m.get("tool_calls")]


def asks(row, e):
    """Whether a joined request asks for an episode's own request (its first letter may be lowered)."""
    return e.request in row["messages"][0]["content"] or e.request[1:] in row["messages"][0]["content"]


def tool_names(row):
    return {t["name"] for t in row.get("tools") or []}


# ---- the project's tools, copied into data (which may not import agent) -------------------------------------

def test_copied_schemas_equal_the_real_tools():
    assert O.CALCULATOR == BUILTIN_TOOLS["calculator"].schema
    assert O.GET_CURRENT_TIME == BUILTIN_TOOLS["get_current_time"].schema
    assert O.WEB_SEARCH == BUILTIN_TOOLS["web_search"].schema
    assert O.VISIT_WEBPAGE == BUILTIN_TOOLS["visit_webpage"].schema


@pytest.mark.parametrize("expr", ["48/2", "12/60", "0.2*50", "3750*.2", "1/3*600", "2**10", "7//2", "10%3", "-4+2"])
def test_arithmetic_and_format_equal_the_calculator(expr):
    assert C.format_number(C.arithmetic(expr)) == calculator(expr)


# ---- every family -------------------------------------------------------------------------------------------

def test_every_family_makes_rows_in_the_common_form(made):
    for family, rows in made.items():
        assert rows, family
        for r in rows:
            assert r["source"] == family and r["messages"][0]["role"] == "user"
            last = r["messages"][-1]
            if family.startswith("parallel-values") or family == "parallel-mixed-specs":  # ends at its calls: no
                # result is known for a made-up value, nor held by the sets
                assert last["role"] == "assistant" and len(last["tool_calls"]) >= 2 and len(r["messages"]) == 2
            elif family.startswith("several-args") and len(r["messages"]) == 2:  # made-up values: ends at its call
                assert last["role"] == "assistant" and len(last["tool_calls"]) == 1
            else:
                assert last["role"] == "assistant" and not last.get("tool_calls") and last["content"].strip()
            for m in r["messages"]:  # every learned call names an offered tool (recovery's wrong calls are not learned)
                assert m.get("weight", 1) == 0 or all(c["name"] in tool_names(r) for c in m.get("tool_calls") or [])
            text = render_chat(r["messages"], r.get("tools"), add_generation_prompt=False)
            text = text.split("<|im_end|>", 1)[1]  # after the tools prompt, which shows the format
            assert text.count("<tool_call>") == len(calls_of(r))
            assert text.count("<tool_result>") == sum(m["role"] == "tool" for m in r["messages"])


def test_families_are_deterministic_for_a_seed(inputs):
    for family in F.FAMILIES:
        first = [r if isinstance(r, dict) else r.reason for r in F.derive(family, inputs, 30, seed=3)]
        assert first == [r if isinstance(r, dict) else r.reason for r in F.derive(family, inputs, 30, seed=3)]
    assert list(F.derive("parallel-mixed", inputs, 30, seed=3)) != list(F.derive("parallel-mixed", inputs, 30, seed=4))


def test_build_of_the_agent_recipe_is_deterministic(data_dir):
    a, _ = build(AGENT, data_dir, None, Options(seed=5))
    b, _ = build(AGENT, data_dir, None, Options(seed=5))
    assert a == b


# ---- parallel calls -----------------------------------------------------------------------------------------

def test_parallel_rows_are_one_list_of_calls_then_results_in_call_order(made, inputs):
    results = {(e.call["name"], json.dumps(e.call["arguments"], sort_keys=True)): e for e in inputs.episodes()}
    for family in ("parallel-same", "parallel-mixed"):
        for r in made[family]:
            (calls,) = calls_of(r)  # one assistant message holds every call
            assert 2 <= len(calls) <= 4
            names = [c["name"] for c in calls]
            assert len(set(names)) == 1 if family == "parallel-same" else len(set(names)) >= 2
            if family == "parallel-same":
                assert len({json.dumps(c["arguments"], sort_keys=True) for c in calls}) == len(calls)
            eps = [results[(c["name"], json.dumps(c["arguments"], sort_keys=True))] for c in calls]
            tool_turns = [m["content"] for m in r["messages"] if m["role"] == "tool"]
            assert tool_turns == [e.result for e in eps]  # in call order
            final = r["messages"][-1]["content"]
            for e in eps:  # the answer uses each result: each original answer is in it (its closing question aside)
                assert re.sub(r"\s*[^.!?]*\?\s*$", "", e.answer).strip()[:40] in final
            for e in eps:  # the joined request asks for each call
                assert asks(r, e)
    assert any(len(tool_names(r)) > len({c["name"] for c in calls_of(r)[0]}) for r in made["parallel-mixed"])
    assert len({r["messages"][0]["content"].split(" ")[0] for r in made["parallel-mixed"]}) > 3  # varied wording


def test_parallel_mixed_specs_ask_each_sets_call_and_end_at_the_calls(made, inputs):
    originals = {(e.call["name"], json.dumps(e.call["arguments"], sort_keys=True)): e for e in inputs.calls}
    rows = made["parallel-mixed-specs"]
    assert len(rows) >= 10
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]  # the sets hold no results
        (calls,) = calls_of(r)
        assert 2 <= len(calls) <= 4 and len({c["name"] for c in calls}) >= 2
        for c in calls:  # each a real call of the sets, its request asked and its tool offered
            e = originals[(c["name"], json.dumps(c["arguments"], sort_keys=True))]
            assert asks(r, e)
            assert e.tool in r["tools"]
    assert any(len(tool_names(r)) > len({c["name"] for c in calls_of(r)[0]}) for r in rows)  # more tools than called


def episodes_of(family, inputs):
    """The single calls a family's rows are made from: glaive's, or the tool-calling sets' (*-specs)."""
    return inputs.calls if family.endswith("-specs") else inputs.episodes()


@pytest.mark.parametrize("family", ["parallel-values", "parallel-values-specs"])
def test_parallel_values_name_every_value_of_one_argument_in_the_request(family, made, inputs):
    originals = {(e.call["name"], json.dumps(e.call["arguments"], sort_keys=True)): e
                 for e in episodes_of(family, inputs)}
    assert len(made[family]) >= 5
    for r in made[family]:
        (calls,) = calls_of(r)
        assert 2 <= len(calls) <= 4 and len({c["name"] for c in calls}) == 1
        first = originals[(calls[0]["name"], json.dumps(calls[0]["arguments"], sort_keys=True))]  # a real call
        varied = {k for c in calls for k, v in c["arguments"].items() if v != first.call["arguments"][k]}
        assert len(varied) == 1 and set(calls[0]["arguments"]) == set(calls[-1]["arguments"])
        (key,) = varied
        request = r["messages"][0]["content"]
        values = [str(c["arguments"][key]) for c in calls]
        assert len(set(values)) == len(values)
        for v in values:  # every value is asked for
            assert re.search(rf"(?<![\d.]){re.escape(v.lower())}(?![\d]|\.\d)", request.lower()), (v, request)
        span = D._value_span(first.request, first.call["arguments"][key], words=family.endswith("-specs"))
        assert request.startswith(first.request[:first.request.index(span)])  # the request, worded around the values


@pytest.mark.parametrize("family", ["several-args", "several-args-specs"])
def test_several_args_name_each_argument_beside_its_value_in_one_call(family, made, inputs):
    originals = {(e.call["name"], json.dumps(e.call["arguments"], sort_keys=True)): e
                 for e in episodes_of(family, inputs)}
    rows = made[family]
    assert len(rows) >= 20
    for r in rows:
        (calls,) = calls_of(r)
        (call,) = calls  # one call, however many numbers
        args = call["arguments"]
        assert sum(isinstance(v, (int, float)) and not isinstance(v, bool) for v in args.values()) >= 2
        request = r["messages"][0]["content"]
        for k, v in args.items():  # each argument named, its value right after the name
            value = f"{v:g}" if isinstance(v, float) else str(v)
            assert re.search(rf"(?:{re.escape(k)}|{re.escape(k.replace('_', ' '))})(?: =| of)? {re.escape(value)}\b",
                             request), (k, v, request)
        original = originals.get((call["name"], json.dumps(args, sort_keys=True)))
        if len(r["messages"]) == 4:  # its own values: the glaive result and answer follow
            assert original is not None and r["messages"][2]["content"] == original.result
        assert not re.match(r"(Can you|Please|I need to) [A-Z][a-z]", request)  # "Can you calculate", not "Calculates"
    lengths = {len(r["messages"]) for r in rows}
    assert lengths == ({2} if family.endswith("-specs") else {2, 4})  # the sets hold no result to go on to


def test_a_tools_description_reads_as_a_task():
    assert D.imperative("Calculates the area of a circle") == "Calculate the area of a circle"
    assert D.imperative("Fetches news") == "Fetch news" and D.imperative("Searches") == "Search"
    assert D.imperative("Get the weather") == "Get the weather"
    assert D.imperative("Analysis of a text") == "Analysis of a text" and D.imperative("Status check") == "Status check"


def test_the_sets_single_calls_are_requests_that_name_their_values(inputs):
    assert len(inputs.calls) >= 20
    for e in inputs.calls:
        assert e.tool["name"] == e.call["name"] and D.self_contained(e.request, e.call["arguments"])
        assert not e.result and not e.answer
    assert D._value_span("Gas prices in California and CA", "CA", words=True) == "CA"
    assert D._value_span("Gas prices in California", "CA", words=True) is None


def test_a_value_is_found_once_with_its_unit_and_written_alike():
    assert D._value_span("My bill is $100 and I tip 15%.", 100) == "$100"
    assert D._value_span("My bill is $100 and I tip 15%.", 15) == "15%"
    assert D._written("$100", 50) == "$50" and D._written("15%", 20) == "20%"
    assert D._value_span("Play 'Queen' now", "Queen") == "'Queen'" and D._written("'Queen'", "Muse") == "'Muse'"
    assert D._value_span("From 5 to 5 km", 5) is None  # written twice: which one is meant is unclear
    assert D._value_span("It costs 1.5 or 15", 1) is None and D._value_span("It costs 1.5", 1.5) == "1.5"


def test_parallel_calc_results_are_the_calculators(made):
    for r in made["parallel-calc"]:
        (calls,) = calls_of(r)
        assert len(calls) >= 2 and {c["name"] for c in calls} == {"calculator"}
        results = [m["content"] for m in r["messages"] if m["role"] == "tool"]
        assert results == [calculator(c["arguments"]["expression"]) for c in calls]
        assert all(res in r["messages"][-1]["content"] for res in results)


def test_the_parallel_reply_renders_as_one_tool_call_list(made):
    r = made["parallel-same"][0]
    text = render_chat(r["messages"], r["tools"], add_generation_prompt=False)
    reply = text.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    parsed = parse_reply(reply)
    assert not parsed.errors and parsed.calls == calls_of(r)[0]
    assert text.split("<|im_start|>user\n")[2].startswith("<tool_result>")  # results in one user turn


# ---- no call when no tool fits ------------------------------------------------------------------------------

def test_nocall_rows_answer_directly_with_tools_that_do_not_fit(made, inputs):
    answers = {normalize_text(r["question"]): r["answer"] for r in inputs.gsm8k}
    for r in made["nocall-math"] + made["nocall-chat"]:
        assert not calls_of(r) and [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert 1 <= len(r["tools"]) <= 4
    for r in made["nocall-math"]:
        question, reply = r["messages"][0]["content"], r["messages"][1]["content"]
        assert reply.endswith(f"The answer is {answers[normalize_text(question)].rsplit('####', 1)[1].strip()}.")
        assert "calculator" not in tool_names(r)  # never "don't call for math" when a calculator is there
        assert not any(D.ARITHMETIC.search(t["name"] + " " + t["description"]) for t in r["tools"])
    for r in made["nocall-chat"]:
        question = r["messages"][0]["content"]
        own = [c for c in inputs.chats if c["messages"][0]["content"] == question and c.get("tools")]
        if not own:  # a tool-less question: no offered tool shares a content word with it
            assert all(not D.content_words(t["name"] + " " + t["description"]) & D.content_words(question)
                       for t in r["tools"])


def test_decline_rows_refuse_a_glaive_request_when_only_unrelated_tools_are_offered(made, inputs):
    episodes = {e.request: e for e in inputs.episodes()}
    assert made["decline"]
    for r in made["decline"]:
        assert not calls_of(r) and [m["role"] for m in r["messages"]] == ["user", "assistant"]
        request, reply = r["messages"][0]["content"], r["messages"][1]["content"]
        e = episodes[request]  # a request glaive answers with a call
        assert 1 <= len(r["tools"]) <= 3 and e.call["name"] not in tool_names(r)
        for t in r["tools"]:
            assert not D._fits(e.call["arguments"], t)
            assert not D.content_words(t["name"] + " " + t["description"]) & D.content_words(request)
            assert D._capability(t) in reply  # the refusal says what the offered tools do
        assert "<tool_call>" not in reply


def test_near_miss_rows_offer_computing_tools_that_do_not_fit_and_call_none(made, inputs):
    answers = {normalize_text(r["question"]): r["answer"] for r in inputs.gsm8k}
    episodes = {e.request: e for e in inputs.episodes()}
    kinds = set()
    for r in made["near-miss"]:
        assert not calls_of(r) and [m["role"] for m in r["messages"]] == ["user", "assistant"]
        question, reply = r["messages"][0]["content"], r["messages"][1]["content"]
        assert 1 <= len(r["tools"]) <= 2
        for t in r["tools"]:
            text = t["name"] + " " + t["description"]
            assert D.ARITHMETIC.search(text) and not D.GENERAL.search(text)  # computes, but no general calculator
            assert not D.content_words(text) & D.content_words(question)
        if normalize_text(question) in answers:
            kinds.add("gsm8k")
            assert reply.endswith(f"The answer is {answers[normalize_text(question)].rsplit('####', 1)[1].strip()}.")
        else:
            kinds.add("glaive")
            e = episodes[question]
            assert all(t["name"] != e.call["name"] and not D._fits(e.call["arguments"], t) for t in r["tools"])
            assert all(D._capability(t) in reply for t in r["tools"])
    assert kinds == {"gsm8k", "glaive"}


def test_ask_missing_offers_the_fitting_tool_and_asks(made, inputs):
    for r in made["ask-missing"]:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] and not calls_of(r)
        assert r["messages"][1]["content"].rstrip().endswith("?")
        full = next(c for c in inputs.chats if c["messages"][:2] == r["messages"])
        assert full["messages"][3]["tool_calls"][0]["name"] in tool_names(r)  # the tool it will call is offered


# ---- calculator chains --------------------------------------------------------------------------------------

def test_chain_results_are_the_calculators_and_end_at_the_answer(made, inputs):
    answers = {normalize_text(r["question"]): r["answer"].rsplit("####", 1)[1].strip() for r in inputs.gsm8k}
    rows = made["calc-chain"]
    assert len(rows) > 20
    for r in rows:
        assert "calculator" in tool_names(r)
        ms, results = r["messages"], []
        for i, m in enumerate(ms):
            if m.get("tool_calls"):
                outs = [x["content"] for x in ms[i + 1:i + 1 + len(m["tool_calls"])]]
                assert [x["role"] for x in ms[i + 1:i + 1 + len(m["tool_calls"])]] == ["tool"] * len(outs)
                assert outs == [calculator(c["arguments"]["expression"]) for c in m["tool_calls"]]
                results += outs
        final = answers[normalize_text(ms[0]["content"])]
        assert float(results[-1]) == float(final.replace(",", ""))
        assert ms[-1]["content"] == f"The answer is {final}."
    assert any(len(cs) > 1 for r in rows for cs in calls_of(r))  # independent steps go in one call list
    assert any(len(calls_of(r)) > 1 for r in rows)  # and dependent ones in later rounds


def test_a_step_that_disagrees_with_gsm8k_is_dropped():
    with pytest.raises(D.Drop) as e:
        C.chain_steps({"question": "q", "answer": "He has 10/3 = <<10/3=3.33>>3.33.\n#### 3.33"})
    assert e.value.reason == "step disagrees"
    with pytest.raises(D.Drop) as e:
        C.chain_steps({"question": "q", "answer": "She has 2+2 = <<2+2=4>>4.\n#### 5"})
    assert e.value.reason == "last step is not the answer"
    assert C.rounds("A has 4 and B has 6.", [("4*2", "8"), ("6*2", "12"), ("8+12", "20")]) == [
        [("4*2", "8"), ("6*2", "12")], [("8+12", "20")]]


# ---- the project's own tools --------------------------------------------------------------------------------

def test_own_tool_calls_are_right(made):
    for r in made["own-tools"]:
        schemas = {t["name"]: t for t in r["tools"]}
        for calls in calls_of(r):
            for c in calls:
                assert c["name"] in ("get_current_time", "web_search", "visit_webpage")
                _, errors = validate_arguments(c["arguments"], schemas[c["name"]]["parameters"])
                assert errors == []
                if c["name"] == "get_current_time":
                    zoneinfo.ZoneInfo(c["arguments"]["timezone"])
        for i, m in enumerate(r["messages"]):
            if m.get("tool_calls") and m["tool_calls"][0]["name"] == "get_current_time":
                zones = [c["arguments"]["timezone"] for c in m["tool_calls"]]
                outs = [x["content"] for x in r["messages"][i + 1:i + 1 + len(zones)]]
                assert all(o.endswith(f", {z})") for o, z in zip(outs, zones))  # the tool's own output format
    assert any(len(cs) > 1 for r in made["own-tools"] for cs in calls_of(r))  # several cities in one call list
    assert any(len(calls_of(r)) == 2 for r in made["own-tools"])  # a search, then a visit


def test_the_specs_families_offer_the_tool_calling_sets_tools(inputs, data_dir):
    names = {t["name"] for t in tool_specs(data_dir)}
    assert {t["name"] for t in inputs.specs} == names
    for family in ("decline-specs", "near-miss-specs"):  # (parallel-values-specs, several-args-specs: above)
        rows = [r for r in F.derive(family, inputs, 40) if isinstance(r, dict)]
        assert rows and all(not calls_of(r) and tool_names(r) <= names for r in rows), family
        assert all(r["source"] == family for r in rows)
    glaive_tools = {t["name"] for t in inputs.tool_pool()}
    assert not names & glaive_tools  # so the rows above could only come from the specs


# ---- the agent recipe: stats, decontamination ---------------------------------------------------------------

@pytest.fixture(scope="module")
def bfcl_dir():
    return bfcl_data_dir()


def test_agent_recipe_builds_and_counts_every_family(data_dir):
    rows, stats = build(RECIPES["agent"], data_dir, None, Options())
    assert set(stats) == {s.name for s in AGENT}
    assert set(F.FAMILIES) <= {s.name for recipe in RECIPES.values() for s in recipe}  # every family is used
    for name, s in stats.items():
        assert s.read == s.kept + sum(s.dropped.values()) and s.tokens > 0, name
    assert stats["glaive"].dropped.get("no call", 0) > 0  # the recipe keeps glaive's calls only
    table = stats_table(stats)
    assert all(f in table for f in stats)


def test_the_near_miss_stage_replays_calls_beside_the_refusals(data_dir):
    rows, stats = build(RECIPES["near-miss-stage"], data_dir, None, Options())
    assert stats["near-miss"].kept > 0 and stats["glaive"].kept > 0
    assert all(bool(calls_of(r)) == (r["source"] != "near-miss") for r in rows)


@pytest.mark.parametrize("recipe", ["agent", "agent-large", "agent-specs", "agent-glaive", "agent-parallel", "near-miss-stage",
                                    "parallel-stage", "contrast-stage", "real-stage", "tools-stage",
                                    "agent-real-only", "agent-own-only"])
def test_the_agent_mixes_share_no_prompt_with_the_evaluations(recipe, data_dir, bfcl_dir, inputs):
    episode = inputs.episodes()[0].request  # a request glaive holds: treated as an eval prompt, it must vanish
    blocked = eval_prompts(data_dir, bfcl_dir) | {normalize_text(episode)}
    rows, _ = build(RECIPES[recipe], data_dir, None, Options(), blocked)
    prompts = [normalize_text(m["content"]) for r in rows for m in r["messages"] if m["role"] == "user"]
    ifeval = {normalize_text(r["prompt"]) for r in read_rows(str(data_dir / "ifeval" / "input_data.jsonl"))}
    bfcl = {normalize_text(p) for p in bfcl_prompts(bfcl_dir)}
    test = {normalize_text(r["question"]) for r in read_rows(str(data_dir / "gsm8k" / "test.jsonl"))}
    assert ifeval <= blocked and bfcl <= blocked
    assert not set(prompts) & (ifeval | bfcl | test)
    joined = "\n".join(prompts)  # nor inside a joined request
    assert normalize_text(episode) not in joined
    assert not [p for p in ifeval | test if p in joined]
