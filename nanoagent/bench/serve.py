"""`python -m nanoagent.bench serve`: the server under concurrent clients, and under load and faults.

By default it times `python -m nanoagent.serve`: `clients` threads each send `requests` greedy chat
requests (requests/s, p50/p95 latency), then an agent's conversation is held (time to each turn's
first token, prompt tokens found in the cache).

With `--minutes N` it soaks the server instead. For N minutes the clients send a mix of valid
requests, streamed ones, ones they hang up on mid-reply and malformed ones. It reports how many of
each kind went out, every answer but the one expected (200 for a valid request, the 4xx each
malformed one asks for), the server's resident memory over time (the median of the first minute
against that of the last; of the first and last third in a run under three minutes), and whether a
sample of the greedy replies comes back the same when its request is sent again with nothing else
running. The last line is the verdict.

The server runs in a process of its own on a free port of 127.0.0.1, behind an API key made for the
run: nothing leaves the machine.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from .compare import batch_worker
from ..data import own_tools
from ..generate import number
from ..serve import DEFAULT_MAX_BODY
from ..threads import blas_line

LOOPBACK = "127.0.0.1"

SERVE_PROMPTS = ["What is the capital of France?", "Name three colors.", "Write a haiku about the sea.",
                 "What is 12 times 12?", "Give me a tip for learning to cook.", "Why is the sky blue?"]

# An agent's conversation: the project's four tools (a 507-token prompt with the first question), and the
# questions of its turns; every request sends the whole conversation so far, as agent frameworks do.
AGENT_TOOLS = [own_tools.CALCULATOR, own_tools.GET_CURRENT_TIME, own_tools.WEB_SEARCH, own_tools.VISIT_WEBPAGE]
AGENT_TURNS = ["What time is it in Tokyo?", "And what is 17 times 23?", "Who wrote Pride and Prejudice?",
               "Summarise what we talked about.", "Thanks! One more: what is the capital of Peru?"]
OFFERED = [{"type": "function", "function": t} for t in AGENT_TOOLS]


def add_serve_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default=None)
    ap.add_argument("--int8", action="store_true", help="int8 weights (quantized while loading a float folder)")
    ap.add_argument("--clients", type=number(int, 1), default=16, help="clients sending at once (default 16)")
    ap.add_argument("--requests", type=number(int, 1), default=16,
                    help="requests each client sends, one after another (default 16: long enough that the first "
                         "wave and the last replies, slots filling and emptying, are a small part of the run)")
    ap.add_argument("--max-tokens", type=number(int, 1), default=32, help="new tokens per reply at most (default 32)")
    ap.add_argument("--slots", type=number(int, 1), default=8, help="the server's --slots (default 8)")
    ap.add_argument("--turns", type=number(int, 0), default=5, help="then an agent's conversation of this many turns "
                    "with a 507-token tools prompt, each turn sending the earlier ones: time to its first token "
                    "(default 5; 0: none)")
    ap.add_argument("--joins", type=number(int, 0), default=4,
                    help="then a streamed reply watched while this many long prompts join: the gaps between its "
                         "tokens beside one decoding step and one chunk of such a prompt alone (default 4; 0: none)")
    ap.add_argument("--compare-decoder", action="store_true",
                    help="then the decoder alone on --slots sequences (bench generate --batch's figure), in a "
                         "process of its own once the server has stopped: the server's share of it")
    ap.add_argument("--minutes", type=number(float, 0, open_low=True), default=None,
                    help="soak the server instead for this many minutes (fractions allowed): valid, streamed, "
                         "hung-up and malformed requests from --clients threads; counts, unexpected statuses, "
                         "the server's RSS over time, greedy replies replayed alone; a verdict")
    ap.add_argument("--replays", type=number(int, 0), default=20,
                    help="with --minutes: greedy replies sent again alone at the end (default 20)")
    ap.add_argument("--max-rss-growth", type=number(float, 1), default=1.10,
                    help="with --minutes: the most the last minute's median RSS may be over the first's (default 1.10)")


def bench_serve(args) -> None:
    """`bench serve`: the rate and latency figures, or with --minutes the soak."""
    server = start_server(args)
    try:
        if args.minutes is not None:
            return soak(server, args)
        served = rates(server, args)
    finally:
        server.stop()
    if args.compare_decoder:
        compare_decoder(args, served)


# ---- the server in a process of its own ----------------------------------------------------------

@dataclass
class Server:
    """`python -m nanoagent.serve` in a process of its own: its address, API key, context, and its
    stderr after the line saying where it serves (the last lines, and how many held a traceback)."""
    process: subprocess.Popen
    port: int
    key: str
    context: int  # positions per request, prompt and reply
    said: deque = field(default_factory=lambda: deque(maxlen=100))
    lines: int = 0  # lines it wrote there
    tracebacks: int = 0

    def connect(self, timeout: float = 600.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout)

    def headers(self) -> dict:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"}

    def listen(self) -> None:
        """Read its stderr to the end (on a thread of its own), so the pipe never fills."""
        for line in self.process.stderr:
            self.said.append(line)
            self.lines += 1
            self.tracebacks += line.startswith("Traceback")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def start_server(args) -> Server:
    """Start the server on a free loopback port with a fresh API key -> Server, once it says it serves."""
    key = secrets.token_hex(16)
    cmd = [sys.executable, "-m", "nanoagent.serve", "--host", LOOPBACK, "--port", "0", "--slots", str(args.slots)] + \
        (["--model", args.model] if args.model else []) + (["--int8"] if args.int8 else [])
    print(f"starting the server: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    process = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "NANOAGENT_API_KEY": key})
    said = []
    for line in process.stderr:
        said.append(line)
        if (found := re.search(r" at http://127\.0\.0\.1:(\d+)/v1 \(\d+ slots of (\d+) tokens", line)) is not None:
            break
    else:
        process.wait()
        raise OSError("the server did not start: " + "".join(said[-5:]).strip())
    server = Server(process, int(found.group(1)), key, int(found.group(2)))
    threading.Thread(target=server.listen, daemon=True).start()
    return server


# ---- requests and replies -------------------------------------------------------------------------

def exchange(server: Server, body: dict) -> tuple[tuple | None, str | None]:
    """Send one chat request and read its reply to the end -> ((content, tool calls, finish_reason), None),
    or (None, what was wrong: a status but 200, a malformed body or stream)."""
    conn = server.connect()
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), server.headers())
        response = conn.getresponse()
        if response.status != 200:
            return None, f"status {response.status}: {response.read()[:200]!r}"
        return read_stream(response) if body.get("stream") else read_whole(response)
    finally:
        conn.close()


def calls_of(tool_calls) -> list[tuple[str, str]]:
    """OpenAI tool calls -> [(name, arguments as JSON text)], their random ids left out."""
    return [(c["function"]["name"], c["function"]["arguments"]) for c in tool_calls or []]


def read_whole(response) -> tuple[tuple | None, str | None]:
    choice = json.loads(response.read())["choices"][0]
    return (choice["message"]["content"], calls_of(choice["message"].get("tool_calls")), choice["finish_reason"]), None


def read_stream(response) -> tuple[tuple | None, str | None]:
    """A streamed reply's events -> its (content, tool calls, finish_reason), or what was wrong with them:
    an error event, a line that is not an event, no finish_reason, usage or `data: [DONE]` at the end."""
    content, calls, finish, usage, done = "", [], None, False, False
    for line in response:
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        if done or not line.startswith(b"data: "):
            return None, f"not an event where one may be: {line[:80]!r}"
        if line == b"data: [DONE]":
            done = True
            continue
        event = json.loads(line[6:])
        if "error" in event:
            return None, f"an error event: {event['error'].get('message')}"
        if not event["choices"]:
            usage = "usage" in event
            continue
        choice = event["choices"][0]
        content += choice["delta"].get("content") or ""
        calls += calls_of(choice["delta"].get("tool_calls"))
        finish = choice["finish_reason"] or finish
    missing = "a finish_reason" if not finish else "usage" if not usage else "[DONE]" if not done else None
    if missing:
        return None, f"the stream ended without {missing}"
    return (content, calls, finish), None


# ---- rate and latency ------------------------------------------------------------------------------

def rates(server: Server, args) -> float:
    """Requests/s and latency of `clients` threads each sending `requests` greedy requests one after
    another, then an agent's conversation and the gaps of a reply while long prompts join -> the new
    tokens/s of the clients' requests."""
    ask(server, 0, args.max_tokens)  # warm-up: the first request's one-off costs
    latencies, tokens, failures = [], [], []

    def client(c):
        for r in range(args.requests):
            try:
                seconds, n = ask(server, c * args.requests + r, args.max_tokens)
                latencies.append(seconds)
                tokens.append(n)
            except (OSError, ValueError) as e:
                failures.append(e)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    turns = conversation(server, args.turns, args.max_tokens) if args.turns else []
    joined = None  # the watched reply must outlast the joins: a fast model's 160 tokens can end before they are sent
    for max_tokens in (160, 640, 2560) if args.joins else ():
        joined = joining(server, args.joins, max_tokens=max_tokens)
        if len(joined["gaps"]) >= 2:
            break
    total = args.clients * args.requests
    print(f"model: {args.model or 'SmolLM2-135M-Instruct'}, {'int8' if args.int8 else 'float32'}, "
          f"{args.slots} slots; {blas_line()}")
    print(f"{total} requests from {args.clients} clients ({args.requests} each, up to {args.max_tokens} new tokens, "
          f"greedy): {len(latencies) / wall:.2f} requests/s, {sum(tokens) / wall:.1f} new tokens/s, "
          f"{len(failures)} failed, {wall:.1f} s")
    if latencies:
        p50, p95 = (statistics.quantiles(latencies, n=100, method="inclusive")[k] for k in (49, 94))
        print(f"latency: p50 {p50:.2f} s, p95 {p95:.2f} s (min {min(latencies):.2f}, max {max(latencies):.2f})")
    if turns:
        later = statistics.median(t for t, _ in turns[1:]) if len(turns) > 1 else float("nan")
        print(f"agent conversation, {len(turns)} turns with {len(AGENT_TOOLS)} tools: time to the first token "
              + ", ".join(f"{t * 1000:.0f} ms" for t, _ in turns) + f"; turns 2-{len(turns)} (median) "
              f"{later / turns[0][0]:.2f}x turn 1; prompt tokens found in the cache "
              + ", ".join(str(c) for _, c in turns))
    if joined:
        print_joining(joined, args.joins)
    if failures:
        sys.exit(f"error: {len(failures)} of {total} requests failed, the first: {failures[0]}")
    return sum(tokens) / wall


def conversation(server: Server, turns: int, max_tokens: int) -> list[tuple[float, int]]:
    """`turns` turns of an agent's conversation, streamed -> [(seconds to the first token, prompt tokens the
    server found in its cache)] a turn."""
    messages, out = [], []
    for k in range(turns):
        messages.append({"role": "user", "content": AGENT_TURNS[k % len(AGENT_TURNS)]})
        times, usage, text = stream_times(server, {"model": "bench", "max_tokens": max_tokens, "messages": messages,
                                                   "tools": OFFERED})
        first = times[1] if len(times) > 1 else time.perf_counter()  # no piece at all: the whole request
        out.append((first - times[0], usage["prompt_tokens_details"]["cached_tokens"]))
        messages.append({"role": "assistant", "content": text or "(a tool call)"})
    return out


# A reply long enough to watch while other prompts go in, and the text those prompts are made of.
STORY = "Write a long story about a lighthouse keeper and the night of the great storm."
REPORT = "The committee met on a grey morning to read the year's reports, one section at a time, and took notes. "


def stream_times(server: Server, body: dict, started: threading.Event | None = None,
                 after: int = 0) -> tuple[list[float], dict, str]:
    """Stream one greedy reply -> (the request's time, then each piece's arrival (text or a tool call), as
    time.perf_counter gives them; its usage; its text). `started` is set once `after` pieces have arrived."""
    conn = server.connect()
    times, usage, text = [time.perf_counter()], {}, ""
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True, "temperature": 0,
                     "stream_options": {"include_usage": True}}), server.headers())
        response = conn.getresponse()
        if response.status != 200:
            raise OSError(f"status {response.status}: {response.read()[:200]!r}")
        for line in response:
            if not line.startswith(b"data: {"):
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            delta = event["choices"][0]["delta"] if event["choices"] else {}
            if delta.get("content") or delta.get("tool_calls"):
                times.append(time.perf_counter())
                text += delta.get("content") or ""
                if started is not None and len(times) == after + 1:
                    started.set()
    finally:
        conn.close()
        if started is not None:
            started.set()
    return times, usage, text


def long_request(i: int, repeats: int) -> dict:
    """A request with a long prompt (`repeats` times the same sentence, its first words its own so that no
    slot holds its prefix) and a one-token reply."""
    text = f"Report {i} of the archive, to be summarised in three lines. " + REPORT * repeats
    return {"model": "bench", "max_tokens": 1, "messages": [{"role": "user", "content": text}]}


def joining(server: Server, joins: int, tokens: int = 900, chunk: int = 256, max_tokens: int = 160) -> dict:
    """The gaps between the tokens of a streamed reply while `joins` prompts of about `tokens` tokens go in
    (each a request of its own, sent together once the reply has made 8 tokens; the gaps that overlap
    their going in), beside the same reply's gaps alone and the time to the first token of one such
    prompt alone, per `chunk` tokens (the server's prefill chunk, 256): a chunk deep in a long prompt
    attends to more positions than a short prompt's one chunk does. A reply of `max_tokens` that ends before
    the prompts are in leaves fewer than two gaps: the caller asks again with a longer one."""
    # prompt tokens with 1 and 6 repeats: few + (k - 1) * (many - few) / 5 with k
    few, many = (stream_times(server, long_request(-1, k))[1]["prompt_tokens"] for k in (1, 6))

    def repeats(n: int) -> int:
        """The most repeats of the sentence that keep a prompt within n tokens."""
        return max(1, 1 + int((n - few) * 5 / (many - few)))

    story = {"model": "bench", "max_tokens": max_tokens, "messages": [{"role": "user", "content": STORY}]}
    alone = stream_times(server, story)[0]
    lone, usage, _ = stream_times(server, long_request(joins, repeats(tokens)))  # as long as the joiners
    started, result, sent = threading.Event(), {}, []

    def watch():
        result["times"] = stream_times(server, story, started, after=8)[0]

    def join(i):
        sent.append(stream_times(server, long_request(i, repeats(tokens)))[1]["prompt_tokens"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    started.wait()
    t_join = time.perf_counter()
    joiners = [threading.Thread(target=join, args=(i,)) for i in range(joins)]
    for t in joiners:
        t.start()
    for t in joiners:
        t.join()
    t_end = time.perf_counter()
    watcher.join()
    times = result["times"][1:]
    return {"alone": [b - a for a, b in zip(alone[1:], alone[2:])],
            "gaps": [b - a for a, b in zip(times, times[1:]) if a < t_end and b > t_join],
            "lone_ms": (lone[1] - lone[0]) * 1000, "lone_tokens": usage["prompt_tokens"], "chunk": chunk,
            "prompt_tokens": sent, "joined_s": t_end - t_join, "reply_s": times[-1] - t_join}


def print_joining(j: dict, joins: int) -> None:
    gaps = sorted(g * 1000 for g in j["gaps"])
    if len(gaps) < 2:
        print(f"a streamed reply while {joins} long prompts joined: too few tokens to time")
        return
    p50, p99 = (statistics.quantiles(gaps, n=100, method="inclusive")[k] for k in (49, 98))
    step = statistics.median(j["alone"]) * 1000
    bound = j["lone_ms"] * j["chunk"] / j["lone_tokens"] + step
    print(f"a streamed reply while {joins} prompts of {min(j['prompt_tokens'])}-{max(j['prompt_tokens'])} tokens "
          f"went in ({j['joined_s']:.1f} s of the reply's last {j['reply_s']:.1f} s): gaps between its "
          f"tokens p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {gaps[-1]:.0f} ms; one decoding step alone {step:.0f} ms, "
          f"a {j['lone_tokens']}-token prompt alone {j['lone_ms']:.0f} ms to its first token; "
          f"{j['chunk']} tokens of it and one step {bound:.0f} ms: p50 {p50 / bound:.2f}x, "
          f"the longest gap {gaps[-1] / bound:.2f}x that")


def compare_decoder(args, served: float) -> None:
    """The decoder alone on `slots` sequences, as `bench generate --batch` times it (prefill excluded), in a
    process of its own: the server's new tokens/s as a share of it."""
    print(f"the decoder alone on {args.slots} sequences", file=sys.stderr, flush=True)
    alone = statistics.median(batch_worker(args.model, "int8" if args.int8 else "float32", args.slots, 64, 3)["rates"])
    print(f"the decoder alone, {args.slots} sequences of 64 tokens (bench generate --batch {args.slots}, median of 3): "
          f"{alone:.1f} tokens/s; the server's {served:.1f} new tokens/s are {served / alone:.2f}x that")


def ask(server: Server, i: int, max_tokens: int) -> tuple[float, int]:
    """One chat request -> (seconds until the whole reply, its new tokens); OSError unless it got a reply."""
    body = json.dumps({"model": "bench", "max_tokens": max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": SERVE_PROMPTS[i % len(SERVE_PROMPTS)]}]})
    conn = server.connect()
    try:
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, server.headers())
        response = conn.getresponse()
        reply = json.loads(response.read())
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
    if response.status != 200:
        raise OSError(f"status {response.status}: {reply.get('error', {}).get('message')}")
    return seconds, reply["usage"]["completion_tokens"]


# ---- the soak: N minutes of load and faults --------------------------------------------------------

KINDS = {"valid": 4, "streamed": 3, "cancelled": 2, "malformed": 2}  # the soak's kinds of request, by weight
QUESTIONS = SERVE_PROMPTS + AGENT_TURNS
KEPT_PROBLEMS = 20  # unexpected answers kept to print; all are counted


class Malformed(NamedTuple):
    """A request the server must refuse, and the status it must refuse it with."""
    what: str
    status: int
    body: bytes = b""
    method: str = "POST"
    path: str = "/v1/chat/completions"
    headers: dict | None = None  # over the right key and JSON's content type


def malformed_requests(server: Server, slots: int) -> list[Malformed]:
    """The soak's malformed requests: bodies that are not JSON or break the API's rules (400), a body said to
    be too large (413), a wrong key (401), no such route (404) or method (405)."""
    user = [{"role": "user", "content": "Hi"}]

    def body(**fields) -> bytes:
        return json.dumps({"model": "soak", "messages": user, **fields}).encode()
    too_long = [{"role": "user", "content": "word " * (server.context + 16)}]  # a token a word at least
    return [
        Malformed("not JSON", 400, b'{"model": "soak", "messages": ['),
        Malformed("not UTF-8", 400, b"\xff\xfe"),
        Malformed("a list, not an object", 400, b"[1, 2]"),
        Malformed("no model", 400, json.dumps({"messages": user}).encode()),
        Malformed("no messages", 400, body(messages=[])),
        Malformed("messages a string", 400, body(messages="Hi")),
        Malformed("content a number", 400, body(messages=[{"role": "user", "content": 5}])),
        Malformed("an unknown role", 400, body(messages=[{"role": "robot", "content": "Hi"}])),
        Malformed("temperature a string", 400, body(temperature="hot")),
        Malformed("max_tokens 0", 400, body(max_tokens=0)),
        Malformed("stream a string", 400, body(stream="yes")),
        Malformed("n over the slots", 400, body(n=slots + 1)),
        Malformed("an unknown tool_choice", 400, body(tools=OFFERED, tool_choice="always")),
        Malformed("tool_choice naming no tool offered", 400,
                  body(tools=OFFERED, tool_choice={"type": "function", "function": {"name": "nope"}})),
        Malformed("tools an object", 400, body(tools={"name": "calculator"})),
        Malformed("logprobs", 400, body(logprobs=True)),
        Malformed("a prompt over the context", 400, body(messages=too_long)),
        Malformed("a body said to be over the limit", 413, body(),
                  headers={"Content-Length": str(DEFAULT_MAX_BODY + 1)}),  # answered before it is read
        Malformed("a wrong API key", 401, body(), headers={"Authorization": "Bearer wrong"}),
        Malformed("an unknown route", 404, body(), path="/v1/nothing"),
        Malformed("GET on chat completions", 405, method="GET"),
    ]


def greedy_body(rng: random.Random, max_tokens: int, stream: bool) -> dict:
    """A valid greedy request: one of the bench's questions, the project's four tools offered or not, a
    stop string now and then, a reply of a quarter of `max_tokens` up to all of it."""
    body = {"model": "soak", "temperature": 0, "max_tokens": rng.randint(max(1, max_tokens // 4), max_tokens),
            "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}]}
    if rng.random() < 0.5:
        body["tools"] = OFFERED
    if rng.random() < 0.2:
        body["stop"] = rng.choice([["\n\n"], [".", "!"]])
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


class Soak:
    """One soak's tallies: the clients' requests by kind and what came back unexpected, the server's RSS
    samples, and a sample of the greedy replies with what they were when replayed alone."""

    def __init__(self, server: Server, args):
        self.server, self.args = server, args
        self.refusals = malformed_requests(server, args.slots)
        self.lock = threading.Lock()
        self.sent = Counter()  # kind -> requests sent
        self.refused = Counter()  # status -> malformed requests refused with it, as expected
        self.problems: list[str] = []  # the first KEPT_PROBLEMS unexpected answers
        self.unexpected = 0
        self.sample: list[tuple[dict, tuple]] = []  # `replays` greedy (request, reply), drawn evenly from all
        self.greedy = 0  # greedy replies seen
        self.rng = random.Random(0)  # the sample's draws
        self.rss: list[tuple[float, float]] = []  # (seconds into the load, the server's RSS in MiB)
        self.same, self.differ = 0, []  # replays identical; what the others were

    # -- the clients: each sends requests of every kind until the deadline

    def client(self, c: int, deadline: float) -> None:
        rng = random.Random(1 + c)  # each client its own sequence, the same each run
        while time.monotonic() < deadline:
            kind = rng.choices(list(KINDS), list(KINDS.values()))[0]
            try:
                problem = getattr(self, kind)(rng)  # the method of that name: None, or what was unexpected
            except (OSError, ValueError, KeyError, TypeError) as e:  # refused connection, a body not as promised
                problem = f"{type(e).__name__}: {e}"
            with self.lock:
                self.sent[kind] += 1
                if problem is not None:
                    self.unexpected += 1
                    if len(self.problems) < KEPT_PROBLEMS:
                        self.problems.append(f"{kind}: {problem}")

    def valid(self, rng, stream=False) -> str | None:
        body = greedy_body(rng, self.args.max_tokens, stream)
        reply, problem = exchange(self.server, body)
        if reply is not None:
            self.keep(body, reply)
        return problem

    def streamed(self, rng) -> str | None:
        return self.valid(rng, stream=True)

    def cancelled(self, rng) -> str | None:
        """A request for a long reply that the client hangs up on: a stream after a few of its events, or a
        whole reply before it comes."""
        stream = rng.random() < 0.7
        body = greedy_body(rng, 4 * self.args.max_tokens, stream)
        conn = self.server.connect()
        try:
            conn.request("POST", "/v1/chat/completions", json.dumps(body), self.server.headers())
            if not stream:
                time.sleep(rng.uniform(0.0, 0.2))
                return None
            response = conn.getresponse()
            if response.status != 200:
                return f"status {response.status}: {response.read()[:200]!r}"
            for _ in range(rng.randint(1, 4)):
                response.readline()
            return None
        finally:
            conn.close()

    def malformed(self, rng) -> str | None:
        m = rng.choice(self.refusals)
        status, text = refuse(self.server, m)
        error = json.loads(text).get("error") if text.startswith(b"{") else None
        if status != m.status:
            return f"{m.what}: status {status}, expected {m.status}: {text[:200]!r}"
        if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
            return f"{m.what}: not in OpenAI's error shape: {text[:200]!r}"
        with self.lock:
            self.refused[m.status] += 1
        return None

    def keep(self, body: dict, reply: tuple) -> None:
        """Keep a greedy request and its reply in the sample with the same chance as every other."""
        with self.lock:
            self.greedy += 1
            if len(self.sample) < self.args.replays:
                self.sample.append((body, reply))
            elif (j := self.rng.randrange(self.greedy)) < self.args.replays:
                self.sample[j] = (body, reply)

    # -- around the load

    def warm_up(self) -> None:
        """Every slot serves the longest request of the mix at once, and every malformed request is sent,
        so that the first minute's memory is the warmed-up server's; OSError if any of it fails."""
        bodies = [{**greedy_body(random.Random(s), self.args.max_tokens, False), "tools": OFFERED,
                   "max_tokens": 4 * self.args.max_tokens} for s in range(self.args.slots)]
        problems = []
        threads = [threading.Thread(target=lambda b: problems.append(exchange(self.server, b)[1]), args=(b,),
                                    daemon=True) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        problems += [f"{m.what}: status {status}" for m in self.refusals
                     if (status := refuse(self.server, m)[0]) != m.status]
        if any(problems):
            raise OSError(f"the soak's warm-up failed: {next(p for p in problems if p)}")

    def sample_rss(self, stop: threading.Event, every: float) -> None:
        """Sample the server's RSS every `every` seconds until `stop` is set."""
        t0 = time.monotonic()
        while not stop.wait(every):
            if (rss := rss_mib(self.server.process.pid)) is not None:
                self.rss.append((time.monotonic() - t0, rss))

    def replay(self) -> None:
        """Send each sampled greedy request again, alone, and compare its reply with the one under load."""
        for body, reply in self.sample:
            again, problem = exchange(self.server, body)
            if again == reply:
                self.same += 1
            else:
                self.differ.append(f"{json.dumps(body['messages'][0]['content'])}: {reply} under load, "
                                   f"{again if again is not None else problem} alone")


def refuse(server: Server, m: Malformed) -> tuple[int, bytes]:
    """Send a malformed request -> (the status, the body) it was answered with."""
    conn = server.connect()
    try:
        conn.request(m.method, m.path, m.body, {**server.headers(), **(m.headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def rss_mib(pid: int) -> float | None:
    """A process's resident set size in MiB (from /proc on Linux, else `ps`), or None if it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    except OSError:  # no `ps` either
        return None
    return int(out) / 1024 if out.isdigit() else None


def soak(server: Server, args) -> None:
    """`bench serve --minutes N`: the warm-up, N minutes of the mix from `clients` threads with the server's
    RSS sampled, the replays, the report and its verdict."""
    seconds, run = args.minutes * 60, Soak(server, args)
    run.warm_up()
    print(f"soaking the server for {seconds:.0f} s", file=sys.stderr, flush=True)
    stop, every = threading.Event(), min(1.0, seconds / 30)
    sampler = threading.Thread(target=run.sample_rss, args=(stop, every), daemon=True)
    sampler.start()
    t0 = time.monotonic()
    clients = [threading.Thread(target=run.client, args=(c, t0 + seconds), daemon=True)  # Ctrl-C ends them
               for c in range(args.clients)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    wall = time.monotonic() - t0
    stop.set()
    sampler.join()
    print(f"replaying {len(run.sample)} greedy requests alone", file=sys.stderr, flush=True)
    run.replay()
    report(run, wall, every, alive=server.process.poll() is None)


def report(run: Soak, wall: float, every: float, alive: bool) -> None:
    """Print the soak's figures and its verdict; exit with status 1 if it failed."""
    server, args = run.server, run.args
    total = sum(run.sent.values())
    print(f"model: {args.model or 'SmolLM2-135M-Instruct'}, {'int8' if args.int8 else 'float32'}, {args.slots} slots "
          f"of {server.context} tokens; {blas_line()}")
    print(f"soak: {args.minutes:g} minutes ({wall:.0f} s), {args.clients} clients on {LOOPBACK}:{server.port}, "
          f"up to {args.max_tokens} new tokens a reply ({4 * args.max_tokens} for those hung up on), greedy")
    print(f"sent: {total} requests ({total / wall:.1f}/s): " + ", ".join(f"{k} {run.sent[k]}" for k in KINDS))
    print("malformed, refused as expected: "
          + (", ".join(f"{status} x{n}" for status, n in sorted(run.refused.items())) or "none"))
    print(f"unexpected: {run.unexpected}" + "".join(f"\n  {p}" for p in run.problems))
    log = list(server.said)[-(20 if server.tracebacks else 3):]  # a traceback whole, else a taste of what it said
    print(f"server log: {server.lines} lines, {server.tracebacks} tracebacks"
          + "".join(f"\n  {line.rstrip()}" for line in log))
    window = min(60.0, wall / 3)  # a minute, or a third of a shorter run
    first, last = [r for t, r in run.rss if t <= window], [r for t, r in run.rss if t >= wall - window]
    growth = statistics.median(last) / statistics.median(first) if first and last else float("nan")
    if first and last:
        print(f"server RSS (MiB, every {every:g} s): first {window:.0f} s median {statistics.median(first):.1f}, "
              f"last {window:.0f} s median {statistics.median(last):.1f}: {growth:.3f}x "
              f"(min {min(r for _, r in run.rss):.1f}, max {max(r for _, r in run.rss):.1f}, {len(run.rss)} samples)")
    else:
        print("server RSS: too few samples for a first and a last window")
    replayed = run.same + len(run.differ)
    print(f"replayed alone: {run.same} of {replayed} greedy replies identical"
          + "".join(f"\n  {d}" for d in run.differ[:5]))
    failed = [what for what, bad in [
        (f"{run.unexpected} unexpected answers", run.unexpected),
        (f"{server.tracebacks} tracebacks in the server's log", server.tracebacks),
        ("the server died", not alive),
        (f"RSS grew {growth:.3f}x, over the {args.max_rss_growth:g}x allowed" if first and last
         else "too few RSS samples", not growth <= args.max_rss_growth),
        (f"{len(run.differ)} of {replayed} replays differ", run.differ)] if bad]
    if failed:
        print("verdict: FAIL: " + "; ".join(failed), flush=True)
        sys.exit("error: the soak failed (see its verdict)")
    print(f"verdict: pass: {total} requests, nothing unexpected, RSS {growth:.3f}x (at most "
          f"{args.max_rss_growth:g}x), {run.same} of {replayed} replays identical")
