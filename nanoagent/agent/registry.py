"""Tools: a plain Python function plus the JSON Schema the model sees, and running a call.

    @tool
    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: the first number
            b: the second number
        '''
        return a + b

`add` is now a `Tool`: still callable as `add(1, 2)`, with `add.schema` the bare
`{"name", "description", "parameters"}` that goes into the tools prompt.
"""

import json
from dataclasses import dataclass
from typing import Callable

from .schema import function_schema, validate_arguments

MAX_RESULT_CHARS = 2000  # a tool result longer than this is cut; the context is small


@dataclass(frozen=True)
class Tool:
    """A callable tool: the function, its name and description, and its `parameters` schema."""

    fn: Callable
    name: str
    description: str
    parameters: dict

    @property
    def schema(self):
        """The bare tool definition the chat template renders inside <tools></tools>."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def tool(fn=None, *, name=None, description=None, parameters=None):
    """Decorator: a function -> a Tool, its schema built from type hints and the docstring.

    Use bare (`@tool`) or with overrides (`@tool(name="search", parameters={...})`).
    """
    def wrap(f):
        schema = function_schema(f, name=name, description=description)
        return Tool(f, schema["name"], schema["description"], parameters or schema["parameters"])
    return wrap(fn) if fn is not None else wrap


def as_tool(obj):
    """A Tool or a plain function -> a Tool."""
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        return tool(obj)
    raise TypeError(f"a tool must be a function or a Tool, got {type(obj).__name__}")


# ---------------------------------------------------------------- running one call

@dataclass
class ToolResult:
    """The outcome of one call: what goes back to the model, and whether it worked."""

    name: str
    arguments: dict
    content: str
    ok: bool


def format_result(value, max_chars=MAX_RESULT_CHARS):
    """A tool's return value -> the text the model reads (JSON for non-strings), cut to max_chars."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = str(value)
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n[... cut at {max_chars} characters]"
    return text


def run_call(call, tools, max_chars=MAX_RESULT_CHARS):
    """One parsed call {"name", "arguments"} -> ToolResult; any failure becomes an error result.

    `tools` maps names to Tools. The arguments are checked against the tool's schema
    first; an unknown tool, a bad argument or an exception inside the tool is reported
    as `Error: ...` text for the model to read, never raised.
    """
    name, arguments = call.get("name", ""), call.get("arguments", {})
    if name not in tools:
        available = ", ".join(tools) or "none"
        return ToolResult(name, arguments, f"Error: unknown tool '{name}'. Available tools: {available}.", False)
    chosen = tools[name]
    arguments, errors = validate_arguments(arguments, chosen.parameters)
    if errors:
        return ToolResult(name, arguments, f"Error: {name}: " + "; ".join(errors) + ".", False)
    try:
        value = chosen.fn(**arguments)
    except Exception as e:  # a failing tool is reported to the model, which may retry
        return ToolResult(name, arguments, f"Error: {name} failed: {type(e).__name__}: {e}", False)
    return ToolResult(name, arguments, format_result(value, max_chars), True)
