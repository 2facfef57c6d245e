"""The `calculator` tool: arithmetic evaluated by walking Python's AST, never `eval`.

Only numbers, `+ - * / // % **`, parentheses, a fixed set of math functions and the
constants pi, e and tau are understood; any other node (a name, an attribute, a
subscript, a lambda, a string) is refused. Limits keep a hostile or confused input
cheap: the expression's length, the size of a power's result, factorial's argument,
and the nesting depth.
"""

import ast
import math
import operator

from .registry import tool

MAX_EXPRESSION_CHARS = 300
MAX_POWER_BITS = 4096   # an integer power's result may have at most this many bits
MAX_FACTORIAL = 1000
MAX_DEPTH = 50


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate."""


def _factorial(n):
    if not float(n).is_integer() or n < 0:
        raise CalculatorError("factorial needs a non-negative integer")
    if n > MAX_FACTORIAL:
        raise CalculatorError(f"factorial is limited to n <= {MAX_FACTORIAL}")
    return math.factorial(int(n))


FUNCTIONS = {
    "sqrt": math.sqrt, "cbrt": lambda x: math.copysign(abs(x) ** (1 / 3), x),
    "exp": math.exp, "log": math.log, "ln": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "asin": math.asin, "acos": math.acos, "atan": math.atan, "atan2": math.atan2,
    "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh,
    "degrees": math.degrees, "radians": math.radians, "hypot": math.hypot,
    "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil,
    "min": min, "max": max, "factorial": _factorial, "gcd": math.gcd,
}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def _power(base, exponent):
    """base ** exponent, refused when an integer result would exceed MAX_POWER_BITS."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_POWER_BITS:
            raise CalculatorError(f"the power {base}**{exponent} is too large")
    if isinstance(base, float) or isinstance(exponent, float) or exponent < 0:
        if abs(exponent) > 1e6:
            raise CalculatorError("the exponent is too large")
    result = base ** exponent
    if isinstance(result, complex):
        raise CalculatorError("the result is a complex number")
    return result


def _evaluate(node, depth=0):
    """One AST node -> its number; anything outside the allowed grammar is refused."""
    if depth > MAX_DEPTH:
        raise CalculatorError("the expression is nested too deeply")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand, depth + 1)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        return BINARY[type(node.op)](_evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalculatorError(f"unknown name '{node.id}'")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        if node.func.id not in FUNCTIONS:
            raise CalculatorError(f"unknown function '{node.func.id}'")
        args = [_evaluate(a, depth + 1) for a in node.args]
        return FUNCTIONS[node.func.id](*args)
    raise CalculatorError(f"'{type(node).__name__}' is not allowed in a calculation")


def evaluate(expression):
    """An arithmetic expression (str) -> int or float. `^` means power; `×` and `÷` are read too.

    Raises CalculatorError for anything it refuses or that has no finite real value.
    """
    if not isinstance(expression, str):
        raise CalculatorError("the expression must be a string")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/").strip().rstrip("=").strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"cannot read '{expression}' as arithmetic") from None
    try:
        result = _evaluate(tree.body)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except (OverflowError, ValueError, TypeError) as e:
        if isinstance(e, CalculatorError):
            raise
        raise CalculatorError(f"no real result ({e})") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise CalculatorError("the result is not a finite number")
    if isinstance(result, int) and result.bit_length() > 2 * MAX_POWER_BITS:
        raise CalculatorError("the result is too large")
    return result


def format_number(value):
    """A result -> short text: integers exactly, floats to 12 significant digits."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the number.

    Args:
        expression: the expression, e.g. "2 * (3 + 4)", "sqrt(2)", "0.15 * 80"
    """
    return format_number(evaluate(expression))
