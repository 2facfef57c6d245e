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
"""

import argparse
import json
import sys

from .agent import Agent
from .agent.builtin import BUILTIN_TOOLS, builtin_tools
from .generate import load

HELP = "Commands: /reset forgets the conversation, /exit or /quit leaves, /help shows this."
RESULT_PREVIEW_CHARS = 500


def _show_event(out, stream):
    """An on_event callback printing streamed text, tool calls and their results to `out`."""
    def show(kind, data):
        if kind == "token" and stream:
            out.write(data)
            out.flush()
        elif kind == "call":
            out.write(f"\n-> {data['name']} {json.dumps(data['arguments'], ensure_ascii=False)}\n")
            out.flush()
        elif kind == "result":
            text = data.content if len(data.content) <= RESULT_PREVIEW_CHARS else data.content[:RESULT_PREVIEW_CHARS] + " ..."
            out.write("<- " + text.replace("\n", "\n   ") + "\n")
            out.flush()
    return show


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
        result = agent.run(question, history=history, on_event=_show_event(out, stream))
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
    """The command line's arguments."""
    p = argparse.ArgumentParser(prog="python -m nanoagent.chat", description=__doc__.split("\n\n")[0])
    p.add_argument("--tools", default="", help=f"comma-separated tools: {','.join(BUILTIN_TOOLS)} (none: plain chat)")
    p.add_argument("--docs", default=None, help="a folder of .txt/.md/.html files for web_search to search offline")
    p.add_argument("--model", default=None, help="a model folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("--int8", action="store_true", help="load int8 weights")
    p.add_argument("--system", default=None, help="a system prompt")
    p.add_argument("--max-steps", type=int, default=5, help="most model replies per question (default 5)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-stream", action="store_true", help="print each reply when it is complete")
    return p


def main(argv=None):
    """Parse arguments, load the model, run the REPL on stdin/stdout."""
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    try:
        tools = builtin_tools(names, docs=args.docs)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    model = load(args.model, int8=args.int8)
    repl(model, tools, sys.stdin, sys.stdout, max_steps=args.max_steps, system=args.system,
         stream=not args.no_stream, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
         top_p=args.top_p, seed=args.seed)


if __name__ == "__main__":
    main()
