"""smolagents' ToolCallingAgent drives `python -m nanoagent.serve`, with one of the project's own tools.

Serve a fine-tuned model (the best measured here is the real-data agent after its third stage,
runs/agent-par-stage/model, made as README's "Fine-tuning and what it buys" says), then run this
example against it from another shell:

    pip install -e '.[serve]' smolagents
    python -m nanoagent.serve --model runs/agent-par-stage/model    # at http://127.0.0.1:8000/v1
    python examples/smolagents_agent.py       # asks "What is 17 * 23 + 4?" with the calculator
    python examples/smolagents_agent.py --tools calculator,get_current_time --question "What time is it in Tokyo?"

It starts nothing itself. It builds smolagents' OpenAIServerModel on the server's URL (the model's name
is the one the server lists, unless --model says another), offers the agent the project's tools
(nanoagent.agent's built-in tools, wrapped as smolagents Tools with the names, descriptions and parameters
the fine-tune was trained on), runs a ToolCallingAgent on the question and prints each step (the calls
the model made and what the tools said, or what went wrong) and the answer.

smolagents adds a `final_answer` tool: the agent ends when the model calls it. A model that answers in
plain text instead makes the agent try again, and after --max-steps steps the agent asks it for an
answer once more, without tools; the steps printed show which of these happened.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

try:
    import openai
    import smolagents
    from smolagents import AgentGenerationError, LogLevel, OpenAIServerModel, ToolCallingAgent
except ImportError as e:
    sys.exit(f"error: this example needs smolagents ({e.name} is missing): pip install smolagents")

from nanoagent.agent import builtin_tools, run_call

QUESTION = "What is 17 * 23 + 4?"


class ProjectTool(smolagents.Tool):
    """One of the project's tools (a nanoagent.agent Tool) as a smolagents Tool. The model sees the tool's own
    name, description and parameters; a call runs through nanoagent's run_call, so arguments are checked
    against the tool's schema, and a bad argument or a failing tool comes back as the project's
    `Error: ...` text for the model to read."""

    output_type = "string"
    skip_forward_signature_validation = True  # forward takes the tool's arguments by name, whatever they are

    def __init__(self, tool):
        self.tool, self.name, self.description = tool, tool.name, tool.description
        required = set(tool.parameters.get("required", []))
        self.inputs = {name: {"type": spec.get("type", "any"), "description": spec.get("description", name),
                              **({} if name in required else {"nullable": True})}
                       for name, spec in tool.parameters.get("properties", {}).items()}
        super().__init__()

    def forward(self, **arguments) -> str:
        return run_call({"name": self.name, "arguments": arguments}, {self.name: self.tool}).content


def build_agent(base_url: str, model_id: str | None = None, api_key: str = "none", tools=("calculator",),
                max_steps: int = 4, max_tokens: int = 256, verbose: bool = False) -> ToolCallingAgent:
    """A ToolCallingAgent on the server at `base_url` with the project's tools named in `tools`
    (ValueError for an unknown one). `model_id` None: the model the server lists."""
    project_tools = [ProjectTool(t) for t in builtin_tools(tools)]
    model = OpenAIServerModel(model_id=model_id or "", api_base=base_url, api_key=api_key, max_tokens=max_tokens,
                              client_kwargs={"max_retries": 0, "timeout": 600})
    if model_id is None:
        model.model_id = model.client.models.list().data[0].id
    return ToolCallingAgent(tools=project_tools, model=model, max_steps=max_steps,
                            verbosity_level=LogLevel.INFO if verbose else LogLevel.OFF)


def clip(text, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def steps_of(agent: ToolCallingAgent) -> list[str]:
    """The agent's run, a line per step: the tools it called and what they said, or what the model said and
    the error the agent met; the prompt and reply tokens and the seconds of each."""
    lines = []
    for step in agent.memory.steps:
        if not isinstance(step, smolagents.ActionStep):
            continue
        if step.tool_calls:
            what = "; ".join(f"{c.name}({json.dumps(c.arguments, ensure_ascii=False)})" for c in step.tool_calls)
            what += f" -> {clip(step.observations)}" if step.observations is not None else ""
        elif step.model_output:
            what = f"said {clip(step.model_output)!r}"
        else:
            what = f"answered {clip(step.action_output)!r}" if step.action_output is not None else "nothing"
        if step.error is not None:
            what += f" [{type(step.error).__name__}: {clip(step.error, 120)}]"
        usage = step.token_usage
        cost = f"{usage.input_tokens} prompt tokens, {usage.output_tokens} new" if usage else "no reply"
        lines.append(f"step {step.step_number}: {what}  ({cost}, {step.timing.duration or 0:.1f} s)")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python examples/smolagents_agent.py", description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server (default %(default)s)")
    ap.add_argument("--model", default=None, help="the model name to ask for (default: the one the server lists)")
    ap.add_argument("--api-key", default=os.environ.get("NANOAGENT_API_KEY", "none"),
                    help="the server's --api-key, if it has one (default: $NANOAGENT_API_KEY)")
    ap.add_argument("--tools", default="calculator", help="the project's tools to offer, comma-separated "
                    "(calculator, get_current_time, web_search, visit_webpage; default calculator)")
    ap.add_argument("--question", default=QUESTION, help=f"what to ask (default {QUESTION!r})")
    ap.add_argument("--max-steps", type=int, default=4, help="steps before the agent asks for an answer (default 4)")
    ap.add_argument("--max-tokens", type=int, default=256, help="new tokens per reply at most (default 256)")
    ap.add_argument("--verbose", action="store_true", help="smolagents' own log of the run as well")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        agent = build_agent(args.base_url, args.model, args.api_key, [t for t in args.tools.split(",") if t],
                            args.max_steps, args.max_tokens, args.verbose)
        result = agent.run(args.question, return_full_result=True)
    except ValueError as e:
        sys.exit(f"error: {e}")
    except openai.APIConnectionError:
        sys.exit(f"error: no server answers at {args.base_url}: start one with python -m nanoagent.serve --model DIR")
    except openai.APIStatusError as e:
        sys.exit(f"error: the server answered {e.status_code}: {clip(e.message)}")
    except AgentGenerationError as e:  # the request for a reply failed (smolagents stops the run on it)
        sys.exit(f"error: {clip(e, 300)}")
    steps = steps_of(agent)
    print(f"model: {agent.model.model_id} at {args.base_url}; tools: {', '.join(agent.tools)}")
    print(f"question: {args.question}")
    print("\n".join(steps))
    print(f"answer: {result.output}  ({result.state}, {len(steps)} steps, {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
