"""Data: each adapter on hand-written rows in its source's real schema, dedup, filters, and the local recipe."""
import json

import numpy as np
import pytest

from nanoagent.data import adapters as A
from nanoagent.data.clean import ExactDedup, MinHashLSH, jaccard, normalize_text, shorten_casual, vary_tools
from nanoagent.data.io import DataError, find_data_dir, read_rows
from nanoagent.data.benchmarks import bfcl_data_dir, bfcl_prompts, eval_prompts
from nanoagent.data.mix import LOCAL, RECIPES, Options, Source, build, stats_table, write_jsonl
from nanoagent.tokenizer import render_chat

ADD = {"name": "add", "description": "Add two numbers", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}


@pytest.fixture(scope="session")
def bfcl_dir():
    """The BFCL data out of the bfcl-eval wheel (fetched with pip once, then cached)."""
    return bfcl_data_dir()


def roles(row):
    return [m["role"] for m in row["messages"]]


# ---- adapters ------------------------------------------------------------------------------------

def test_xlam_flat_params_become_json_schema_and_calls():
    row = {"query": "Where is IP 8.8.8.8, and what are the first 5 fibonacci numbers?",
           "tools": json.dumps([
               {"name": "get_ip_location", "description": "Locate an IP.",
                "parameters": {"ip": {"description": "The IP address.", "type": "str", "default": ""}}},
               {"name": "fibonacci", "description": "Fibonacci numbers.",
                "parameters": {"n": {"description": "How many.", "type": "int"},
                               "start": {"description": "Offsets.", "type": "List[int], optional"}}}]),
           "answers": json.dumps([{"name": "get_ip_location", "arguments": {"ip": "8.8.8.8"}},
                                  {"name": "fibonacci", "arguments": {"n": 5}}])}
    out = A.xlam(row)
    assert out["source"] == "xlam" and roles(out) == ["user", "assistant"]
    fib = out["tools"][1]["parameters"]
    assert fib == {"type": "object", "required": ["n"], "properties": {
        "n": {"type": "integer", "description": "How many."},
        "start": {"type": "array", "items": {"type": "integer"}, "description": "Offsets."}}}
    assert out["tools"][0]["parameters"]["required"] == ["ip"]  # an empty default is no default
    assert out["messages"][1]["tool_calls"] == [{"name": "get_ip_location", "arguments": {"ip": "8.8.8.8"}},
                                                {"name": "fibonacci", "arguments": {"n": 5}}]
    text = render_chat(out["messages"], out["tools"], add_generation_prompt=False)
    assert '<tool_call>[{"name": "get_ip_location", "arguments": {"ip": "8.8.8.8"}}, {"name": "fibonacci"' in text


@pytest.mark.parametrize("answers, reason", [
    (json.dumps([{"name": "subtract", "arguments": {"a": 1}}]), "undeclared tool"),
    ('[{"name": "add", "arguments": {"a": 1,', None),  # cut off: repaired, so kept
    (json.dumps([{"name": "add", "arguments": "not json {"}]), "unparsable arguments"),
    (json.dumps([{"name": "add", "arguments": [1, 2]}]), "unparsable arguments"),
    ("[]", "empty turn"),
])
def test_xlam_rows_that_do_not_fit_are_dropped_with_a_reason(answers, reason):
    row = {"query": "1+2?", "tools": json.dumps([ADD]), "answers": answers}
    if reason is None:
        assert A.xlam(row)["messages"][1]["tool_calls"] == [{"name": "add", "arguments": {"a": 1}}]
        return
    with pytest.raises(A.Drop) as e:
        A.xlam(row)
    assert e.value.reason == reason


def test_xlam_missing_tools_is_dropped():
    with pytest.raises(A.Drop) as e:
        A.xlam({"query": "hi", "tools": "", "answers": "[]"})
    assert e.value.reason == "missing tools"


HERMES_SYSTEM = ("You are a function calling AI model. You are provided with function signatures within <tools></tools> "
                 "XML tags. <tools> [{'type': 'function', 'function': {'name': 'get_stock_price', 'description': "
                 "'Get a stock price', 'parameters': {'type': 'object', 'properties': {'symbol': {'type': 'string'}}, "
                 "'required': ['symbol']}}}] </tools> For each function call return a json object within "
                 "<tool_call></tool_call> tags.")


def test_hermes_python_repr_tools_and_calls_and_tool_responses():
    row = {"conversations": [
        {"from": "system", "value": HERMES_SYSTEM},
        {"from": "human", "value": "Price of AAPL and MSFT?"},
        {"from": "gpt", "value": "<tool_call>\n{'arguments': {'symbol': 'AAPL'}, 'name': 'get_stock_price'}\n</tool_call>\n"
                                 "<tool_call>\n{'arguments': {'symbol': 'MSFT'}, 'name': 'get_stock_price'}\n</tool_call>"},
        {"from": "tool", "value": "<tool_response>\n{\"price\": 190}\n</tool_response>\n"
                                  "<tool_response>\n{\"price\": 410}\n</tool_response>"},
        {"from": "gpt", "value": "AAPL is at 190 and MSFT at 410."}]}
    out = A.hermes(row)
    assert roles(out) == ["user", "assistant", "tool", "tool", "assistant"]  # the tools system prompt is replaced
    assert out["tools"][0]["name"] == "get_stock_price"
    assert [c["arguments"]["symbol"] for c in out["messages"][1]["tool_calls"]] == ["AAPL", "MSFT"]
    assert out["messages"][2]["content"] == '{"price": 190}'
    text = render_chat(out["messages"], out["tools"], add_generation_prompt=False)
    assert "<tool_result>{\"price\": 190}</tool_result>\n<tool_result>{\"price\": 410}</tool_result>" in text


def test_hermes_call_to_an_undeclared_tool_is_dropped():
    row = {"conversations": [{"from": "system", "value": HERMES_SYSTEM}, {"from": "human", "value": "Weather?"},
                             {"from": "gpt", "value": "<tool_call>{'arguments': {}, 'name': 'get_weather'}</tool_call>"}]}
    with pytest.raises(A.Drop) as e:
        A.hermes(row)
    assert e.value.reason == "undeclared tool"


def test_hermes_thinking_derivative_keeps_the_thinking():
    # Jofthomas/hermes-function-calling-thinking-V1: conversations of {role, content}, roles human/model/tool
    row = {"conversations": [
        {"role": "system", "content": HERMES_SYSTEM},
        {"role": "human", "content": "AAPL?"},
        {"role": "model", "content": "<think>I should look up the price.</think><tool_call>\n"
                                     "{'name': 'get_stock_price', 'arguments': {'symbol': 'AAPL'}}\n</tool_call>"},
        {"role": "tool", "content": "<tool_response>{'price': 1}</tool_response>"},
        {"role": "model", "content": "It is 1."}]}
    out = A.hermes(row, "hermes-thinking")
    reply = out["messages"][1]
    assert reply["content"] == "<think>I should look up the price.</think>"
    assert reply["tool_calls"] == [{"name": "get_stock_price", "arguments": {"symbol": "AAPL"}}]


def test_locutusque_quoted_json_arguments():
    row = {"system_message": "You are a helpful assistant with access to functions.",
           "function_description": json.dumps(ADD) + "\n" + json.dumps({**ADD, "name": "mul"}),
           "conversations": [
               {"from": "system", "value": "You are a helpful assistant with access to functions."},
               {"from": "human", "value": "What is 2+3?"},
               {"from": "function-call", "value": json.dumps({"name": "add", "arguments": json.dumps({"a": 2, "b": 3})})},
               {"from": "function-response", "value": '{"result": 5}'},
               {"from": "gpt", "value": "2+3 is 5."}]}
    out = A.locutusque(row)
    assert [t["name"] for t in out["tools"]] == ["add", "mul"]
    assert roles(out) == ["user", "assistant", "tool", "assistant"]
    assert out["messages"][1]["tool_calls"] == [{"name": "add", "arguments": {"a": 2, "b": 3}}]


def test_glaive_sharegpt_real_row(data_dir):
    rows = json.loads((data_dir / "glaive" / "glaive_toolcall_en_demo.json").read_text())
    out = A.glaive(rows[0])
    assert out["tools"][0]["name"] == "search_recipes" and "assistant" in roles(out) and "tool" in roles(out)
    calls = [c for m in out["messages"] for c in m.get("tool_calls") or []]
    assert calls == [{"name": "search_recipes", "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]}}]


def test_glaive_raw_hub_form():
    row = {"system": "SYSTEM: You are a helpful assistant with access to the following functions. Use them if "
                     "required -\n" + json.dumps(ADD, indent=2) + "\n",
           "chat": "USER: Add 2 and 3. ASSISTANT: <functioncall> {\"name\": \"add\", \"arguments\": '{\"a\": 2, \"b\": 3}'}"
                   " <|endoftext|> FUNCTION RESPONSE: {\"result\": 5} ASSISTANT: It is 5. <|endoftext|>"}
    out = A.glaive(row)
    assert roles(out) == ["user", "assistant", "tool", "assistant"]
    assert out["messages"][1]["tool_calls"] == [{"name": "add", "arguments": {"a": 2, "b": 3}}]
    assert out["messages"][3]["content"] == "It is 5."


def test_smoltalk_apigen_tools_in_the_system_prompt():
    row = {"messages": [
        {"role": "system", "content": "You are an expert in composing functions.\n<tools>[" + json.dumps(ADD) + "]</tools>"},
        {"role": "user", "content": "Add 4 and 5."},
        {"role": "assistant", "content": '<tool_call>[{"name": "add", "arguments": {"a": 4, "b": 5}}]</tool_call>'}]}
    out = A.chat(row, "apigen")
    assert roles(out) == ["user", "assistant"] and out["tools"] == [ADD]
    assert out["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [
        {"name": "add", "arguments": {"a": 4, "b": 5}}]}


def test_smolagents_trace_without_a_tool_list_needs_the_name_in_the_system_prompt():
    system = "You can use these tools:\n- web_search: searches the web. Takes inputs: {'query': 'string'}"
    call = '<tool_call>{"name": "web_search", "arguments": {"query": "smollm"}}</tool_call>'
    row = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "What is SmolLM?"},
                        {"role": "assistant", "content": call}, {"role": "tool", "content": "a small LM"},
                        {"role": "assistant", "content": "A small language model."}]}
    out = A.chat(row, "smolagents")
    assert roles(out) == ["system", "user", "assistant", "tool", "assistant"] and "tools" not in out
    row["messages"][2]["content"] = call.replace("web_search", "python_interpreter")
    with pytest.raises(A.Drop) as e:
        A.chat(row)
    assert e.value.reason == "undeclared tool"


def test_openai_tool_calls_field():
    row = {"messages": [{"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": None, "tool_calls": [
                            {"type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}]},
                        {"role": "tool", "content": "4"}, {"role": "assistant", "content": "4."}],
           "tools": [{"type": "function", "function": ADD}]}
    out = A.chat(row)
    assert out["messages"][1]["tool_calls"] == [{"name": "add", "arguments": {"a": 2, "b": 2}}]


def test_agentinstruct_messages_as_a_json_string_and_plain_chats():
    msgs = [{"role": "system", "content": ""}, {"role": "user", "content": "Write a haiku."},
            {"role": "assistant", "content": "Snow on the cedar"}]
    with pytest.raises(A.Drop) as e:  # an empty system turn is an empty turn
        A.chat({"messages": json.dumps(msgs)})
    assert e.value.reason == "empty turn"
    out = A.chat({"messages": json.dumps(msgs[1:])}, "agentinstruct")
    assert roles(out) == ["user", "assistant"] and out["source"] == "agentinstruct"
    # code-act: conversations of {role, content}; Code-Feedback: messages
    assert roles(A.chat({"id": "x", "conversations": msgs[1:]})) == ["user", "assistant"]
    with pytest.raises(A.Drop) as e:
        A.chat({"messages": [{"role": "user", "content": "hi"}]})
    assert e.value.reason == "no assistant turn"


def test_tulu_gsm8k_orca_math_and_decomposed(data_dir):
    tulu = {"prompt": "Write two sentences.", "constraints": ["two sentences"],
            "messages": [{"role": "user", "content": "Write two sentences."}, {"role": "assistant", "content": "One. Two."}]}
    assert roles(A.tulu_if(tulu)) == ["user", "assistant"]
    g = read_rows(str(data_dir / "gsm8k" / "train.jsonl"), limit=1)[0]
    out = A.gsm8k(g)
    reply = out["messages"][1]["content"]
    assert "<<" not in reply and "####" not in reply and reply.endswith(f"The answer is {g['answer'].split('####')[1].strip()}.")
    assert A.orca_math({"question": "1+1?", "answer": "2"})["messages"][1]["content"] == "2"
    d = A.gsm8k_decomposed({"question": "Tom has 3 apples and buys 2. How many?",
                            "sub_questions": ["How many did he buy?", "How many in total?"]})
    assert "1. How many did he buy?\n2. How many in total?" in d["messages"][1]["content"]
    with pytest.raises(A.Drop):
        A.gsm8k({"question": "q", "answer": "no marker"})


def test_to_messages_guesses_the_schema():
    assert A.to_messages({"query": "1+2", "tools": json.dumps([ADD]),
                          "answers": json.dumps([{"name": "add", "arguments": {"a": 1, "b": 2}}])})["tools"] == [ADD]
    assert A.to_messages({"question": "q", "answer": "a #### 1"})["messages"][1]["content"].endswith("The answer is 1.")
    assert A.to_messages({"nothing": 1}) is None


# ---- cleaning ---------------------------------------------------------------------------------------

def test_exact_dedup_on_normalized_text():
    d = ExactDedup()
    assert not d.seen("Hello,  World!") and d.seen("hello world") and not d.seen("hello there")
    assert normalize_text("  A\tB, c! ") == "a b c"


LONG = ("The quick brown fox jumps over the lazy dog while the farmer watches from the porch and drinks his "
        "morning coffee before walking out to the fields where the corn grows tall in the late summer sun.")


def test_minhash_finds_near_duplicates_and_estimates_jaccard():
    lsh = MinHashLSH(num_perm=128, bands=16, threshold=0.7)
    assert not lsh.add(LONG)
    near = LONG.replace("late summer", "late  summer").replace("porch", "porch,")  # punctuation/space only
    assert lsh.add(near)  # normalized text is equal: a (near) duplicate
    one_word = LONG.replace("corn", "wheat")
    est = np.mean(lsh.signature(LONG) == lsh.signature(one_word))
    assert abs(est - jaccard(LONG, one_word)) < 0.15
    assert not lsh.add("A completely different sentence about compilers, parsers and the theory of types.")
    assert len(lsh.signatures) == 2
    with pytest.raises(ValueError):
        MinHashLSH(num_perm=100, bands=16)


def test_short_answers_cut_long_casual_chats():
    row = {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"},
                        {"role": "user", "content": "Tell me everything."},
                        {"role": "assistant", "content": "word " * 300}]}
    assert roles(shorten_casual(row, 120)) == ["user", "assistant"]
    row["messages"][1]["content"] = "word " * 300
    assert shorten_casual(row, 120) is None


def test_vary_tools_shuffles_adds_distractors_and_keeps_the_row_valid():
    tools = [{**ADD, "name": f"f{i}"} for i in range(5)]
    row = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "",
                                                           "tool_calls": [{"name": "f0", "arguments": {}}]}],
           "tools": tools}
    pool = [{**ADD, "name": "distractor"}, tools[1]]
    rng = np.random.default_rng(0)
    outs = [vary_tools(row, rng, pool, p_distractor=1.0, p_system=1.0) for _ in range(20)]
    assert all({t["name"] for t in tools} <= {t["name"] for t in o["tools"]} for o in outs)
    assert all(len({t["name"] for t in o["tools"]}) == len(o["tools"]) for o in outs)  # no name twice
    assert any([t["name"] for t in o["tools"]][:5] != [t["name"] for t in tools] for o in outs)
    assert any(t["name"] == "distractor" for o in outs for t in o["tools"])
    assert all(o["messages"][0]["role"] == "system" for o in outs)
    assert row["tools"] == tools and row["messages"][0]["role"] == "user"  # the input is not changed
    plain = {"messages": row["messages"]}
    assert vary_tools(plain, rng, pool) is plain


# ---- the mix ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_mix(data_dir):
    recipe = [Source("glaive", "glaive/glaive_toolcall_en_demo.json", "glaive", local=True),
              Source("gsm8k", "gsm8k/train.jsonl", "gsm8k", limit=50, local=True)]
    return build(recipe, data_dir, None, Options(max_tokens=1024))


def test_local_recipe_builds_and_counts(local_mix):
    rows, stats = local_mix
    assert stats["glaive"].read == 40 and stats["gsm8k"].read == 50  # all 40 sample chats; 50 of the 100 GSM8K rows
    for s in stats.values():
        assert s.read == s.kept + sum(s.dropped.values()) and s.written == s.kept
    assert stats["glaive"].dropped["exact duplicate"] > 0  # the glaive sample repeats a conversation (the 5th as the 7th)
    assert {r["source"] for r in rows} == {"glaive", "gsm8k"} and len(rows) == sum(s.kept for s in stats.values())
    for r in rows:
        render_chat(r["messages"], r.get("tools"), add_generation_prompt=False)
    assert any(r.get("tools") for r in rows)
    table = stats_table(stats)
    assert table.splitlines()[0].split()[:4] == ["source", "read", "kept", "written"] and "total" in table


def test_build_counts_bad_rows_and_missing_sources(tmp_path):
    good = {"query": "1+2", "tools": json.dumps([ADD]), "answers": json.dumps([{"name": "add", "arguments": {"a": 1, "b": 2}}])}
    rows = [good, {"query": "x"}, {**good, "answers": "[{\"name\": \"nope\"}]"}, "not a dict", good]
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    recipe = [Source("x", str(tmp_path / "x.jsonl"), "xlam", weight=2.0),
              Source("gone", str(tmp_path / "missing.jsonl"), "xlam")]
    out, stats = build(recipe, None, None, Options(min_tokens=1))
    assert stats["x"].kept == 1 and stats["x"].written == 2 and len(out) == 2
    assert stats["x"].dropped == {"missing tools": 1, "undeclared tool": 1, "malformed (AttributeError)": 1,
                                  "exact duplicate": 1}
    assert stats["gone"].dropped == {"source unavailable": 1}


def test_eval_prompts_are_dropped(data_dir, tmp_path):
    ifeval = read_rows(str(data_dir / "ifeval" / "input_data.jsonl"), limit=1)[0]["prompt"]
    rows = [{"messages": [{"role": "user", "content": ifeval}, {"role": "assistant", "content": "Sure, here it is."}]},
            {"messages": [{"role": "user", "content": "An ordinary question?"}, {"role": "assistant", "content": "Yes."}]}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    blocked = eval_prompts(data_dir, fetch_bfcl=False)
    out, stats = build([Source("c", str(tmp_path / "c.jsonl"), "chat")], None, None, Options(min_tokens=1), blocked)
    assert stats["c"].dropped == {"eval prompt": 1} and len(out) == 1


def test_the_training_mix_shares_no_prompt_with_bfcl_or_ifeval(data_dir, bfcl_dir):
    blocked = eval_prompts(data_dir, bfcl_dir)
    rows, _ = build(LOCAL, data_dir, None, Options(), blocked)
    train = {normalize_text(m["content"]) for r in rows for m in r["messages"] if m["role"] == "user"}
    ifeval = {normalize_text(r["prompt"]) for r in read_rows(str(data_dir / "ifeval" / "input_data.jsonl"))}
    bfcl = {normalize_text(p) for p in bfcl_prompts(bfcl_dir)}
    assert len(ifeval) == 52 and len(bfcl) > 1000  # the IFEval sample: 52 prompts, every instruction type
    assert ifeval <= blocked
    assert not train & ifeval and not train & bfcl


def test_cli_builds_the_local_recipe(data_dir, bfcl_dir, tmp_path, capsys):
    from nanoagent.data.__main__ import main
    out = tmp_path / "mix.jsonl"
    main(["build", "--recipe", "local", "--data-dir", str(data_dir), "--out", str(out), "--limit", "20",
          "--bfcl-dir", str(bfcl_dir), "--weight", "gsm8k=0.5"])
    rows = read_rows(str(out))
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["recipe"] == "local" and stats["sources"]["glaive"]["read"] == 20
    assert len(rows) == sum(s["written"] for s in stats["sources"].values())
    assert stats["sources"]["gsm8k"]["written"] < stats["sources"]["gsm8k"]["kept"]
    assert "recipe local" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["build", "--recipe", "local", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)])


def test_cli_builds_the_agent_recipe_and_prints_its_kinds_of_row(data_dir, bfcl_dir, tmp_path, capsys):
    from nanoagent.data.__main__ import main
    out = tmp_path / "mix.jsonl"
    main(["build", "--recipe", "agent", "--data-dir", str(data_dir), "--out", str(out), "--bfcl-dir", str(bfcl_dir)])
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["sources"]["seal-tools-single"]["written"] > 0 and stats["sources"]["near-miss"]["written"] > 0
    printed = capsys.readouterr().out
    assert "kind of row" in printed and "single, several offered" in printed
    assert len(read_rows(str(out))) == sum(s["written"] for s in stats["sources"].values())


# ---- reading files -------------------------------------------------------------------------------------

def test_a_missing_nanoagent_data_folder_is_honoured(tmp_path, monkeypatch):
    """$NANOAGENT_DATA naming no folder means none: no fall back to a shared/data folder beside the checkout
    (so CI can run the tests with NANOAGENT_DATA=/nonexistent and show they need no data folder)."""
    monkeypatch.setenv("NANOAGENT_DATA", str(tmp_path / "nowhere"))
    assert find_data_dir(required=False) is None
    with pytest.raises(DataError, match="does not exist"):
        find_data_dir()
    assert find_data_dir(tmp_path) == tmp_path  # an explicit folder still wins
    monkeypatch.setenv("NANOAGENT_DATA", str(tmp_path))
    assert find_data_dir() == tmp_path


def test_read_rows_json_jsonl_parquet_and_errors(tmp_path):
    rows = [{"a": 1}, {"a": 2}, {"a": 3}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "r.json").write_text(json.dumps(rows))
    assert read_rows(str(tmp_path / "r.jsonl")) == rows and read_rows(str(tmp_path / "r.json"), limit=2) == rows[:2]
    write_jsonl(rows, tmp_path / "w.jsonl")
    assert read_rows(str(tmp_path / "w.jsonl")) == rows
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        read_rows(str(tmp_path / "bad.jsonl"))
    with pytest.raises(DataError):
        read_rows(str(tmp_path / "missing.jsonl"))
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "r.parquet")
    assert read_rows(str(tmp_path / "r.parquet")) == rows


def test_scale_keeps_the_recipes_shares_and_the_arms_split_it():
    from nanoagent.data.__main__ import with_overrides
    from nanoagent.data.mix import AGENT
    quarter = with_overrides(RECIPES["agent"], "agent", ["gsm8k=7"], [], 0.25)
    assert [s.name for s in quarter] == [s.name for s in AGENT]
    for full, scaled in zip(AGENT, quarter):
        if full.name != "gsm8k":
            assert scaled.limit == max(1, round(full.limit * 0.25)) and scaled.weight == full.weight
    assert quarter[-1].limit == 7  # --source-limit after --scale
    real, own = RECIPES["agent-real-only"], RECIPES["agent-own-only"]
    assert real and own and sorted(s.name for s in real + own) == sorted(s.name for s in AGENT)
    assert all(s.adapter == "toolset" for s in real) and not any(s.adapter == "toolset" for s in own)


def test_a_scale_of_zero_is_one_error(data_dir, tmp_path):
    from nanoagent.data.__main__ import main
    with pytest.raises(SystemExit) as exit:
        main(["build", "--recipe", "agent", "--data-dir", str(data_dir), "--out", str(tmp_path / "m.jsonl"),
              "--scale", "0"])
    assert str(exit.value.code).startswith("error: --scale 0") and "\n" not in str(exit.value.code)
    assert not (tmp_path / "m.jsonl").exists()
