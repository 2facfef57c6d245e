"""The agent: tool-call parsing, tool schemas and validation, built-in tools, the agent loop.

    from nanoagent.agent import Agent, tool, parse_tool_calls
    agent = Agent(model, tools=["calculator"])
    result = agent.run("What is 17 * 23?")   # result.answer, result.messages, result.steps
"""

from .builtin import BUILTIN_TOOLS, builtin_tools
from .calculator import calculator
from .clock import get_current_time
from .loop import Agent, AgentResult, Step
from ..toolcalls import ParsedReply, parse_reply, parse_tool_calls
from .registry import Tool, ToolResult, run_call, tool
from .scripted import ScriptedModel
from .schema import function_schema, validate_arguments
from .search import BM25, LocalSearch, make_web_search, web_search
from .web import FetchError, fetch, html_to_text, make_visit_webpage, visit_webpage

__all__ = [
    "Agent", "AgentResult", "Step", "Tool", "ToolResult", "tool", "run_call",
    "parse_tool_calls", "parse_reply", "ParsedReply", "function_schema", "validate_arguments",
    "calculator", "web_search", "make_web_search", "visit_webpage", "make_visit_webpage", "get_current_time",
    "BM25", "LocalSearch", "fetch", "FetchError", "html_to_text", "BUILTIN_TOOLS", "builtin_tools", "ScriptedModel",
]
