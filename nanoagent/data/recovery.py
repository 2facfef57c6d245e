"""Mending a call after the tool's error (the recovery family): a request to one of the project's tools, a
first call the tool refuses, the error the agent hands back for it, then the right call, its result and
the answer. The wrong call is shown but not learned (`"weight": 0`: render_chat_spans leaves it out of the
loss), so a row teaches reading an error and mending the call, never making the mistake.

The mistakes are those a small model makes with these tools: a city where a time zone is asked
(`"Tokyo"`), a city under the wrong region (`"America/Manila"`), a wrong argument name (`"expr"`), a piece
of the schema copied in as an argument (`"required": ["expression"]`), a near name of the tool
(`calculate`), an expression the calculator cannot read (`17 x 23`, `$12.50*3`, `1,200*3`).

The calculator's and the clock's errors end with the form they would have read when there is one (`did you
mean 'Asia/Manila'?`), and the row mends its call to that form: it teaches copying the hint, which a 135M
model does far better than recalling a zone. The data package may not import the agent package, so the
error texts are written here by the agent's rules; tests/test_recovery.py runs every wrong call through the
real tools and asserts the same text.
"""
from __future__ import annotations

import ast
import re
import zoneinfo
from datetime import datetime, timedelta, timezone

from .chains import ONE_ASKS, checked_steps
from .own_tools import (CALCULATOR, CITIES, FACTS, OWN_TOOLS, SEARCH_ASKS, TIME_ASKS, VISIT_ASKS, page_text, said_time,
                        search_result, time_result)

WRONG_NAMES = {"calculator": ("expr", "input", "formula", "math"), "get_current_time": ("city", "location", "zone", "tz"),
               "web_search": ("q", "search", "text", "keywords"), "visit_webpage": ("link", "page", "website", "address")}
NEAR_NAMES = {"calculator": ("calculate", "calc", "math"), "get_current_time": ("get_time", "current_time", "time"),
              "web_search": ("search", "google_search", "search_web"),
              "visit_webpage": ("visit_page", "open_url", "fetch_page")}
def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
        return True
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False


# cities whose bare name is no time zone (zoneinfo knows "Singapore" and a few others as old links)
CITY_ZONES = tuple((c, z) for c, z in CITIES if not _is_zone(c))

# ---- the agent's error texts (agent/registry.py, agent/schema.py, the tools' own messages) ---------------------


def unknown_tool(name: str, tools: list[dict]) -> str:
    return f"Error: unknown tool '{name}'. Available tools: {', '.join(t['name'] for t in tools)}."


def bad_arguments(tool: dict, arguments: dict) -> str:
    """A call whose argument names do not fit the tool's schema: the missing required ones, then the unknown ones."""
    properties, required = tool["parameters"]["properties"], tool["parameters"].get("required", [])
    errors = [f"{name}: missing required argument" for name in required if name not in arguments]
    errors += [f"{name}: unexpected argument (expected {', '.join(properties)})" for name in arguments
               if name not in properties]
    return f"Error: {tool['name']}: " + "; ".join(errors) + "."


def failed(tool: str, error: str, message: str) -> str:
    return f"Error: {tool} failed: {error}: {message}"


def _clip(text: str, limit: int = 40) -> str:  # as the calculator cuts the user's input in a message
    return text if len(text) <= limit else text[:limit] + "..."


def unreadable(expression: str, rng) -> tuple[str, str, str]:
    """An expression written as the calculator cannot read it -> (that form, the calculator's error, the form its
    error suggests): "x" or "times" for "*", a dollar sign before the first number, a thousands comma. The
    calculator's rewrite (agent/calculator.py, suggest_expression) undoes each: it gives back the expression,
    but for the spaces around the "*" it wrote in place of "x"."""
    forms = []
    if "*" in expression:
        meant = re.sub(r"\s*\*\s*", "*", expression, count=1)
        forms += [(re.sub(r"\s*\*\s*", " x ", expression, count=1), meant),
                  (re.sub(r"\s*\*\s*", " times ", expression, count=1), meant)]
    forms.append((re.sub(r"(?<![\d.])(\d)", r"$\1", expression, count=1), expression))
    big = re.search(r"(?<![\d.])(\d{4,})(?![\d])", expression)
    if big:
        digits = big.group(1)
        comma = expression[:big.start()] + f"{digits[:-3]},{digits[-3:]}" + expression[big.end():]
        tree = _parsed(comma)
        if tree is not None and any(isinstance(node, ast.Tuple) for node in ast.walk(tree)):
            forms.append((comma, expression))
    bad, meant = forms[int(rng.integers(len(forms)))]
    why = (f"cannot read '{_clip(bad)}' as arithmetic" if _parsed(bad) is None
           else "'Tuple' is not allowed in a calculation")
    if len(meant) > 40:  # the calculator shows a hint whole or not at all (MAX_HINT_CHARS)
        return bad, failed("calculator", "CalculatorError", why), expression
    return bad, failed("calculator", "CalculatorError", f"{why}; did you mean '{meant}'?"), meant


def _parsed(expression: str) -> ast.expr | None:
    try:
        return ast.parse(expression, mode="eval").body
    except SyntaxError:
        return None


# ---- the tasks: a request, the right call, its result, the answer ----------------------------------------------

def task(tool: str, rng, steps, start: datetime):
    """-> (request, the right call, its result, the answer, extra) for one of the project's tools."""
    if tool == "calculator":
        expression, result = steps[int(rng.integers(len(steps)))]
        return (ONE_ASKS[int(rng.integers(len(ONE_ASKS)))].format(e=expression),
                {"name": "calculator", "arguments": {"expression": expression}}, result, f"{expression} = {result}.",
                expression)
    if tool == "get_current_time":
        city, zone = CITY_ZONES[int(rng.integers(len(CITY_ZONES)))]
        zone = zone_hint(city) or zone  # the zone the clock's error names ("Asia/Istanbul", one of the city's two)
        text, local = time_result(zone, start + timedelta(seconds=int(rng.integers(0, 2 * 365 * 86400))))
        return (TIME_ASKS[int(rng.integers(len(TIME_ASKS)))].format(c=city),
                {"name": "get_current_time", "arguments": {"timezone": zone}}, text, said_time(city, local, 24), city)
    q, title, url, snippet, ask_what, answer = FACTS[int(rng.integers(len(FACTS)))]
    if tool == "web_search":
        ask = SEARCH_ASKS[int(rng.integers(len(SEARCH_ASKS)))].format(q=q, ask=ask_what)
        return ask, {"name": "web_search", "arguments": {"query": q}}, search_result(title, url, snippet), answer, q
    ask = VISIT_ASKS[int(rng.integers(len(VISIT_ASKS)))].format(url=url, ask=ask_what)
    return (ask, {"name": "visit_webpage", "arguments": {"url": url}}, page_text(title, url, snippet),
            snippet if "summarize" in ask else answer, url)


MISTAKES = {"calculator": ("unreadable", "unreadable", "wrong name", "schema key", "near name"),
            "get_current_time": ("city as zone", "city as zone", "wrong region", "wrong name", "schema key",
                                 "near name"),
            "web_search": ("wrong name", "schema key", "near name"),
            "visit_webpage": ("wrong name", "schema key", "near name")}
SCHEMAS = {t["name"]: t for t in OWN_TOOLS}
REGIONS = ("America", "Europe", "Asia", "Africa", "Australia")


def zone_hint(city: str) -> str | None:
    """The zone the clock suggests for a city given as the zone (agent/clock.py, suggest_zone: the shortest zone
    named after that city, "Jakarta" -> "Asia/Jakarta"), or None ("Mumbai" is in "Asia/Kolkata": the model has
    to know that one)."""
    key = city.replace(" ", "_").lower()
    named = [z for z in zoneinfo.available_timezones()
             if "/" in z and not z.startswith(("Etc/", "SystemV/")) and z.rsplit("/", 1)[-1].lower() == key]
    return min(named, key=lambda z: (len(z), z)) if named else None


def mistake(kind: str, right: dict, extra: str, tools: list[dict], rng) -> tuple[dict, str, dict]:
    """The right call done wrong in one way -> (the wrong call, the error the agent answers it with, the mended
    call: the right one, in the form the error suggests when it suggests one)."""
    name, arguments = right["name"], right["arguments"]
    tool = SCHEMAS[name]
    if kind == "unreadable":
        bad, error, meant = unreadable(extra, rng)
        return {"name": name, "arguments": {"expression": bad}}, error, {"name": name, "arguments": {"expression": meant}}
    if kind == "city as zone":
        meant = zone_hint(extra)  # the right call's zone when there is one (task)
        hint = f"did you mean '{meant}'?" if meant else "use an IANA name such as 'Europe/Paris' or 'UTC'"
        return {"name": name, "arguments": {"timezone": extra}}, failed(name, "ValueError",
                                                                        f"unknown time zone '{extra}'; {hint}"), right
    if kind == "wrong region":  # "America/Manila": the city's name under another region
        zone = arguments["timezone"]
        wrong = [f"{r}/{zone.rsplit('/', 1)[-1]}" for r in REGIONS]
        wrong = [w for w in wrong if not _is_zone(w)]
        bad = wrong[int(rng.integers(len(wrong)))]
        error = failed(name, "ValueError", f"unknown time zone '{bad}'; did you mean '{zone}'?")
        return {"name": name, "arguments": {"timezone": bad}}, error, right
    if kind == "wrong name":
        key = WRONG_NAMES[name][int(rng.integers(len(WRONG_NAMES[name])))]
        wrong = {key: extra if name == "get_current_time" else next(iter(arguments.values()))}
        return {"name": name, "arguments": wrong}, bad_arguments(tool, wrong), right
    if kind == "schema key":
        copied = {"required": tool["parameters"].get("required", [])} if rng.random() < 0.7 else {"type": "object"}
        wrong = arguments | copied
        return {"name": name, "arguments": wrong}, bad_arguments(tool, wrong), right
    near = NEAR_NAMES[name][int(rng.integers(len(NEAR_NAMES[name])))]
    return {"name": near, "arguments": arguments}, unknown_tool(near, tools), right


def recovery(inputs, n: int, rng):
    """Up to n rows: a request to one of the project's tools, a wrong first call (not learned) and the agent's
    error for it, the mended call, its result and the answer."""
    steps, start = checked_steps(inputs), datetime(2024, 1, 1, tzinfo=timezone.utc)
    names = [t["name"] for t in OWN_TOOLS if t is not CALCULATOR or steps]
    for _ in range(n):
        name = names[int(rng.integers(len(names)))]
        ask, right, result, answer, extra = task(name, rng, steps, start)
        others = [t for t in OWN_TOOLS if t["name"] != name]
        tools = [SCHEMAS[name]] + [others[int(i)] for i in rng.permutation(len(others))[:int(rng.integers(0, 4))]]
        tools = [tools[int(i)] for i in rng.permutation(len(tools))]
        kinds = MISTAKES[name]
        wrong, error, mended = mistake(kinds[int(rng.integers(len(kinds)))], right, extra, tools, rng)
        yield {"messages": [{"role": "user", "content": ask},
                            {"role": "assistant", "content": "", "tool_calls": [wrong], "weight": 0},
                            {"role": "tool", "content": error},
                            {"role": "assistant", "content": "", "tool_calls": [mended]},
                            {"role": "tool", "content": result},
                            {"role": "assistant", "content": answer}],
               "tools": tools, "source": "recovery"}

