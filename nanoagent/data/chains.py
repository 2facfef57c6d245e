"""Tool chains from GSM8K train: a solution's `<<48/2=24>>` steps as calls to the project's calculator,
independent steps in one parallel call, each result fed back, then the answer (the calc-chain family);
and checked step expressions asked together (parallel-calc). Every result is computed here, by a small
evaluator of plain arithmetic, and must equal the value GSM8K states (tests pin it to the real calculator).
"""
from __future__ import annotations

import ast
import operator
import re

from .common import Drop
from .derived import _numbers_free, unrelated_tools
from .own_tools import CALCULATOR

# ---- tool chains from GSM8K: the calculator, step by step ----------------------------------------------

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
       ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


def arithmetic(expression: str):
    """Numbers, + - * / // % ** and parentheses only (the calculator's arithmetic core), via ast."""
    def ev(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("power too large")
            return OPS[type(node.op)](left, right)
        raise ValueError(f"not arithmetic: {type(node).__name__}")
    return ev(ast.parse(expression, mode="eval").body)


def format_number(value) -> str:
    """As the calculator writes a result: integers exactly, floats to 12 significant digits."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


STEP = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def chain_steps(row: dict) -> list[tuple[str, str]]:
    """A GSM8K solution -> [(expression, calculator result)]; raises Drop when a step does not check out."""
    work, final = row["answer"].rsplit("####", 1)
    steps = []
    for expr, claimed in STEP.findall(work):
        expr = expr.strip().replace("x", "*").replace("÷", "/").replace("^", "**")
        try:
            value, claimed_value = arithmetic(expr), float(claimed.strip().replace(",", ""))
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, TypeError):
            raise Drop("unreadable step") from None
        if not _close(float(value), claimed_value):
            raise Drop("step disagrees")
        steps.append((expr, format_number(value)))
    if not steps:
        raise Drop("no steps")
    try:
        answer = float(final.strip().replace(",", ""))
    except ValueError:
        raise Drop("no final answer") from None
    if not _close(float(steps[-1][1]), answer):
        raise Drop("last step is not the answer")
    return steps


def rounds(question: str, steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Group steps into rounds of calls: a step that uses a result of the current round starts a new one."""
    given = {float(x) for x in NUMBER.findall(_numbers_free(question))}
    out, current = [], []
    for expr, result in steps:
        used = {float(x) for x in NUMBER.findall(expr)} - given
        if current and any(_close(u, float(r)) for u in used for _, r in current):
            out.append(current)
            current = []
        current.append((expr, result))
    return out + [current]


def calc_chain(inputs, n: int, rng, max_steps: int = 8):
    """GSM8K train solutions as calculator chains: every result is the calculator's output for its expression
    (checked against GSM8K's own `=N`), the last equals the `#### N` answer."""
    pool, made = inputs.tool_pool(), 0
    rows = [r for i, r in enumerate(inputs.gsm8k) if i % 3 != 2]  # nocall-math takes every third row
    for row in rows:
        if made >= n:
            return
        try:
            steps = chain_steps(row)
        except Drop as e:
            yield e
            continue
        if len(steps) > max_steps:
            yield Drop("too many steps")
            continue
        final = row["answer"].rsplit("####", 1)[1].strip()
        messages = [{"role": "user", "content": row["question"].strip()}]
        for group in rounds(row["question"], steps):
            messages.append({"role": "assistant", "content": "",
                             "tool_calls": [{"name": "calculator", "arguments": {"expression": e}} for e, _ in group]})
            messages += [{"role": "tool", "content": r} for _, r in group]
        messages.append({"role": "assistant", "content": f"The answer is {final}."})
        tools = [CALCULATOR] + unrelated_tools(row["question"], pool, rng, int(rng.integers(0, 3)), arithmetic_ok=False)
        made += 1
        yield {"messages": messages, "tools": [tools[int(i)] for i in rng.permutation(len(tools))],
               "source": "calc-chain"}


CALC_ASKS = ("What is {all}?", "Calculate {all}.", "Work these out for me: {list}.", "I need {all}.",
             "Can you compute {all}?", "Please evaluate {list}.", "Quick math: {all}?", "What do {all} come to?")


def checked_steps(inputs) -> list[tuple[str, str]]:
    """Every distinct (expression, result) step of the GSM8K rows that holds an operator, in order."""
    steps = []
    for row in inputs.gsm8k:
        try:
            steps += [s for s in chain_steps(row) if re.search(r"[-+*/]", s[0].lstrip("-"))]
        except Drop:
            continue
    return list(dict.fromkeys(steps))


def parallel_calc(inputs, n: int, rng):
    """The same function, different arguments, asked in one sentence: 2-4 checked GSM8K step expressions
    ("What is 36/3 and 48+24?") -> one calculator call each, in one list."""
    steps = checked_steps(inputs)
    pool = inputs.tool_pool()
    for _ in range(min(n, len(steps) // 2)):
        group = [steps[int(i)] for i in rng.choice(len(steps), size=int(rng.choice([2, 2, 3, 4])), replace=False)]
        exprs = [e for e, _ in group]
        listed = ", ".join(exprs[:-1]) + " and " + exprs[-1]
        ask = CALC_ASKS[int(rng.integers(len(CALC_ASKS)))].format(all=listed, list="; ".join(exprs))
        messages = [{"role": "user", "content": ask},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"name": "calculator", "arguments": {"expression": e}} for e in exprs]}]
        messages += [{"role": "tool", "content": r} for _, r in group]
        parts = [f"{e} = {r}" for e, r in group]
        messages.append({"role": "assistant", "content": ", ".join(parts[:-1]) + " and " + parts[-1] + "."})
        tools = [CALCULATOR] + unrelated_tools(ask, pool, rng, int(rng.integers(0, 3)), arithmetic_ok=False)
        yield {"messages": messages, "tools": [tools[int(i)] for i in rng.permutation(len(tools))],
               "source": "parallel-calc"}


ONE_ASKS = ("What is {e}?", "Calculate {e}.", "What does {e} come to?", "Can you compute {e} for me?",
            "How much is {e}?", "Please work out {e}.", "{e} = ?", "Quick question: what's {e}?")


def calc_ask(inputs, n: int, rng):
    """One bare expression asked ("What is 17 * 23 + 4?") -> one calculator call, its result, the answer: what
    the calculator is for, against the declines that would otherwise answer a bare sum too."""
    steps, pool = checked_steps(inputs), inputs.tool_pool()
    for i in rng.permutation(len(steps))[:n]:
        expression, result = steps[int(i)]
        ask = ONE_ASKS[int(rng.integers(len(ONE_ASKS)))].format(e=expression)
        messages = [{"role": "user", "content": ask},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"name": "calculator", "arguments": {"expression": expression}}]},
                    {"role": "tool", "content": result},
                    {"role": "assistant", "content": f"{expression} = {result}."}]
        tools = [CALCULATOR] + unrelated_tools(ask, pool, rng, int(rng.integers(0, 3)), arithmetic_ok=False)
        yield {"messages": messages, "tools": [tools[int(j)] for j in rng.permutation(len(tools))],
               "source": "calc-ask"}
