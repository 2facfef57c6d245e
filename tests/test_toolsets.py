"""The public tool-calling sets (data/toolsets.py), on their samples under tests/fixtures/data/toolcalls."""
import json
from collections import Counter

import numpy as np
import pytest

from nanoagent.data import common as C
from nanoagent.data.common import Drop
from nanoagent.data.io import DataError
from nanoagent.data.mix import KINDS, RECIPES, Options, build, kinds_table, row_kind
from nanoagent.data.toolsets import REF, TOOLSETS, lookup, path_of, prune, read_json, read_toolset, resolve
from nanoagent.tokenizer import render_chat
from nanoagent.toolcalls import parse_reply


def read(name, data_dir, seed=0):
    return read_toolset(name, data_dir, np.random.default_rng(seed))


def comparable(rows):
    return [r.reason if isinstance(r, Drop) else r for r in rows]


def chats(name, data_dir):
    return [r for r in read(name, data_dir) if not isinstance(r, Drop)]


def calls(chat):
    return [c for m in chat["messages"] for c in m.get("tool_calls") or []]


def raw(data_dir, path):
    return read_json(data_dir / "toolcalls" / path)


# ---- every set ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TOOLSETS)
def test_every_set_reads_into_the_common_form(name, data_dir):
    rows = read(name, data_dir)
    kept = [r for r in rows if not isinstance(r, Drop)]
    assert kept and all(r["source"] == name for r in kept)
    for r in kept:
        offered = {t["name"] for t in r["tools"]}
        assert all(c["name"] in offered for c in calls(r)), r  # every call names an offered tool
        assert all(t["parameters"]["type"] == "object" for t in r["tools"])
        assert r["messages"][0]["role"] == "user" and any(m["role"] == "assistant" for m in r["messages"])
        text = render_chat(r["messages"], r["tools"], add_generation_prompt=False)
        for m in r["messages"]:  # each call renders as the project's format and parses back
            if m.get("tool_calls"):
                one = render_chat([{"role": "assistant", "content": "", "tool_calls": m["tool_calls"]}],
                                  add_generation_prompt=False)
                assert parse_reply(one.split("<|im_start|>assistant\n")[-1]).calls == m["tool_calls"]
        assert "<think>" not in text and "$var" not in text and "$$$" not in text


@pytest.mark.parametrize("name", TOOLSETS)
def test_a_set_is_read_in_the_same_order_for_a_seed(name, data_dir):
    assert comparable(read(name, data_dir, 3)) == comparable(read(name, data_dir, 3))


def test_a_set_needs_the_data_folder_and_a_known_name(data_dir):
    with pytest.raises(DataError, match="local data folder"):
        read("seal-tools", None)
    with pytest.raises(KeyError, match="unknown tool-calling set"):
        read("xlam", data_dir)
    with pytest.raises(KeyError, match="unknown part"):
        read("seal-tools:nested", data_dir)


def test_parts_split_a_set_by_its_number_of_calls(data_dir):
    single, parallel, whole = (chats(s, data_dir) for s in ("seal-tools:single", "seal-tools:parallel", "seal-tools"))
    assert single and parallel and len(single) + len(parallel) == len(whole)
    assert all(len(calls(r)) == 1 for r in single) and all(len(calls(r)) >= 2 for r in parallel)


# ---- per set: what a careful reader does --------------------------------------------------------------------------

def test_seal_tools_offers_the_called_tools_and_cuts_nested_calls(data_dir):
    rows = raw(data_dir, "seal-tools/Seal-Tools_Dataset_dev.jsonl")
    nested = next(r for r in rows if "API_call_" in json.dumps([c["parameters"] for c in r["calling"]]))
    made = next(r for r in chats("seal-tools", data_dir) if r["messages"][0]["content"] == nested["query"].strip())
    assert 0 < len(calls(made)) < len(nested["calling"])  # the calls before the first that takes an output
    assert "API_call_" not in json.dumps(calls(made))
    for r in chats("seal-tools", data_dir):
        assert len(r["tools"]) - len({c["name"] for c in calls(r)}) <= 2  # the called ones and 0-2 others


def test_toolrl_drops_thinking_and_reads_responses_as_replies(data_dir):
    rows = raw(data_dir, "toolrl/rlla_sft.json")
    answered = [r for r in chats("toolrl", data_dir) if not calls(r)]
    assert answered and len(answered) == sum("<tool_call>" not in r["output"] for r in rows)
    assert all(r["messages"][-1]["content"] and "<response>" not in r["messages"][-1]["content"] for r in answered)


def test_apibank_drops_the_benchmarks_one_call_line_and_keeps_the_dialogue(data_dir):
    rows = chats("apibank", data_dir)
    assert len(rows) == 12  # 4 of each level, level 3 with its "N. Name: description" tool list
    assert not any("only make one tool call" in m["content"] for r in rows for m in r["messages"])
    assert all(len(calls(r)) == 1 and r["messages"][-1].get("tool_calls") for r in rows)
    assert any(len(r["messages"]) > 2 for r in rows)


def test_hammerbench_keeps_each_call_beside_its_twin_without_the_tool(data_dir):
    rows = [r for r in read("hammer-single", data_dir) if not isinstance(r, Drop)]
    by_question = {}
    for r in rows:
        by_question.setdefault(r["messages"][0]["content"], []).append(r)
    assert len(by_question) == 12 and all(len(pair) == 2 for pair in by_question.values())
    for pair in by_question.values():
        call, refusal = sorted(pair, key=lambda r: not calls(r))
        target = calls(call)[0]["name"]
        assert not calls(refusal) and target not in {t["name"] for t in refusal["tools"]}
        assert "." in target  # HammerBench's dotted names are kept


def test_hammerbench_dialogues_ask_for_the_missing_value_then_call(data_dir):
    rows = chats("hammer-ask", data_dir)
    assert len(rows) == 18
    for r in rows:
        asks = [m for m in r["messages"] if m["role"] == "assistant" and not m.get("tool_calls")]
        assert asks and all(m["content"] for m in asks)
    # partial calls dropped: one call at the end, or none where the user switched to a request no tool serves (IS)
    assert sum(bool(r["messages"][-1].get("tool_calls")) for r in rows) == 16
    assert all(sum(bool(m.get("tool_calls")) for m in r["messages"]) <= 1 for r in rows)


def test_callnavi_offers_a_sample_of_its_domain_and_stops_at_placeholders(data_dir):
    drops = Counter(r.reason for r in read("callnavi", data_dir) if isinstance(r, Drop))
    assert drops == {"no independent call": 11, "malformed tool spec": 2}
    for r in chats("callnavi", data_dir):
        assert 1 <= len(r["tools"]) - len({c["name"] for c in calls(r)}) <= 5


def test_complexfuncbench_chains_hold_the_real_responses_and_resolved_references(data_dir):
    made = {r["messages"][0]["content"]: r for r in chats("complexfuncbench", data_dir)}
    rows = raw(data_dir, "complexfuncbench/complexfuncbench-data.json.gz")
    assert len(made) == len(rows) == 3
    resolved = 0
    for row in rows:
        chat = made[row["input"].strip()]["messages"]
        turns = [m for m in chat if m.get("tool_calls")]
        assert [m["role"] for m in chat[1:4]] == ["assistant", "tool", "assistant"]  # a call, its result, the next
        assert len(turns) == min(3, len(row["output"]))
        results = {s["label"]: s["response"] for s in row["output"]}
        for step, turn in zip(row["output"], turns):
            for key, value in step["arguments"].items():
                ref = REF.fullmatch(value) if isinstance(value, str) else None
                if ref:  # the value the earlier response holds, written out
                    assert turn["tool_calls"][0]["arguments"][key] == lookup(results[ref.group(1)], path_of(ref.group(2)))
                    resolved += 1
    assert resolved > 0


def test_references_resolve_into_responses_and_pruning_keeps_them():
    response = [{"coordinates": {"latitude": 1.5, "longitude": 2.5}, "id": "x" * 200, "rest": list(range(9))}]
    assert path_of(".coordinates.latitude") == ["coordinates", "latitude"] and path_of("[1].id") == [1, "id"]
    assert lookup(response, ["coordinates", "latitude"]) == 1.5  # a list stands for its first item
    assert resolve({"lat": "$var1.coordinates.latitude$", "q": "near $var1.coordinates.longitude$"},
                   {"var1": response}) == {"lat": 1.5, "q": "near 2.5"}
    with pytest.raises(Drop, match="unresolved reference"):
        resolve({"x": "$var2.id$"}, {"var1": response})
    with pytest.raises(Drop, match="unresolved reference"):
        resolve({"x": "$var1.missing$"}, {"var1": response})
    kept = prune(response, [["id"]])
    assert kept[0]["id"] == "x" * 200 and kept[0]["rest"] == [0]  # the referenced string whole, the list cut
    assert prune(response, [])[0]["id"].endswith("...")


def test_nestful_keeps_the_first_step_of_each_sequence(data_dir):
    rows = chats("nestful", data_dir)
    assert len(rows) == 12
    assert all("$var" not in json.dumps(calls(r)) for r in rows)


# ---- the recipe --------------------------------------------------------------------------------------------------

def test_row_kinds():
    tool = {"name": "f", "description": "", "parameters": {"type": "object", "properties": {}}}
    call = {"name": "f", "arguments": {}}
    user, answer = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    assert row_kind({"messages": [user, answer]}) == "chat"
    assert row_kind({"messages": [user, answer], "tools": [tool]}) == "no call"
    assert row_kind({"messages": [user, {"role": "assistant", "content": "", "tool_calls": [call]}],
                     "tools": [tool]}) == "single"
    assert row_kind({"messages": [user, {"role": "assistant", "content": "", "tool_calls": [call]}],
                     "tools": [tool, {**tool, "name": "g"}]}) == "single, several offered"
    assert row_kind({"messages": [user, {"role": "assistant", "content": "", "tool_calls": [call, call]}],
                     "tools": [tool]}) == "parallel"
    assert row_kind({"messages": [user, answer, user, {"role": "assistant", "content": "", "tool_calls": [call]}],
                     "tools": [tool]}) == "ask"
    assert row_kind({"messages": [user, {"role": "assistant", "content": "", "tool_calls": [call]},
                                  {"role": "tool", "content": "1"}, answer], "tools": [tool]}) == "chain"


def test_the_agent_recipe_reads_every_set_and_prints_its_kinds(data_dir):
    rows, stats = build(RECIPES["agent"], data_dir, None, Options())
    sets = {s.name for s in RECIPES["agent"] if s.adapter == "toolset"}
    assert {s.spec.partition(":")[0] for s in RECIPES["agent"] if s.adapter == "toolset"} == set(TOOLSETS)
    assert all(stats[s].kept > 0 for s in sets), {s: stats[s].dropped for s in sets}
    table = kinds_table(stats)
    assert all(k in table for k in KINDS)
    written = Counter(row_kind(r) for r in rows)
    for k in KINDS:  # the table counts what was written
        assert f"{k:26s} {written[k]:6d}" in table


def test_numbers_written_as_strings_take_the_type_their_parameter_declares():
    from nanoagent.data.common import typed
    assert typed("4", {"type": "integer"}) == 4 and typed("-12", {"type": "number"}) == -12
    assert typed("2.5", {"type": "number"}) == 2.5 and typed("2.5", {"type": "integer"}) == "2.5"
    assert typed("02139", {"type": "integer"}) == "02139"  # a code, not a number
    assert typed("true", {"type": "boolean"}) is True and typed(4.0, {"type": "integer"}) == 4
    assert typed("4", {"type": "string"}) == "4" and typed("4", {}) == "4"
    tools = [{"name": "f", "parameters": {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}}}]
    assert C.clean_calls([{"name": "f", "arguments": {"n": "7", "s": "7"}}], tools) == [
        {"name": "f", "arguments": {"n": 7, "s": "7"}}]
