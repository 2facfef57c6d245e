"""The agent loop, driven by a scripted stand-in model, then one smoke test on the real model."""

import pytest

from nanoagent.agent import Agent, calculator, tool
from nanoagent.agent.scripted import ScriptedModel


def call(name, **arguments):
    """One call in the NanoAgent format, as the model would write it."""
    import json
    return "<tool_call>" + json.dumps([{"name": name, "arguments": arguments}]) + "</tool_call>"


@tool
def lookup_population(city: str) -> int:
    """Population of a city.

    Args:
        city: the city name
    """
    return {"paris": 2_100_000, "lyon": 520_000}[city.lower()]


def test_one_tool_call_then_an_answer():
    model = ScriptedModel([call("calculator", expression="17*23"), "17 * 23 = 391."])
    result = Agent(model, tools=[calculator]).run("What is 17*23?")
    assert result.answer == "17 * 23 = 391." and result.finished
    assert len(result.steps) == 2 and result.steps[0].calls == [{"name": "calculator", "arguments": {"expression": "17*23"}}]
    assert [r.content for r in result.steps[0].results] == ["391"]
    assert [m["role"] for m in result.messages] == ["user", "assistant", "tool", "assistant"]
    assert result.messages[2] == {"role": "tool", "content": "391"}
    # the model saw the tool schema, and the result before answering
    assert model.requests[0]["tools"] == [calculator.schema]
    assert model.requests[1]["messages"][-1] == {"role": "tool", "content": "391"}
    assert model.requests[0]["generation"]["stop"] == ["</tool_call>"]


def test_the_raw_reply_is_kept_and_an_unclosed_tag_closed():
    # the scripted model cuts at the stop string, as the real one does
    model = ScriptedModel([call("calculator", expression="1+1"), "2"])
    result = Agent(model, tools=["calculator"]).run("1+1?")
    assert result.messages[1]["content"] == '<tool_call>[{"name": "calculator", "arguments": {"expression": "1+1"}}]</tool_call>'


def test_two_calls_in_one_turn():
    two = ('<tool_call>[{"name": "lookup_population", "arguments": {"city": "Paris"}}, '
           '{"name": "lookup_population", "arguments": {"city": "Lyon"}}]</tool_call>')
    model = ScriptedModel([two, "Paris is bigger."])
    result = Agent(model, tools=[lookup_population]).run("Which is bigger, Paris or Lyon?")
    assert [r.content for r in result.steps[0].results] == ["2100000", "520000"]
    assert [m["role"] for m in result.messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert result.answer == "Paris is bigger." and len(model.requests) == 2


def test_a_chain_of_two_turns():
    model = ScriptedModel([call("lookup_population", city="Lyon"),
                           call("calculator", expression="520000 * 2"),
                           "Twice Lyon's population is 1040000."])
    result = Agent(model, tools=[lookup_population, calculator]).run("Twice the population of Lyon?")
    assert [s.results[0].content for s in result.steps[:2]] == ["520000", "1040000"]
    assert result.answer == "Twice Lyon's population is 1040000." and len(result.steps) == 3
    # the second call was made with the first result in view
    assert {"role": "tool", "content": "520000"} in model.requests[1]["messages"]


def test_a_malformed_call_is_reported_and_the_model_fixes_it():
    model = ScriptedModel(["<tool_call>[{calculator: 2+2}]</tool_call>",
                           call("calculator"),                       # valid JSON, missing argument
                           call("calculator", expression="2+2"),
                           "4"])
    result = Agent(model, tools=[calculator]).run("2+2?")
    first, second, third = (s.results[0] for s in result.steps[:3])
    assert not first.ok and first.content.startswith("Error: could not read a tool call")
    assert "<tool_call>" in first.content  # the error shows the expected format
    assert not second.ok and "expression: missing required argument" in second.content
    assert third.ok and third.content == "4"
    assert result.answer == "4" and result.finished
    assert model.requests[1]["messages"][-1]["content"] == first.content


def test_unknown_tools_and_failing_tools_are_reported_not_raised():
    @tool
    def flaky(x: int) -> int:
        """Always fails."""
        raise ConnectionError("service down")
    model = ScriptedModel([call("nonexistent"), call("flaky", x=1), "Sorry, I could not do it."])
    result = Agent(model, tools=[flaky]).run("Do it")
    assert "unknown tool 'nonexistent'" in result.steps[0].results[0].content
    assert "ConnectionError: service down" in result.steps[1].results[0].content
    assert result.answer == "Sorry, I could not do it."


def test_max_steps_stops_a_model_that_never_answers():
    model = ScriptedModel([call("calculator", expression="1+1")])  # repeats forever
    result = Agent(model, tools=[calculator], max_steps=3).run("loop")
    assert not result.finished
    assert len(model.requests) == 3 and len(result.steps) == 3
    assert result.messages[-1]["role"] == "tool"
    with pytest.raises(ValueError):
        Agent(model, max_steps=0)


def test_a_runaway_reply_runs_only_the_first_calls():
    many = "".join(call("calculator", expression=f"{i}+1") for i in range(20))
    model = ScriptedModel([many, "done"])
    result = Agent(model, tools=[calculator], max_calls=3, stop=None).run("count")
    contents = [r.content for r in result.steps[0].results]
    assert contents[:3] == ["1", "2", "3"] and len(contents) == 4
    assert "17 more were ignored" in contents[3]


def test_plain_chat_without_tools_reads_no_calls():
    model = ScriptedModel(['Use <tool_call>[{"name": "x", "arguments": {}}]</tool_call> like this.'])
    result = Agent(model).run("How do tool calls look?")
    assert result.answer.startswith("Use <tool_call>") and result.steps[0].calls == []
    assert model.requests[0]["tools"] is None and "stop" not in model.requests[0]["generation"]


def test_history_system_prompt_and_generation_settings_are_passed_on():
    model = ScriptedModel(["Hi Ann.", "Your name is Ann."])
    agent = Agent(model, system="Be brief.", max_new_tokens=20, temperature=0.5, seed=3)
    first = agent.run("I am Ann.")
    second = agent.run("What is my name?", history=first.messages)
    assert second.answer == "Your name is Ann."
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert model.requests[1]["generation"] == {"max_new_tokens": 20, "temperature": 0.5, "seed": 3}
    assert len(first.messages) == 3  # the earlier history was not modified


def test_events_stream_tokens_calls_and_results_in_order():
    model = ScriptedModel([call("calculator", expression="6*7"), "It is 42."])
    events = []
    Agent(model, tools=[calculator]).run("6*7?", on_event=lambda kind, data: events.append((kind, data)))
    kinds = [k for k, _ in events]
    assert kinds.index("call") < kinds.index("result") < len(kinds) - 1 and kinds[-1] == "answer"
    streamed = "".join(d for k, d in events if k == "token")
    assert streamed.startswith("<tool_call>") and streamed.endswith("It is 42.")
    assert events[-1] == ("answer", "It is 42.")


def test_plain_functions_and_builtin_names_are_accepted_as_tools():
    def double(n: int) -> int:
        """Double a number."""
        return 2 * n
    agent = Agent(ScriptedModel([call("double", n="21"), "42"]), tools=[double, "get_current_time"])
    assert set(agent.tools) == {"double", "get_current_time"}
    assert agent.run("double 21").steps[0].results[0].content == "42"
    with pytest.raises(ValueError, match="unknown tool"):
        Agent(ScriptedModel(["x"]), tools=["no_such_tool"])


# ---------------------------------------------------------------- the real model

def test_real_model_agent_step(real_model):
    """A real generation goes through the loop: a step is taken and the transcript is well-formed.

    SmolLM2-135M-Instruct before fine-tuning rarely writes a call, so this checks the
    plumbing, not the model's skill: whatever it wrote is either an answer or a call
    whose result (or error) was fed back.
    """
    agent = Agent(real_model, tools=[calculator], max_steps=2, max_new_tokens=24)
    result = agent.run("What is 12 * 12? Use the calculator.")
    assert 1 <= len(result.steps) <= 2
    assert result.messages[0] == {"role": "user", "content": "What is 12 * 12? Use the calculator."}
    assert result.messages[1]["role"] == "assistant" and result.messages[1]["content"].strip()
    for step in result.steps:
        assert len(step.results) >= len(step.calls)
    if result.finished:
        assert result.messages[-1]["role"] == "assistant"
