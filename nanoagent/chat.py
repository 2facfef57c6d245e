"""`python -m nanoagent.chat`: an interactive chat, with the agent loop when tools are given.

    python -m nanoagent.chat                                  # plain multi-turn chat
    python -m nanoagent.chat --tools calculator,web_search --docs notes/
    echo "What is 17*23?" | python -m nanoagent.chat --tools calculator

Each line read is one user message. `/reset` forgets the conversation; `/exit`,
`/quit` or the end of input leave. Replies are streamed as they are generated; each
tool call and its result are shown as they happen (`-> name {...}`, `<- result`).

web_search searches the `--docs` folder offline (BM25); online it uses the SearXNG
instance named by NANOAGENT_SEARXNG_URL, else DuckDuckGo's HTML page;
NANOAGENT_SEARCH=local|searxng|duckduckgo forces one (see nanoagent/agent/search.py).
visit_webpage refuses private and local addresses (loopback, LAN, link-local, ...);
`--allow-private-urls` or NANOAGENT_ALLOW_PRIVATE_URLS=1 lets it reach them, for an agent
meant to read a local service (see nanoagent/agent/netguard.py).
"""

import json
import re
import sys

from .agent import Agent
from .agent.builtin import BUILTIN_TOOLS, builtin_tools
from .checkpoint import WeightsError
from .cli import one_line_errors
from .generate import CommandLine, add_generation_args, generation_kwargs, load, number

HELP = "Commands: /reset forgets the conversation, /exit or /quit leaves, /help shows this."
RESULT_PREVIEW_CHARS = 500
OPEN_TAG = re.compile(r"<\s*tool_calls?\s*>", re.IGNORECASE)  # the spellings of <tool_call> the parser reads
TAG_STARTS = ("<tool_call>", "<tool_calls>")


class ShowEvents:
    """An on_event callback printing streamed text, tool calls and their results to `out`.

    A reply is streamed up to its first <tool_call> tag: the call is shown once, parsed
    (`-> name {...}`), not also as the raw markup. Text that may begin a tag ("<tool") is
    held back until it is clear either way, and let out at the end of the reply.
    """

    def __init__(self, out, stream=True):
        self.out, self.stream = out, stream
        self.text, self.shown, self.in_call = "", 0, False  # this reply so far; characters written; tag seen

    def __call__(self, kind, data):
        if kind == "token":
            if self.stream and not self.in_call:
                self.push(data)
            return
        self.end_reply()  # a call, a result or the answer: the reply's text is complete
        if kind == "call":
            self.write(f"\n-> {data['name']} {json.dumps(data['arguments'], ensure_ascii=False)}\n")
        elif kind == "result":
            text = data.content if len(data.content) <= RESULT_PREVIEW_CHARS else data.content[:RESULT_PREVIEW_CHARS] + " ..."
            self.write("<- " + text.replace("\n", "\n   ") + "\n")

    def push(self, piece):
        """Write what may be shown of the reply so far: up to a tag, holding back a possible tag start."""
        self.text += piece
        tag = OPEN_TAG.search(self.text, self.shown)
        if tag:
            self.in_call = True
            self.write(self.text[self.shown:tag.start()])
            self.shown = tag.start()
            return
        end = len(self.text)
        start = self.text.rfind("<", max(self.shown, end - 32))  # a tag is short
        if start != -1 and any(t.startswith(re.sub(r"\s", "", self.text[start:]).lower()) for t in TAG_STARTS):
            end = start  # "<", "<tool_c", ...: maybe a tag, wait for more
        self.write(self.text[self.shown:end])
        self.shown = end

    def end_reply(self):
        if not self.in_call:
            self.write(self.text[self.shown:])
        self.text, self.shown, self.in_call = "", 0, False

    def write(self, text):
        if text:
            self.out.write(text)
            self.out.flush()


def repl(model, tools=(), input_stream=None, output_stream=None, max_steps=5, system=None, stream=True,
         **generation):
    """Read user lines from input_stream until EOF or /exit, answering each on output_stream.

    Works the same on a terminal and on a pipe. Returns the number of questions answered.
    """
    inp, out = input_stream or sys.stdin, output_stream or sys.stdout
    agent = Agent(model, tools=tools, max_steps=max_steps, system=system, **generation)
    names = ", ".join(agent.tools) or "none (plain chat)"
    out.write(f"nanoagent chat. Tools: {names}. {HELP}\n")
    history, answered = [], 0
    while True:
        out.write("\n> ")
        out.flush()
        line = inp.readline()
        if not line:  # end of input
            out.write("\n")
            break
        question = line.strip()
        if not question:
            continue
        if question in ("/exit", "/quit"):
            out.write("\n")
            break
        if question == "/reset":
            history = []
            out.write("(conversation cleared)\n")
            continue
        if question == "/help":
            out.write(HELP + "\n")
            continue
        result = agent.run(question, history=history, on_event=ShowEvents(out, stream))
        if not stream:
            out.write(result.answer)
        if not result.finished:
            out.write(f"\n(stopped after {max_steps} steps without a final answer)")
        out.write("\n")
        out.flush()
        history = result.messages
        answered += 1
    out.flush()
    return answered


def build_parser():
    """The command line's arguments, each checked before the model loads."""
    p = CommandLine(prog="python -m nanoagent.chat", description=__doc__.split("\n\n")[0])
    p.add_argument("--tools", default="", help=f"comma-separated tools: {','.join(BUILTIN_TOOLS)} (none: plain chat)")
    p.add_argument("--docs", default=None, help="a folder of .txt/.md/.html files for web_search to search offline")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="let visit_webpage fetch private and local addresses (loopback, LAN, link-local); "
                        "refused by default")
    p.add_argument("--model", default=None, help="a model folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("--int8", action="store_true", help="load int8 weights")
    p.add_argument("--system", default=None, help="a system prompt")
    p.add_argument("--max-steps", type=number(int, 1), default=5, help="most model replies per question (default 5)")
    add_generation_args(p)
    p.add_argument("--no-stream", action="store_true", help="print each reply when it is complete")
    return p


def main(argv=None):
    """Parse arguments, load the model, run the REPL on stdin/stdout."""
    ap = build_parser()
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    if args.docs is not None and "web_search" not in names:
        ap.error("argument --docs: only web_search reads documents; add it to --tools")
    if args.allow_private_urls and "visit_webpage" not in names:
        ap.error("argument --allow-private-urls: only visit_webpage fetches the pages the model asks for; "
                 "add it to --tools")
    try:
        tools = builtin_tools(names, docs=args.docs, allow_private=True if args.allow_private_urls else None)
    except ValueError as e:
        ap.error(str(e))
    with one_line_errors(WeightsError, ValueError, OSError):  # ContextLengthError is a ValueError
        model = load(args.model, int8=args.int8)
        repl(model, tools, sys.stdin, sys.stdout, max_steps=args.max_steps, system=args.system,
             stream=not args.no_stream, **generation_kwargs(args))


if __name__ == "__main__":
    main()
