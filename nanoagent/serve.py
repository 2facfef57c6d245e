"""`python -m nanoagent.serve`: an OpenAI-compatible chat-completions server over batched decoding.

    POST /v1/chat/completions   messages, tools, tool_choice, stream, n, stop, max_tokens, temperature, top_p, seed
    GET  /v1/models
    GET  /stats                 prompt tokens so far, those found in a slot's cache, and the prompts that found some

One thread decodes: it owns a BatchDecoder (batch.py), and every request hands it a job (the
prompt's sequences) and waits on an asyncio queue that the thread feeds after each step. So
requests that arrive together are decoded together, each sequence joining and leaving the
batch on its own, and the event loop only parses, renders and writes. Waiting prompts go in
together, a chunk of tokens a step in one forward beside the others' decoding steps (so a long one
holds them up one chunk at a time), and a prompt that starts with what a finished
request's slot holds (an agent's conversation, sent whole every turn) prefills only the rest;
`usage.prompt_tokens_details.cached_tokens` says how many it found. A reply holding
`<tool_call>[...]</tool_call>` comes back as OpenAI `tool_calls`; streamed, its text is sent
up to the opening tag and the calls once they are complete.

The web stack (Starlette, uvicorn) is the optional `serve` extra: `pip install -e '.[serve]'`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .batch import BatchDecoder
from .checkpoint import WeightsError
from .generate import CommandLine, kernels_cached, load, number
from .openai_api import (APIError, ChatRequest, Reply, bad, check_key, completion, completion_head, encode_prompt,
                         model_card, read_chat_request, shutting_down, sse)
from .sampling import SamplingParams
from .tokenizer import Tokenizer

try:  # the optional `serve` extra: imported here so that main() can say how to install it
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route
    WEB_STACK_MISSING = None
except ImportError as e:
    WEB_STACK_MISSING = e.name or "starlette"

log = logging.getLogger("nanoagent.serve")
DEFAULT_CONTEXT = 4096  # KV cache positions per slot unless --context says otherwise
DEFAULT_MAX_BODY = 1 << 20  # bytes


# ---- the decoding thread --------------------------------------------------------------------

@dataclass(eq=False)
class Job:
    """One request's sequences in the decoding thread, and how their tokens get back to it: `deliver`
    is called on the decoding thread with [(index, token or None, finish_reason or None)] or an error."""
    prompt: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    n: int
    deliver: Callable
    seqs: list = field(default_factory=list)


class Engine:
    """The one decoding thread: it alone touches the decoder (a BatchDecoder, or any object with its
    submit/step/cancel/busy); the event loop hands it jobs and cancellations through a queue."""

    def __init__(self, decoder, tokenizer: Tokenizer, slots: int, context: int, model_id: str):
        self.decoder, self.tokenizer, self.model_id = decoder, tokenizer, model_id
        self.slots, self.context = slots, context  # sequences decoded together; positions each
        self.commands: queue.SimpleQueue = queue.SimpleQueue()  # ("submit" | "cancel", job, indices)
        self.wake = threading.Event()
        self.jobs: dict[int, tuple[Job, int]] = {}  # id(sequence) -> (its job, its choice index)
        self.thread = threading.Thread(target=self._run, name="decoder", daemon=True)
        self.closing = False

    def start(self) -> None:
        if not self.thread.is_alive() and not self.closing:
            self.thread.start()

    def warm_up(self) -> None:
        """Start the decoding thread and compile (or load) the prefill and batched-decoding kernels on it, by
        decoding two tokens there; return when they are decoded. On that thread and no other: Numba's OpenMP
        keeps a team of workers for each thread that starts a parallel loop, and with a second team left
        from a warm-up on the main thread every batched step of the decoding thread took 45% longer here
        (39 against 27 ms for 8 rows: bench serve gave 0.42-0.51x its decoder alone, 0.55-0.66x since)."""
        done = threading.Event()
        self.start()
        self.submit(Job([0, 0], 2, SamplingParams(), 1, lambda items: done.set() if isinstance(items, Exception)
                        or any(finish for _, _, finish in items) else None))
        done.wait()

    def stop(self) -> None:
        """Stop decoding after this step: the jobs in flight end with an error, new ones are refused.
        It only sets a flag, so a signal handler may call it."""
        self.closing = True

    def close(self) -> None:
        self.stop()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)

    def submit(self, job: Job) -> None:
        if self.closing:
            raise shutting_down()
        self.commands.put(("submit", job, None))
        self.wake.set()

    def cancel(self, job: Job, indices=None) -> None:
        """Stop the job's sequences (or those of the given choice indices): their slots free up."""
        self.commands.put(("cancel", job, indices))
        self.wake.set()

    def _run(self) -> None:
        while not self.closing:
            self._take_commands()
            if not self.decoder.busy:
                self.wake.wait()
                self.wake.clear()
                continue
            try:
                events = self.decoder.step()
            except Exception as e:  # a bug, not a request's fault: fail the jobs in flight, keep serving
                log.exception("decoding step failed")
                self._fail_all(APIError(500, f"decoding failed: {e}", kind="server_error"))
                continue
            out = defaultdict(list)
            for seq, token in events:
                job, index = self.jobs[id(seq)]
                out[job].append((index, token, seq.finish_reason))
                if seq.done:
                    del self.jobs[id(seq)]
            for job, items in out.items():
                job.deliver(items)
        self._take_commands()
        self._fail_all(shutting_down())

    def _take_commands(self) -> None:
        while True:
            try:
                kind, job, indices = self.commands.get_nowait()
            except queue.Empty:
                return
            if kind == "submit":
                try:
                    seqs = self.decoder.submit(job.prompt, job.max_new_tokens, job.sampling,
                                               self.tokenizer.stop_ids, job.n)
                except ValueError as e:  # checked before submitting; a ContextLengthError is a ValueError
                    job.deliver(bad(str(e)))
                    continue
                job.seqs = seqs if isinstance(seqs, list) else [seqs]
                self.jobs.update({id(s): (job, i) for i, s in enumerate(job.seqs)})
            else:
                for i, seq in enumerate(job.seqs):
                    if (indices is None or i in indices) and not seq.done:
                        self.decoder.cancel(seq)
                        self.jobs.pop(id(seq), None)

    def _fail_all(self, error: APIError) -> None:
        for job in {job for job, _ in self.jobs.values()}:
            job.deliver(error)
            for seq in job.seqs:
                try:
                    self.decoder.cancel(seq)
                except Exception:  # the decoder is already in a bad state; its slots are lost, not the server
                    log.exception("cancelling after a failed step")
        self.jobs.clear()


def model_engine(chat_model, slots: int = 8, context: int | None = None, model_id: str = "nanoagent") -> Engine:
    """An Engine over a BatchDecoder of a loaded model (`nanoagent.load`) with `slots` sequences of up to
    `context` positions each (default: DEFAULT_CONTEXT, or the model's context if smaller)."""
    context = min(context or DEFAULT_CONTEXT, chat_model.config.max_position_embeddings)
    decoder = BatchDecoder(chat_model.model, slots, context)
    return Engine(decoder, chat_model.tokenizer, slots, context, model_id)


async def choices(engine: Engine, req: ChatRequest, prompt: list[int], replies: list[Reply]):
    """Decode the request's n choices together -> yields (index, content, tool_calls, finish_reason or None)
    as they come; stops and frees the slots of what is left if the caller goes away."""
    loop, inbox = asyncio.get_running_loop(), asyncio.Queue()

    def deliver(items):  # on the decoding thread
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, items)
        except RuntimeError:  # the event loop has closed: the server is stopping
            pass

    max_new = min(req.max_tokens or engine.context, engine.context - len(prompt))
    job = Job(prompt, max_new, req.sampling, req.n, deliver)
    engine.submit(job)
    left = set(range(req.n))
    try:
        while left:
            items = await inbox.get()
            if isinstance(items, Exception):
                raise items
            for index, token, finish in items:
                if index not in left:
                    continue  # ended by a stop string; the decoder has not heard yet
                reply = replies[index]
                piece = reply.push(token) if token is not None else ""
                if reply.stopped:
                    engine.cancel(job, [index])
                    finish = "stop"
                if finish is None:
                    if piece:
                        yield index, piece, [], None
                    continue
                rest, calls = reply.finish(finish)
                reply.cached = getattr(job.seqs[index], "cached", 0)  # set when it joined, on the decoding thread
                left.discard(index)
                yield index, piece + rest, calls, reply.finish_reason
    finally:
        if left:
            engine.cancel(job, left)


# ---- the HTTP side --------------------------------------------------------------------------

def create_app(engine: Engine, api_key: str | None = None, max_body: int = DEFAULT_MAX_BODY):
    """The Starlette app serving `engine`; its lifespan starts and stops the decoding thread.
    Tests pass an Engine over a scripted decoder; `main` one over the model."""
    if WEB_STACK_MISSING:
        raise RuntimeError(f"the server needs the serve extra ({WEB_STACK_MISSING} is missing): "
                           "pip install -e '.[serve]'")
    api = API(engine, api_key, max_body)
    return Starlette(routes=[Route("/v1/models", api.answering(api.models)),
                             Route("/v1/models/{name:path}", api.answering(api.model)),
                             Route("/stats", api.answering(api.stats)),
                             Route("/v1/chat/completions", api.answering(api.chat_completions), methods=["POST"])],
                     exception_handlers={HTTPException: http_error}, lifespan=api.lifespan)


class API:
    """The routes' handlers over one engine, behind the API key; `create_app` wires them into Starlette."""

    def __init__(self, engine: Engine, api_key: str | None, max_body: int):
        self.engine, self.api_key, self.max_body = engine, api_key, max_body
        self.created = int(time.time())  # the model card's date: when the server started

    @asynccontextmanager
    async def lifespan(self, app):
        self.engine.start()
        yield
        self.engine.close()

    def answering(self, handler):
        """Every route answers APIErrors and its own bugs in OpenAI's error shape; nothing escapes."""
        async def route(request):
            try:
                check_key(request.headers.get("authorization", ""), self.api_key)
                return await handler(request)
            except APIError as e:
                return JSONResponse(e.body(), e.status)
            except ClientDisconnect:
                return JSONResponse(bad("the client went away").body(), 400)
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return JSONResponse(APIError(500, "internal server error", kind="server_error").body(), 500)
        return route

    async def stats(self, request):
        """The decoder's prompt tokens so far, those found in a slot's cache (prefix reuse), and the prompts
        that found some."""
        d = self.engine.decoder
        return JSONResponse({name: getattr(d, attr, 0) for name, attr in
                             (("prompt_tokens", "prompt_tokens"), ("cached_tokens", "cached_tokens"),
                              ("cache_hits", "hits"))})

    async def models(self, request):
        return JSONResponse({"object": "list", "data": [model_card(self.engine.model_id, self.created)]})

    async def model(self, request):
        name, model_id = request.path_params["name"], self.engine.model_id
        if name != model_id:
            raise APIError(404, f"the model {name!r} does not exist; this server has {model_id!r}",
                           "model", "model_not_found")
        return JSONResponse(model_card(model_id, self.created))

    async def chat_completions(self, request):
        engine = self.engine
        req = read_chat_request(await read_json(request, self.max_body), engine.slots)
        prompt = encode_prompt(engine.tokenizer, req, engine.context)
        replies = [Reply(engine.tokenizer, req.stop, req.tools is not None) for _ in range(req.n)]
        head = completion_head(engine.model_id)
        events = choices(engine, req, prompt, replies)
        if req.stream:
            return StreamingResponse(sse(head, req, prompt, replies, events), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        calls = await until_done_or_gone(request, events, req.n)
        return JSONResponse(completion(head, prompt, replies, calls))


async def http_error(request, exc):  # no such route (404), or method (405)
    return JSONResponse(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                 code="not_found" if exc.status_code == 404 else None).body(), exc.status_code)


async def read_json(request, max_body: int):
    """The request's body, at most `max_body` bytes, decoded as JSON -> any JSON value, or APIError (413, 400)."""
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > max_body:
        raise APIError(413, f"the request body is {size} bytes; this server takes at most {max_body}",
                       code="request_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > max_body:
            raise APIError(413, f"the request body is over {max_body} bytes, the most this server takes",
                           code="request_too_large")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise bad("the request body is not valid JSON") from None


async def until_done_or_gone(request, events, n: int) -> list[list[dict]]:
    """Run a non-streamed request's choices to the end -> each choice's tool calls; if the client
    disconnects first, stop (the choices free their slots) and raise ClientDisconnect."""
    calls = [[] for _ in range(n)]

    async def run():
        async for index, _, found, finish in events:
            if finish is not None:
                calls[index] = found

    async def gone():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work, watch = asyncio.ensure_future(run()), asyncio.ensure_future(gone())
    try:
        await asyncio.wait([work, watch], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            await events.aclose()
    if not work.done() or work.cancelled():
        raise ClientDisconnect()
    work.result()  # re-raise what failed
    return calls


# ---- command line ---------------------------------------------------------------------------

class Stopped(Exception):
    """SIGTERM: the server stops as on Ctrl-C, with status 0."""


def raise_stopped(signum, frame):
    raise Stopped()


def main(argv=None) -> None:
    ap = CommandLine(prog="python -m nanoagent.serve", description="An OpenAI-compatible chat-completions "
                     "server (tools, streaming) over batched decoding.")
    ap.add_argument("--model", help="an HF model folder (default: SmolLM2-135M-Instruct, obtained on first use)")
    ap.add_argument("--int8", action="store_true", help="int8 weights (quantized while loading a float folder)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=number(int, 0, 65535), default=8000, help="port (default 8000; 0: any free one)")
    ap.add_argument("--api-key", default=os.environ.get("NANOAGENT_API_KEY"),
                    help="require 'Authorization: Bearer KEY' (default: $NANOAGENT_API_KEY if set, else no key)")
    ap.add_argument("--slots", type=number(int, 1), default=8, help="sequences decoded together (default 8)")
    ap.add_argument("--context", type=number(int, 2), default=None,
                    help=f"positions per sequence, prompt and reply (default {DEFAULT_CONTEXT}, at most the model's)")
    ap.add_argument("--max-body", type=number(int, 1), default=DEFAULT_MAX_BODY,
                    help=f"largest request body in bytes, larger ones get 413 (default {DEFAULT_MAX_BODY})")
    args = ap.parse_args(argv)
    if WEB_STACK_MISSING:
        sys.exit(f"error: the server needs the serve extra ({WEB_STACK_MISSING} is not installed): "
                 "pip install -e '.[serve]'")
    signal.signal(signal.SIGTERM, raise_stopped)
    try:
        try:
            sock = socket.create_server((args.host, args.port),
                                        family=socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        except OSError as e:
            raise OSError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
        if not kernels_cached(args.int8):
            print("compiling kernels (first run only)", file=sys.stderr, flush=True)
        model_id = Path(args.model).resolve().name if args.model else "SmolLM2-135M-Instruct"
        engine = model_engine(load(args.model, int8=args.int8), args.slots, args.context, model_id)
        engine.warm_up()
        app = create_app(engine, args.api_key, args.max_body)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=3))
        stop_serving = server.handle_exit

        def handle_exit(sig, frame):  # Ctrl-C, SIGTERM: replies in flight end now rather than hold the exit up
            engine.stop()
            stop_serving(sig, frame)
        server.handle_exit = handle_exit
        host, port = sock.getsockname()[:2]
        cache = engine.decoder.cache
        print(f"serving {model_id} at http://{f'[{host}]' if ':' in host else host}:{port}/v1 ({args.slots} slots "
              f"of {engine.context} tokens, KV cache {(cache.kt.nbytes + cache.v.nbytes) / 2**30:.2f} GiB"
              f"{', API key required' if args.api_key else ''}); Ctrl-C stops", file=sys.stderr, flush=True)
        server.run(sockets=[sock])  # returns on Ctrl-C or SIGTERM, then raises it again (see below)
        print("stopped", file=sys.stderr)  # the signal was ignored (as in a shell's background job)
    except (WeightsError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        sys.exit(130)
    except Stopped:
        print("stopped", file=sys.stderr)
        sys.exit(0)


if __name__ == "__main__":
    main()
