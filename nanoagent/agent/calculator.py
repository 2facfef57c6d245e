"""The `calculator` tool: arithmetic evaluated by walking Python's AST, never `eval`.

Only numbers, `+ - * / // % **`, parentheses, a fixed set of math functions and the
constants pi, e and tau are understood; any other node (a name, an attribute, a
subscript, a lambda, a string) is refused. Limits keep a hostile or confused input
cheap: the expression's length, the size of every integer (operands, results and
function arguments), a power's result, factorial's argument, round's digits, and the
nesting depth. Error messages stay short: a long number is named by its digit count.
"""

import ast
import math
import operator
import re

from .registry import tool

MAX_EXPRESSION_CHARS = 300
MAX_POWER_BITS = 4096   # an integer power's result may have at most this many bits
MAX_INT_BITS = 2 * MAX_POWER_BITS  # no integer, intermediate or final, may have more bits
MAX_FACTORIAL = 966     # the largest n whose n! fits in MAX_INT_BITS (966! has 8192 bits)
MAX_ROUND_DIGITS = 1000  # round(x, n) needs |n| <= this (round(1, -10**9) builds 10**(10**9))
MAX_FLOAT_EXPONENT = 1e6
MAX_DEPTH = 50          # nesting: call arguments, signs, right operands 1+(1+(...)); a flat 1+1+...+1 is depth 0
MAX_SHOWN_DIGITS = 20   # an error shows at most this many characters of a number
MAX_HINT_CHARS = 40     # an error's "did you mean" shows a rewritten expression of at most this many, whole


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate."""


def _clip(text, limit=40):
    """A piece of the user's input, cut for an error message."""
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(value):
    """A number for an error message: itself if short, else 'a number of N digits'."""
    if isinstance(value, int) and value.bit_length() > 64:  # ints are bounded by MAX_INT_BITS: str() is cheap
        return f"a number of {len(str(abs(value)))} digits"
    return _clip(str(value), MAX_SHOWN_DIGITS)


def _whole(n, what):
    """n as an int if it is a whole number (5 or 5.0), else refused naming `what`."""
    if isinstance(n, int) or isinstance(n, float) and n.is_integer():
        return int(n)
    raise CalculatorError(f"{what} needs a whole number, got {_describe(n)}")


def _factorial(n):
    """n!, for a whole n in 0..MAX_FACTORIAL."""
    n = _whole(n, "factorial")
    if n < 0:
        raise CalculatorError("factorial needs a non-negative integer")
    if n > MAX_FACTORIAL:
        raise CalculatorError(f"factorial is limited to n <= {MAX_FACTORIAL}")
    return math.factorial(n)


def _round(x, ndigits=None):
    """round(x) or round(x, ndigits), with |ndigits| <= MAX_ROUND_DIGITS."""
    if ndigits is None:
        return round(x)
    ndigits = _whole(ndigits, "round's number of digits")
    if abs(ndigits) > MAX_ROUND_DIGITS:
        raise CalculatorError(f"round's number of digits is limited to {MAX_ROUND_DIGITS} either way")
    return round(x, ndigits)


FUNCTIONS = {
    "sqrt": math.sqrt, "cbrt": lambda x: math.copysign(abs(x) ** (1 / 3), x),
    "exp": math.exp, "log": math.log, "ln": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "asin": math.asin, "acos": math.acos, "atan": math.atan, "atan2": math.atan2,
    "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh,
    "degrees": math.degrees, "radians": math.radians, "hypot": math.hypot,
    "abs": abs, "round": _round, "floor": math.floor, "ceil": math.ceil,
    "min": min, "max": max, "factorial": _factorial, "gcd": math.gcd,
}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def _power(base, exponent):
    """base ** exponent, refused when an integer result would exceed MAX_POWER_BITS."""
    # integer powers: the result's bits, estimated without building it (a huge exponent alone is too large)
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent > MAX_POWER_BITS or exponent * math.log2(abs(base)) > MAX_POWER_BITS:
            raise CalculatorError(f"the power is too large: {_describe(base)} to the power {_describe(exponent)}")
    # float or negative exponents: computed in floats, cheap once the exponent is bounded
    if isinstance(base, float) or isinstance(exponent, float) or exponent < 0:
        if abs(exponent) > MAX_FLOAT_EXPONENT:
            raise CalculatorError("the exponent is too large")
    result = base ** exponent
    if isinstance(result, complex):
        raise CalculatorError("the result is a complex number")
    return result


def _checked(value):
    """A computed value, refused if it is an integer of more than MAX_INT_BITS bits."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError(f"the result is too large (more than {MAX_INT_BITS} bits)")
    return value


def _evaluate(node, depth=0):
    """One AST node -> its number; anything outside the allowed grammar is refused.

    `depth` counts nesting as a reader sees it: a call's arguments, a unary operand and a
    binary operator's right operand go one level deeper; the left operand stays at the
    same level, so a flat chain `1+2+...+60` (which Python parses left-leaning) is not deep.
    """
    if depth > MAX_DEPTH:
        raise CalculatorError("the expression is nested too deeply")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand, depth + 1)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _checked(_power(_evaluate(node.left, depth), _evaluate(node.right, depth + 1)))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _evaluate(node.left, depth), _evaluate(node.right, depth + 1)
        return _checked(BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalculatorError(f"unknown name '{_clip(node.id)}'")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        if node.func.id not in FUNCTIONS:
            raise CalculatorError(f"unknown function '{_clip(node.func.id)}'")
        args = [_evaluate(a, depth + 1) for a in node.args]
        return _checked(FUNCTIONS[node.func.id](*args))
    raise CalculatorError(f"'{type(node).__name__}' is not allowed in a calculation")


# arithmetic as people write it where Python reads something else or nothing, and the form it reads
REWRITES = ((r"(?<=[\d.)])\s*(?:[xX]|times|multiplied by)\s*(?=[\d.(])", "*"),   # 17 x 23, 17 times 23
            (r"(?<=[\d.)])\s*divided by\s*(?=[\d.(])", "/"),
            (r"\s*to the power(?: of)?\s*", "**"),                                 # 2 to the power of 10
            (r"(?<=\d)\s*%\s*of\s*", "/100*"),                                      # 15% of 80
            (r"(?<=\d)\s*%(?!\s*[\d.(])", "/100"),                                  # 15%
            (r"(?<=\d),(?=\d{3}(?!\d))", ""),                                        # 1,200 (else a tuple)
            (r"[$€£]", ""))


def suggest_expression(expression: str) -> str | None:
    """The expression rewritten as the calculator reads it (`17 x 23` -> `17*23`, `15% of 80` ->
    `15/100*80`, `$1,200*3` -> `1200*3`), or None when no rewrite gives one it can evaluate."""
    text = expression
    for pattern, form in REWRITES:
        text = re.sub(pattern, form, text)
    text = text.strip()
    if text == expression.strip():
        return None
    try:
        _value(text)
    except CalculatorError:
        return None
    return text


def evaluate(expression):
    """An arithmetic expression (str) -> int or float. `^` means power; `×` and `÷` are read too.

    Raises CalculatorError for anything it refuses or that has no finite real value; when a
    rewrite of the usual written forms (suggest_expression) can be evaluated and is short, the
    message ends with it, so the model reading the error can mend its call.
    """
    try:
        return _value(expression)
    except CalculatorError as e:
        meant = suggest_expression(expression) if isinstance(expression, str) else None
        if meant is None or len(meant) > MAX_HINT_CHARS:  # shown whole or not at all: a cut one is no call
            raise
        raise CalculatorError(f"{e}; did you mean '{meant}'?") from None


def _value(expression):
    """evaluate() without the suggestion."""
    if not isinstance(expression, str):
        raise CalculatorError("the expression must be a string")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/").strip().rstrip("=").strip()
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: a NUL byte
        raise CalculatorError(f"cannot read '{_clip(expression)}' as arithmetic") from None
    try:
        result = _evaluate(tree.body)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except RecursionError:
        raise CalculatorError("the expression is nested too deeply") from None
    except (OverflowError, ValueError, TypeError) as e:
        if isinstance(e, CalculatorError):
            raise
        raise CalculatorError(f"no real result ({_clip(str(e), 80)})") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise CalculatorError("the result is not a finite number")
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
