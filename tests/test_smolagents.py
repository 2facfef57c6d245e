"""smolagents' own client code drives the server: OpenAIServerModel's plain, streamed and tool-offering
calls on the tiny model's decoder and on a scripted one (for exact tool calls), and ToolCallingAgent runs
through examples/smolagents_agent.py, which wraps the project's tools: the protocol it speaks stays covered."""
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from smolagents import ActionStep, AgentGenerationError, ChatMessage, OpenAIServerModel
from smolagents.models import agglomerate_stream_deltas, get_tool_json_schema

import nanoagent
from nanoagent.agent import calculator
from nanoagent.serve import model_engine
from test_serve import scripted, serving

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "smolagents_agent.py"
spec = importlib.util.spec_from_file_location("smolagents_agent", EXAMPLE)
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)

QUESTION = "What is 17 * 23 + 4?"
HI = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]  # as smolagents writes messages
CALC_CALL = '<tool_call>[{"name": "calculator", "arguments": {"expression": "17 * 23 + 4"}}]</tool_call>'
FINAL_CALL = '<tool_call>[{"name": "final_answer", "arguments": {"answer": "395"}}]</tool_call>'


@pytest.fixture(scope="module")
def tiny_lm(tiny_long):
    """The tiny model with room for smolagents' system prompt (about 3,500 of its tokens)."""
    return nanoagent.load(tiny_long)


def tiny_engine(lm):
    return model_engine(lm, slots=2, context=8192, model_id="tiny")


class Recorder:
    """An httpx client for the OpenAI client under smolagents, keeping each request's body and status."""

    def __init__(self):
        self.bodies, self.statuses = [], []
        self.http = httpx.Client(timeout=120, event_hooks={"request": [self.request], "response": [self.response]})

    def request(self, r):
        self.bodies.append(json.loads(r.content))

    def response(self, r):
        self.statuses.append(r.status_code)

    def model(self, url, model_id="tiny", **kw) -> OpenAIServerModel:
        return OpenAIServerModel(model_id=model_id, api_base=url, api_key="none",
                                 client_kwargs={"max_retries": 0, "http_client": self.http}, **kw)


def test_plain_and_streamed_replies_are_chat_messages(tiny_lm):
    rec = Recorder()
    with serving(tiny_engine(tiny_lm)) as url:
        model = rec.model(url, max_tokens=8)
        message = model.generate(HI)
        called = model(HI)
        deltas = list(model.generate_stream(HI))
    expected = tiny_lm.chat([{"role": "user", "content": "Hi"}], max_new_tokens=8)  # greedy, the server's default
    assert isinstance(message, ChatMessage) and message.role == "assistant" and message.tool_calls is None
    assert message.content == expected and called.content == expected
    tok = tiny_lm.tokenizer
    assert message.token_usage.input_tokens == len(tok.encode(tok.render_chat([{"role": "user", "content": "Hi"}])))
    assert message.token_usage.output_tokens == len(tok.encode(expected)) or message.raw.choices[0].finish_reason \
        == "length"
    streamed = agglomerate_stream_deltas(deltas)
    assert streamed.content == expected and streamed.token_usage.output_tokens == message.token_usage.output_tokens
    assert rec.statuses == [200, 200, 200] and [b.get("stream", False) for b in rec.bodies] == [False, False, True]


def test_offering_a_tool_goes_through_the_tools_prompt(tiny_lm):
    """The tiny model calls nothing sensible, but the request is accepted, the tools are rendered into the prompt
    and what comes back is a ChatMessage with the reply's text or calls."""
    rec = Recorder()
    tool = example.ProjectTool(calculator)
    with serving(tiny_engine(tiny_lm)) as url:
        message = rec.model(url, max_tokens=8).generate(HI, tools_to_call_from=[tool])
    (body,) = rec.bodies
    assert rec.statuses == [200]
    assert body["tools"] == [get_tool_json_schema(tool)] and body["tool_choice"] == "required"
    assert body["tools"][0]["function"]["parameters"] == calculator.parameters  # the project's own schema
    tok = tiny_lm.tokenizer
    prompt = tok.encode(tok.render_chat([{"role": "user", "content": "Hi"}], body["tools"]))
    assert message.token_usage.input_tokens == len(prompt)
    assert isinstance(message, ChatMessage) and (message.content is not None or message.tool_calls)
    assert message.raw.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_a_tool_call_comes_back_parsed_whole_and_streamed():
    engine = scripted(CALC_CALL, context=8192)
    rec = Recorder()
    tool = example.ProjectTool(calculator)
    with serving(engine) as url:
        model = rec.model(url, model_id="scripted")
        whole = model.generate(HI, tools_to_call_from=[tool])
        streamed = agglomerate_stream_deltas(list(model.generate_stream(HI, tools_to_call_from=[tool])))
    assert rec.statuses == [200, 200]
    for message in (whole, streamed):
        (call,) = message.tool_calls
        assert call.id.startswith("call_") and call.function.name == "calculator"
        assert json.loads(call.function.arguments) == {"expression": "17 * 23 + 4"}
    assert whole.content is None and whole.raw.choices[0].finish_reason == "tool_calls"
    assert not streamed.content  # nothing of the tag leaks into the text
    tok = engine.tokenizer
    assert engine.decoder.prompts == [tok.render_chat([{"role": "user", "content": "Hi"}], rec.bodies[0]["tools"])] * 2


def test_the_example_runs_an_agent_to_its_answer(capsys):
    """The model calls the project's calculator, reads its result, then calls final_answer: the example
    prints both steps and the answer."""
    engine = scripted(CALC_CALL, FINAL_CALL, context=16384)
    with serving(engine) as url:
        example.main(["--base-url", url, "--question", QUESTION])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"model: scripted at {url}; tools: calculator, final_answer"
    assert out[1] == f"question: {QUESTION}"
    assert out[2].startswith('step 1: calculator({"expression": "17 * 23 + 4"}) -> 395  (')
    assert out[3].startswith('step 2: final_answer({"answer": "395"}) -> 395  (')
    assert out[4].startswith("answer: 395  (success, 2 steps,")
    first, second = engine.decoder.prompts
    assert "calculator" in first and QUESTION in first
    assert second.startswith(first[:first.index(QUESTION)]) and "Observation:\n395" in second  # the result went back


def test_an_agent_on_the_tiny_model_ends_without_a_protocol_error(tiny_lm):
    """Two steps of random replies: the agent meets parsing errors and the step limit, which are the model's
    doing; every request is accepted, every step has its reply, and none failed to generate."""
    rec = Recorder()
    with serving(tiny_engine(tiny_lm)) as url:
        agent = example.build_agent(url, max_steps=2, max_tokens=16)
        agent.model.client = rec.model(url).client  # the same client code, recording
        result = agent.run(QUESTION, return_full_result=True)
    steps = [s for s in agent.memory.steps if isinstance(s, ActionStep)]
    assert result.state in ("success", "max_steps_error") and len(rec.statuses) == len(steps) <= 3
    assert rec.statuses == [200] * len(steps)
    assert all(s.token_usage is not None and s.token_usage.input_tokens > 0 for s in steps)
    assert not any(isinstance(s.error, AgentGenerationError) for s in steps)
    assert not str(result.output).startswith("Error in generating final LLM output")
    assert rec.bodies[0]["model"] == "tiny"  # the name the server lists
    assert {t["function"]["name"] for t in rec.bodies[0]["tools"]} == {"calculator", "final_answer"}


@pytest.mark.parametrize("args,says", [
    (["--tools", "calculator,abacus"], "error: unknown tool 'abacus'"),
    ([], "error: no server answers at http://127.0.0.1:"),
])
def test_the_example_says_what_is_wrong_in_one_line(args, says):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # free once closed: nothing listens there
    r = subprocess.run([sys.executable, str(EXAMPLE), "--base-url", f"http://127.0.0.1:{port}/v1", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith(says) and r.stderr.count("\n") == 1, r.stderr
