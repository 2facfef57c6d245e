"""The OpenAI-compatible server, driven by the official `openai` client over loopback: a scripted decoder
for exact replies (chat, streaming, tool calls, stop strings, errors), the tiny model's BatchDecoder for
the decoding itself (n > 1, batching, disconnects, a load test), and the real weights once."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import httpx
import openai
import pytest
import uvicorn
from tokenizers import pre_tokenizers

import nanoagent
from test_quant import tiny_folder
from nanoagent.batch import BatchDecoder
from nanoagent.model import Model
from nanoagent.openai_api import hold_from
from nanoagent.serve import Engine, create_app, model_engine
from nanoagent.tokenizer import Tokenizer, tokenizer_from_gguf_vocab

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time now", "parameters": {}}}
CALL = '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>'
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


# ---- a scripted decoder: BatchDecoder's interface, replies from a script --------------------------

def byte_tokenizer() -> Tokenizer:
    """SmolLM2's special tokens and one token per byte: any text encodes, no weights needed."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return Tokenizer(tokenizer_from_gguf_vocab(specials + alphabet, [], [3] * 3 + [1] * len(alphabet)))


@dataclass(eq=False)
class ScriptedSequence:
    script: list
    max_new_tokens: int
    stop_ids: frozenset
    new: list = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def done(self):
        return self.finish_reason is not None


class ScriptedDecoder:
    """Each submitted prompt gets the next scripted reply (the last again once they run out), a token a step."""

    def __init__(self, tokenizer, replies, delay=0.0):
        self.tok, self.replies, self.delay = tokenizer, list(replies), delay
        self.prompts, self.running, self.cancelled = [], [], []

    @property
    def busy(self):
        return bool(self.running)

    def submit(self, prompt, max_new_tokens, sampling, stop_ids=(), n=1):
        self.prompts.append(self.tok.decode(prompt))
        reply = self.replies[min(len(self.prompts), len(self.replies)) - 1]
        seqs = [ScriptedSequence(self.tok.encode(reply) + [self.tok.im_end_id], max_new_tokens, frozenset(stop_ids))
                for _ in range(n)]
        self.running += seqs
        return seqs if n > 1 else seqs[0]

    def step(self):
        time.sleep(self.delay)
        events = []
        for seq in list(self.running):
            token = seq.script[len(seq.new)]
            if token in seq.stop_ids:
                seq.finish_reason = "stop"
                events.append((seq, None))
            else:
                seq.new.append(token)
                events.append((seq, token))
                if len(seq.new) == seq.max_new_tokens:
                    seq.finish_reason = "length"
            if seq.done:
                self.running.remove(seq)
        return events

    def cancel(self, seq):
        seq.finish_reason = "cancelled"
        self.running.remove(seq)
        self.cancelled.append(seq)


def scripted(*replies, context=1024, delay=0.0):
    tok = byte_tokenizer()
    return Engine(ScriptedDecoder(tok, replies, delay), tok, slots=4, context=context, model_id="scripted")


class CountingDecoder(BatchDecoder):
    """The real BatchDecoder, slowed down if asked, remembering the most sequences one step decoded; `endless`:
    replies never stop at <|im_end|> but run to max_tokens (the tiny model's reply to "Hi" may be 7 tokens, over
    before a test that needs it in flight has acted)."""

    def __init__(self, *args, delay=0.0, endless=False, **kw):
        super().__init__(*args, **kw)
        self.delay, self.endless, self.widest = delay, endless, 0

    def submit(self, prompt, max_new_tokens, sampling, stop_ids=(), n=1):
        return super().submit(prompt, max_new_tokens, sampling, () if self.endless else stop_ids, n)

    def step(self):
        time.sleep(self.delay)
        events = super().step()
        self.widest = max(self.widest, len(events))
        return events


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """The tiny model (random weights, a 128-token tokenizer) with room for 512 positions."""
    lm = nanoagent.load(tiny_folder(tmp_path_factory.mktemp("tiny") / "model")[0])
    lm.model = Model(replace(lm.config, max_position_embeddings=512), lm.model.params)
    return lm


def tiny_engine(lm, slots=4, delay=0.0, endless=False):
    decoder = CountingDecoder(lm.model, slots, 512, delay=delay, endless=endless)
    return Engine(decoder, lm.tokenizer, slots, 512, "tiny")


# ---- a server on a free loopback port, in this process -------------------------------------------

@contextmanager
def serving(engine, **options):
    """uvicorn in a thread serving create_app(engine) -> the base URL; stops on leaving."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(engine, **options), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive()


def client(url, key="none"):
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def chat(url, **kw):
    return client(url).chat.completions.create(model=kw.pop("model", "scripted"), messages=kw.pop("messages", USER),
                                               **kw)


# ---- replies ----------------------------------------------------------------------------------------

def test_models_lists_the_one_model():
    with serving(scripted("hi")) as url:
        assert [m.id for m in client(url).models.list()] == ["scripted"]
        assert client(url).models.retrieve("scripted").id == "scripted"
        with pytest.raises(openai.NotFoundError):
            client(url).models.retrieve("gpt-4o")


def test_plain_chat_and_usage():
    engine = scripted("Hello there! How can I help?")
    with serving(engine) as url:
        r = chat(url, max_tokens=100)
    tok = engine.tokenizer
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "scripted"
    assert r.choices[0].message.content == "Hello there! How can I help?"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason == "stop"
    prompt = tok.encode(tok.render_chat(USER))
    assert engine.decoder.prompts == [tok.decode(prompt)]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prompt), len(tok.encode(
        "Hello there! How can I help?")))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_max_tokens_cuts_the_reply():
    with serving(scripted("abcdefghij")) as url:
        r = chat(url, max_tokens=4)
        r2 = chat(url, max_completion_tokens=3)
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("abcd", "length")
    assert r2.choices[0].message.content == "abc" and r2.usage.completion_tokens == 3


def test_streaming_in_openai_chunks():
    reply = "Streaming, one token at a time: é ü 漢."
    with serving(scripted(reply)) as url:
        chunks = list(chat(url, stream=True, stream_options={"include_usage": True}))
        raw = httpx.post(f"{url}/chat/completions", json={"model": "m", "messages": USER, "stream": True}).text
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(byte_tokenizer().encode(reply))
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_stop_strings_end_the_reply_and_free_the_sequence():
    engine = scripted("one, two, three, four" + ", and more" * 60, delay=0.002)  # still running when the stop is seen
    with serving(engine) as url:
        r = chat(url, stop=", t")
        streamed = list(chat(url, stop=["three", "xyz"], stream=True))
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("one", "stop")
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "one, two, "
    assert streamed[-1].choices[0].finish_reason == "stop"
    assert len(engine.decoder.cancelled) == 2 and not engine.decoder.running  # both stopped early


def test_content_given_as_text_parts_and_a_developer_message():
    engine = scripted("ok")
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}]
    with serving(engine) as url:
        chat(url, messages=messages)
    tok = engine.tokenizer
    assert engine.decoder.prompts == [tok.render_chat([{"role": "system", "content": "Be brief."},
                                                       {"role": "user", "content": "Hello\nthere"}])]


# ---- tools ----------------------------------------------------------------------------------------

def test_a_tool_call_round_trip():
    """call -> the caller runs the tool -> its result goes back -> the answer."""
    engine = scripted(CALL, "It is sunny and 21 C in Paris.")
    with serving(engine) as url:
        first = chat(url, tools=[WEATHER, CLOCK])
        msg = first.choices[0]
        assert msg.finish_reason == "tool_calls" and msg.message.content is None
        (call,) = msg.message.tool_calls
        assert re.fullmatch(r"call_[0-9a-f]{24}", call.id) and call.type == "function"
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        history = USER + [msg.message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21, "sky": "sunny"}'}]
        second = chat(url, tools=[WEATHER, CLOCK], messages=history)
    assert second.choices[0].message.content == "It is sunny and 21 C in Paris."
    assert second.choices[0].finish_reason == "stop"
    tok = engine.tokenizer
    result = {"role": "user", "content": '<tool_result>{"temp": 21, "sky": "sunny"}</tool_result>'}
    assert engine.decoder.prompts == [tok.render_chat(USER, [WEATHER, CLOCK]), tok.render_chat(
        USER + [{"role": "assistant", "content": CALL}, result], [WEATHER, CLOCK])]


def test_a_streamed_tool_call():
    engine = scripted("Let me look. " + CALL)
    with serving(engine) as url:
        chunks = list(chat(url, tools=[WEATHER], stream=True))
        whole = chat(url, tools=[WEATHER])
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    calls = [t for c in chunks for t in c.choices[0].delta.tool_calls or []]
    assert content == "Let me look. "  # nothing of the tag leaks into the content
    assert [(t.index, t.function.name, json.loads(t.function.arguments)) for t in calls] == \
        [(0, "get_weather", {"city": "Paris"})] and calls[0].id.startswith("call_")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert whole.choices[0].message.content == "Let me look."
    assert whole.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_tool_choice_none_and_named():
    engine = scripted(CALL)
    tok = engine.tokenizer
    with serving(engine) as url:
        none = chat(url, tools=[WEATHER, CLOCK], tool_choice="none")
        named = chat(url, tools=[WEATHER, CLOCK], tool_choice={"type": "function", "function": {"name": "get_time"}})
        with pytest.raises(openai.BadRequestError, match="not among the tools"):
            chat(url, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})
    assert none.choices[0].message.content == CALL and none.choices[0].finish_reason == "stop"
    assert engine.decoder.prompts == [tok.render_chat(USER), tok.render_chat(USER, [CLOCK])]
    assert named.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("text,held", [
    ("Hello <b>bold</b>", None), ("Hello <tool", 6), ("Hello < tool_calls >[", 6), ("Hi <", 3),
    ('[{"name": "f"', 0), ("  ", 0), ("x <tool_call>[] and <b>", 2),
])
def test_content_is_held_back_from_a_tool_call(text, held):
    assert hold_from(text, 0) == (len(text) if held is None else held)


# ---- bad requests ---------------------------------------------------------------------------------

def post(url, body=None, content=None, headers=None):
    return httpx.post(f"{url}/chat/completions", json=body, content=content, headers=headers, timeout=30)


def assert_error(r, status, param=None, code=None, says=""):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and says in error["message"]
    assert error["param"] == param and error["code"] == code


@pytest.mark.parametrize("body,param,says", [
    ({"messages": USER}, "model", "'model' is required"),
    ({"model": "m"}, "messages", "'messages' is required"),
    ({"model": "m", "messages": []}, "messages", "non-empty list"),
    ({"model": "m", "messages": "hi"}, "messages", "non-empty list"),
    ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "must be one of"),
    ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role", "must be one of"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "a string or a list"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content", "no 'content'"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0]", "text only"),
    ({"model": "m", "messages": USER + [{"role": "tool", "content": "21"}]}, "messages[1].tool_call_id",
     "tool_call_id"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}]},
     "messages[0].tool_calls[0].function.arguments", "JSON object"),
    ({"model": "m", "messages": USER, "temperature": "hot"}, "temperature", "must be a finite number"),
    ({"model": "m", "messages": USER, "temperature": 3}, "temperature", "[0.0, 2.0]"),
    ({"model": "m", "messages": USER, "top_p": 1.5}, "top_p", "[0.0, 1.0]"),
    ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens", "at least 1"),
    ({"model": "m", "messages": USER, "max_completion_tokens": 2.5}, "max_completion_tokens", "an integer"),
    ({"model": "m", "messages": USER, "n": True}, "n", "an integer"),
    ({"model": "m", "messages": USER, "n": 5}, "n", "at most 4"),
    ({"model": "m", "messages": USER, "seed": "1"}, "seed", "an integer"),
    ({"model": "m", "messages": USER, "stop": 7}, "stop", "a string or a list"),
    ({"model": "m", "messages": USER, "stop": list("abcdefghijklmnopq")}, "stop", "up to 16"),
    ({"model": "m", "messages": USER, "stream": "yes"}, "stream", "true or false"),
    ({"model": "m", "messages": USER, "tools": {"name": "f"}}, "tools", "must be a list"),
    ({"model": "m", "messages": USER, "tools": [{"type": "function", "function": {}}]}, "tools[0]", "function"),
    ({"model": "m", "messages": USER, "tool_choice": "always"}, "tool_choice", "must be"),
    ({"model": "m", "messages": USER, "logprobs": True}, "logprobs", "not supported"),
    ([1, 2], None, "a JSON object"),
])
def test_bad_requests_get_400_in_openai_shape(body, param, says):
    with serving(scripted("ok")) as url:
        assert_error(post(url, body), 400, param, None, says)
        assert chat(url).choices[0].message.content == "ok"  # and the server goes on


def test_malformed_json_too_long_prompts_and_large_bodies():
    engine = scripted("ok", context=200)
    with serving(engine, max_body=4096) as url:
        assert_error(post(url, content=b'{"model": "m", "messages": ['), 400, says="not valid JSON")
        assert_error(post(url, content=b"\xff\xfe"), 400, says="not valid JSON")
        long = [{"role": "user", "content": "word " * 200}]
        assert_error(post(url, {"model": "m", "messages": long}), 400, "messages", "context_length_exceeded",
                     "context is 200 tokens")
        with pytest.raises(openai.BadRequestError, match="context is 200 tokens"):
            chat(url, messages=long)
        big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
        assert_error(post(url, big), 413, None, "request_too_large", "at most 4096")
        chunked = (b"x" * 1024 for _ in range(8))  # no Content-Length: counted as it arrives
        assert_error(post(url, content=chunked), 413, None, "request_too_large", "over 4096")
        assert chat(url).choices[0].message.content == "ok"
    assert len(engine.decoder.prompts) == 1  # nothing bad reached the decoder


def test_api_key_and_unknown_routes():
    with serving(scripted("ok"), api_key="s3cret") as url:
        reply = client(url, "s3cret").chat.completions.create(model="m", messages=USER)
        assert reply.choices[0].message.content == "ok"
        with pytest.raises(openai.AuthenticationError) as e:
            client(url, "wrong").chat.completions.create(model="m", messages=USER)
        assert e.value.body["code"] == "invalid_api_key"
        assert_error(post(url, {"model": "m", "messages": USER}), 401, None, "invalid_api_key", "Missing API key")
        assert_error(httpx.get(f"{url}/models", headers={"Authorization": "Bearer nope"}), 401, None,
                     "invalid_api_key", "Incorrect API key")
        assert_error(httpx.get(f"{url}/nothing"), 404, None, "not_found", "/v1/nothing")
        assert_error(httpx.get(f"{url}/chat/completions"), 405, None, None, "GET")


# ---- decoding: the tiny model's BatchDecoder ------------------------------------------------------

def test_n_choices_sampled_with_a_seed(tiny_lm):
    with serving(tiny_engine(tiny_lm)) as url:
        kw = dict(model="tiny", n=3, temperature=1.0, seed=11, max_tokens=12,
                  messages=[{"role": "user", "content": "Hi"}])
        a, b = client(url).chat.completions.create(**kw), client(url).chat.completions.create(**kw)
        streamed = list(client(url).chat.completions.create(stream=True, **kw))
    texts = [c.message.content for c in a.choices]
    assert [c.index for c in a.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert [c.message.content for c in b.choices] == texts  # the seed makes it repeatable
    assert ["".join(c.choices[0].delta.content or "" for c in streamed if c.choices[0].index == i)
            for i in range(3)] == texts
    assert 3 <= a.usage.completion_tokens <= 36 and a.usage.completion_tokens == b.usage.completion_tokens
    assert (a.usage.prompt_tokens_details.cached_tokens, b.usage.prompt_tokens_details.cached_tokens) == (
        0, a.usage.prompt_tokens - 1)  # the same prompt again: all but its last token were in a slot


def test_the_next_turn_of_a_conversation_reuses_the_cache_of_the_last(tiny_lm):
    """An agent sends the whole conversation every turn: the second turn finds the first turn's tokens in the
    slot that served it, says so in its usage and in /stats, and replies as a server with no cache would."""
    first = [{"role": "user", "content": "Hi there, how are you today?"}]
    kw = dict(model="tiny", max_tokens=8, temperature=0.0)
    with serving(tiny_engine(tiny_lm)) as url:
        a = client(url).chat.completions.create(messages=first, **kw)
        second = first + [{"role": "assistant", "content": a.choices[0].message.content},
                          {"role": "user", "content": "And tomorrow?"}]
        b = client(url).chat.completions.create(messages=second, **kw)
        stats = httpx.get(url.removesuffix("/v1") + "/stats").json()
    with serving(tiny_engine(tiny_lm)) as url:
        fresh = client(url).chat.completions.create(messages=second, **kw)
    assert a.usage.prompt_tokens_details.cached_tokens == 0
    assert 0 < b.usage.prompt_tokens_details.cached_tokens < b.usage.prompt_tokens
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0
    assert b.choices[0].message.content == fresh.choices[0].message.content
    assert stats == {"prompt_tokens": a.usage.prompt_tokens + b.usage.prompt_tokens,
                     "cached_tokens": b.usage.prompt_tokens_details.cached_tokens, "cache_hits": 1}


def test_greedy_replies_equal_chat_and_are_batched(tiny_lm):
    """Eight requests at once: each reply is the model's own greedy reply, and steps decoded several together."""
    engine = tiny_engine(tiny_lm, delay=0.005)
    questions = ["Hi", "What is 2+2?", "Tell me a story", "Why?", "Name a color", "Count", "Go", "Stop"]
    with serving(engine) as url:
        out = [None] * len(questions)

        def ask(i):
            r = client(url).chat.completions.create(model="tiny", max_tokens=10,
                                                    messages=[{"role": "user", "content": questions[i]}])
            out[i] = r.choices[0].message.content
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert out == [tiny_lm.chat([{"role": "user", "content": q}], max_new_tokens=10) for q in questions]
    assert engine.decoder.widest > 1


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_client_that_goes_away_frees_its_slot(tiny_lm):
    """Streamed and not: the client disconnects mid-reply, the sequence is cancelled, its slot is free."""
    engine = tiny_engine(tiny_lm, slots=2, delay=0.03, endless=True)
    decoder = engine.decoder
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 300}
    with serving(engine) as url:
        with httpx.stream("POST", f"{url}/chat/completions", json={**body, "stream": True}, timeout=30) as r:
            for line in r.iter_lines():  # up to the first piece of content, then hang up
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break
            assert decoder.busy  # still connected: the reply runs to 300 tokens, 30 ms a step (9 s)
        wait_until(lambda: not decoder.busy, seconds=2)
        assert sorted(decoder.free) == [0, 1]
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/chat/completions", json=body, timeout=0.5)
        wait_until(lambda: not decoder.busy, seconds=2)
        assert sorted(decoder.free) == [0, 1]
        r = client(url).chat.completions.create(model="tiny", max_tokens=5, messages=body["messages"])
        assert r.choices[0].finish_reason in ("stop", "length")  # and the server goes on


def test_a_failing_step_fails_its_requests_not_the_server():
    class Failing(ScriptedDecoder):
        def step(self):
            if len(self.prompts) == 1:
                raise RuntimeError("a bug")
            return super().step()
    tok = byte_tokenizer()
    with serving(Engine(Failing(tok, ["ok"]), tok, 4, 1024, "scripted")) as url:
        r = post(url, {"model": "m", "messages": USER})
        assert_error(r, 500, says="decoding failed: a bug")
        assert r.json()["error"]["type"] == "server_error"
        assert chat(url).choices[0].message.content == "ok"


def test_stopping_ends_the_replies_in_flight(tiny_lm):
    """What Ctrl-C does before the server closes: a stream in flight ends with an error event and [DONE],
    new requests get 503."""
    engine = tiny_engine(tiny_lm, delay=0.03, endless=True)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 300, "stream": True}
    with serving(engine) as url:
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as r:
            events = []
            for line in r.iter_lines():
                if line:
                    events.append(line)
                if len(events) == 3:
                    engine.stop()
        assert json.loads(events[-2][6:])["error"]["message"] == "the server is shutting down"
        assert events[-1] == "data: [DONE]" and len(events) < 100
        assert_error(post(url, {**body, "stream": False}), 503, says="shutting down")
    assert not engine.thread.is_alive() and not engine.decoder.busy


def test_load_16_clients_4_requests_each(tiny_lm):
    engine = tiny_engine(tiny_lm, slots=8)
    answers, errors = [], []
    with serving(engine) as url:
        def work(c):
            api = client(url)
            for r in range(4):
                try:
                    reply = api.chat.completions.create(model="tiny", max_tokens=8, stream=r % 2 == 1,
                                                        messages=[{"role": "user", "content": f"Client {c} asks {r}"}])
                    answers.append(list(reply) if r % 2 else reply)
                except Exception as e:  # noqa: BLE001 - every failure is counted, not raised in a thread
                    errors.append(e)
        threads = [threading.Thread(target=work, args=(c,)) for c in range(16)]
        [t.start() for t in threads]
        [t.join(timeout=300) for t in threads]
    assert errors == [] and len(answers) == 64
    assert engine.decoder.widest > 1 and not engine.decoder.busy


# ---- the real weights, the command line, the bench ------------------------------------------------

def test_the_real_model_knows_the_capital_of_france(real_model):
    engine = model_engine(real_model, slots=2, context=512, model_id="SmolLM2-135M-Instruct")
    with serving(engine) as url:
        r = client(url).chat.completions.create(model="SmolLM2-135M-Instruct", max_tokens=24, messages=[
            {"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in r.choices[0].message.content


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("cli") / "model")[0]


def start_server(args):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nanoagent.serve", "--port", "0", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # see test_cli
    line = proc.stderr.readline()
    while line.startswith("compiling"):
        line = proc.stderr.readline()
    match = re.search(r" at (http://127\.0\.0\.1:\d+/v1) ", line)
    assert match, line + proc.stderr.read()
    return proc, match.group(1)


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_the_command_line_serves_and_stops_cleanly(tiny_dir, sig, status):
    proc, url = start_server(["--model", str(tiny_dir), "--api-key", "k"])
    try:
        assert [m.id for m in client(url, "k").models.list()] == ["model"]
        r = client(url, "k").chat.completions.create(model="model", max_tokens=4, messages=[
            {"role": "user", "content": "Hi"}])
        assert r.choices[0].finish_reason in ("stop", "length")
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err, out) == (status, "stopped\n", "")


def test_command_line_errors_are_one_line(tiny_dir):
    def run(*args, pre=""):
        code = pre + "from nanoagent.serve import main; main(%r)" % list(args)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    r = run("--slots", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--slots" in r.stderr
    r = run("--model", str(tiny_dir / "missing"), "--port", "0")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("error:")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        r = run("--model", str(tiny_dir), "--port", str(taken.getsockname()[1]))
    assert r.returncode == 1 and r.stderr.startswith("error: cannot listen on 127.0.0.1:")
    r = run("--port", "0", pre="import sys; sys.modules['uvicorn'] = None; ")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "pip install -e '.[serve]'" in r.stderr


def test_bench_serve_prints_rate_and_latency(tiny_long):  # a context that holds the tools prompt
    r = subprocess.run([sys.executable, "-m", "nanoagent.bench", "serve", "--model", str(tiny_long), "--clients", "3",
                        "--requests", "2", "--max-tokens", "4", "--turns", "2", "--joins", "2", "--compare-decoder"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert re.search(r"6 requests from 3 clients .* requests/s", r.stdout), r.stdout
    assert re.search(r"latency: p50 [\d.]+ s, p95 [\d.]+ s", r.stdout), r.stdout
    turns = re.search(r"agent conversation, 2 turns with 4 tools: time to the first token \d+ ms, \d+ ms; "
                      r"turns 2-2 \(median\) [\d.]+x turn 1; prompt tokens found in the cache \d+, (\d+)", r.stdout)
    assert turns and int(turns.group(1)) > 500, r.stdout  # the second turn found the first (507 tokens and more)
    joins = re.search(r"while 2 prompts of (\d+)-(\d+) tokens went in .*: gaps between its tokens p50 \d+ ms, "
                      r"p99 \d+ ms, max \d+ ms; one decoding step alone \d+ ms, a (\d+)-token prompt alone \d+ ms to "
                      r"its first token; 256 tokens of it and one step", r.stdout)
    assert joins and 700 < int(joins.group(1)) <= 900 and joins.group(1) == joins.group(3), r.stdout  # as long
    served = re.search(
        r"the decoder alone, 8 sequences of 64 tokens .*: ([\d.]+) tokens/s; the server's ([\d.]+) new tokens/s are "
        r"([\d.]+)x that", r.stdout)
    assert served and abs(float(served.group(2)) / float(served.group(1)) - float(served.group(3))) < 0.01, r.stdout


def test_the_warm_up_decodes_on_the_decoding_thread(tiny_lm):
    """Numba's OpenMP keeps a team of workers per thread that starts parallel loops: a warm-up on any other
    thread leaves a second team that slowed every later step (Engine.warm_up)."""
    engine = model_engine(tiny_lm, slots=2, context=64, model_id="tiny")
    threads, step = set(), engine.decoder.step

    def recording_step():
        threads.add(threading.current_thread().name)
        return step()
    engine.decoder.step = recording_step
    try:
        engine.warm_up()
        assert threads == {"decoder"} and not engine.decoder.busy
    finally:
        engine.close()
