"""The agent loop: generate, read the calls, run them, feed the results back, repeat.

    messages = [user question]
    for step in 1..max_steps:
        reply = model.chat(messages, tools=schemas)      # the tools prompt is the template's job
        messages += [assistant: reply verbatim]
        calls, errors = parse(reply)
        if no calls and no errors: the reply is the answer; stop
        messages += [tool: result] for each call (and each unreadable call, as an error)

Every result, good or bad, goes back to the model as a `tool` message (rendered as a
`<tool_result>` user turn), so a wrong call is something the model can fix on its next
step rather than an exception.
"""

from dataclasses import dataclass, field

from .builtin import BUILTIN_TOOLS, builtin_tools
from ..toolcalls import close_open_call, parse_reply
from .registry import MAX_RESULT_CHARS, ToolResult, as_tool, run_call

MAX_CALLS_PER_STEP = 8
FORMAT_HINT = 'Write tool calls as <tool_call>[{"name": "tool_name", "arguments": {...}}]</tool_call>.'


@dataclass
class Step:
    """One generation: the raw reply, the calls read from it, and their results (errors included)."""

    reply: str
    calls: list
    results: list


@dataclass
class AgentResult:
    """What `Agent.run` returns: the answer, the full message list, the steps, and whether it finished."""

    answer: str
    messages: list
    steps: list = field(default_factory=list)
    finished: bool = True

    def __str__(self):
        return self.answer


def resolve_tools(tools, allow_private=None):
    """Tools given as Tools, functions or built-in names -> {name: Tool}.

    allow_private (True or False) overrides NANOAGENT_ALLOW_PRIVATE_URLS for the built-in
    visit_webpage, given by name or as the Tool itself.
    """
    resolved = {}
    for item in tools or ():
        if item is BUILTIN_TOOLS["visit_webpage"]:
            item = "visit_webpage"  # the built-in, made with this agent's allow_private
        if isinstance(item, str):
            item = builtin_tools([item], allow_private=allow_private)[0]  # ValueError for an unknown name
        t = as_tool(item)
        resolved[t.name] = t
    return resolved


class Agent:
    """A model plus tools. `run(question)` -> AgentResult(answer, messages, steps, finished).

    model: anything with `chat(messages, tools=..., **generation)` (and `stream(...)` for
    streaming); tools: Tools, plain functions or built-in names ("calculator", ...);
    max_steps: the most generations per question; system: an optional system prompt
    (the template adds the tools to it); generation: keyword arguments for `model.chat`,
    e.g. max_new_tokens, temperature, seed. With tools, generation stops after
    `</tool_call>` so the model does not go on to imagine the results; at most `max_calls`
    calls of one reply are run. allow_private=True lets the built-in visit_webpage reach
    private and local addresses (loopback, LAN, link-local...); None leaves it to the
    NANOAGENT_ALLOW_PRIVATE_URLS setting (see agent/netguard.py).
    """

    def __init__(self, model, tools=(), max_steps=5, system=None, max_result_chars=MAX_RESULT_CHARS,
                 max_calls=MAX_CALLS_PER_STEP, allow_private=None, **generation):
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.model, self.max_steps, self.system = model, max_steps, system
        self.tools = resolve_tools(tools, allow_private)
        self.max_result_chars, self.max_calls = max_result_chars, max_calls
        self.generation = {"max_new_tokens": 256, **generation}
        if self.tools:
            self.generation.setdefault("stop", ["</tool_call>"])

    @property
    def schemas(self):
        """The tool definitions sent to the chat template, or None for a plain chat."""
        return [t.schema for t in self.tools.values()] or None

    def generate(self, messages, on_event=None):
        """One reply to `messages`; streamed piece by piece to on_event("token", piece) if given."""
        if on_event is None or not hasattr(self.model, "stream"):
            return self.model.chat(messages, tools=self.schemas, **self.generation)
        pieces = []
        for piece in self.model.stream(messages, tools=self.schemas, **self.generation):
            pieces.append(piece)
            on_event("token", piece)
        return "".join(pieces)

    def run_calls(self, calls, errors, emit):
        """Parsed calls and parse errors -> [ToolResult], calls first; emit "call"/"result" as each runs."""
        found = len(calls) + len(errors)
        calls, errors = calls[:self.max_calls], errors[:max(0, self.max_calls - len(calls))]
        results = []
        for call in calls:
            emit("call", call)
            results.append(run_call(call, self.tools, self.max_result_chars))
            emit("result", results[-1])
        for error in errors:
            results.append(ToolResult("", {}, f"Error: could not read a tool call: {error}. {FORMAT_HINT}", False))
            emit("result", results[-1])
        if found > self.max_calls:  # a runaway reply: only the first few were run
            note = f"Error: only {self.max_calls} calls are run per reply; {found - self.max_calls} more were ignored."
            results.append(ToolResult("", {}, note, False))
            emit("result", results[-1])
        return results

    def take(self, messages, reply, emit=None):
        """One reply into the conversation (`messages`, extended here): the reply, then a `tool` message for each
        call it makes (run now, emit told) and each call it garbles -> its Step. A Step with no results is the
        answer."""
        messages.append({"role": "assistant", "content": close_open_call(reply) if self.tools else reply})
        parsed = parse_reply(reply) if self.tools else None  # a plain chat reads no calls
        if parsed is None or not (parsed.calls or parsed.errors):
            return Step(reply, [], [])
        results = self.run_calls(parsed.calls, parsed.errors, emit or (lambda kind, data: None))
        messages += [{"role": "tool", "content": r.content} for r in results]
        return Step(reply, parsed.calls, results)

    def run(self, question, history=None, on_event=None):
        """Answer `question`, calling tools as the model asks -> AgentResult.

        history: earlier messages of the conversation (not modified); on_event(kind, data)
        is told "token" (str), "call" (dict), "result" (ToolResult) and "answer" (str) as
        they happen. `finished` is False when max_steps ran out while the model still called.
        """
        emit = on_event or (lambda kind, data: None)
        messages = list(history or [])
        if self.system and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system})
        messages.append({"role": "user", "content": question})
        steps = []
        for _ in range(self.max_steps):
            steps.append(self.take(messages, self.generate(messages, on_event), emit))
            if not steps[-1].results:
                break
        finished = not steps[-1].results
        answer = parse_reply(steps[-1].reply).text if self.tools else steps[-1].reply.strip()
        emit("answer", answer)
        return AgentResult(answer, messages, steps, finished)
