"""JSON Schema for tools: built from a Python function, and used to check a call's arguments.

Only the part of JSON Schema that tool definitions use is covered: an object of named
properties, `required`, the scalar types, arrays with `items`, nested objects, `enum`,
and a list of types (`["string", "null"]`). Checking also coerces what a small model
gets wrong in an unambiguous way: `"42"` for an integer, `"true"` for a boolean, `3.0`
for an integer, `7` for a string.
"""

import enum
import inspect
import re
import types
import typing

# ---------------------------------------------------------------- building a schema

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean",
               list: "array", tuple: "array", dict: "object", type(None): "null"}


def type_to_schema(hint):
    """A Python type hint -> a JSON Schema dict (str -> string, list[int] -> array of integer, ...)."""
    if hint is inspect.Parameter.empty or hint is typing.Any:
        return {}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        values = list(args)
        kinds = {_JSON_TYPES.get(type(v)) for v in values}
        return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return type_to_schema(options[0]) if len(options) == 1 else {"anyOf": [type_to_schema(a) for a in options]}
    if origin in (list, tuple, set):
        schema = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = type_to_schema(args[0])
        return schema
    if origin is dict:
        return {"type": "object"}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [m.value for m in hint]}
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    raise TypeError(f"no JSON Schema type for the hint {hint!r}; use str, int, float, bool, list, dict or Literal")


def parse_docstring(doc):
    """A docstring -> (description, {parameter: description}).

    The description is the text before the first section; parameters come from a
    Google-style `Args:` section (`name (type): text`, continued on indented lines)
    or Sphinx-style `:param name: text` lines.
    """
    doc = inspect.cleandoc(doc or "")
    params = {}
    for name, text in re.findall(r":param\s+(?:\w+\s+)?(\w+):\s*(.*)", doc):
        params[name] = text.strip()
    section = re.search(r"^(?:Args|Arguments|Parameters):\s*\n(.*?)(?=^\S|\Z)", doc, re.MULTILINE | re.DOTALL)
    if section:
        current, indent = None, 0
        for line in section.group(1).splitlines():
            match = re.match(r"\s+(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", line)
            if match and (current is None or len(line) - len(line.lstrip()) <= indent):
                current, indent = match.group(1), len(line) - len(line.lstrip())
                params[current] = match.group(2).strip()
            elif current and line.strip():
                params[current] = (params[current] + " " + line.strip()).strip()
    description = re.split(r"^(?:Args|Arguments|Parameters|Returns|Raises|Example|Examples):|^:param",
                           doc, maxsplit=1, flags=re.MULTILINE)[0]
    return " ".join(description.split()), params


def function_schema(fn, name=None, description=None):
    """A function -> {"name", "description", "parameters"} from its signature, hints and docstring."""
    doc_description, doc_params = parse_docstring(fn.__doc__)
    hints = typing.get_type_hints(fn)
    properties, required = {}, []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        prop = type_to_schema(hints.get(param.name, inspect.Parameter.empty))
        if param.name in doc_params:
            prop["description"] = doc_params[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif param.default is not None:
            prop["default"] = param.default.value if isinstance(param.default, enum.Enum) else param.default
        properties[param.name] = prop
    parameters = {"type": "object", "properties": properties, "required": required}
    return {"name": name or fn.__name__, "description": description or doc_description, "parameters": parameters}


# ---------------------------------------------------------------- checking arguments

_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False}
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _coerce(value, kind):
    """`value` as JSON type `kind`, or raise ValueError; only unambiguous conversions."""
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value.strip())
    elif kind == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            text = value.strip()
            return int(text) if _INT.fullmatch(text) else float(text)
    elif kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
    elif kind == "array":
        if isinstance(value, (list, tuple)):
            return list(value)
    elif kind == "object":
        if isinstance(value, dict):
            return value
    elif kind == "null":
        if value is None:
            return None
    raise ValueError(f"expected {kind}, got {_json_type(value)}")


def _json_type(value):
    """The JSON type name of a Python value, for messages."""
    if isinstance(value, bool):
        return "boolean"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def check_value(value, schema, where):
    """One value against one schema -> (value, coerced where needed), or raise ValueError naming `where`."""
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                return check_value(value, option, where)
            except ValueError:
                pass
        raise ValueError(f"{where}: {_short(value)} matches none of the allowed types")
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        # exact type first, so "7" stays a string when ["string", "integer"] allows both
        for kind in sorted(kinds, key=lambda k: k != _json_type(value)):
            try:
                value = _coerce(value, kind)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"{where}: expected {' or '.join(kinds)}, got {_json_type(value)} {_short(value)}")
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_short(v) for v in schema["enum"])
        raise ValueError(f"{where}: {_short(value)} is not one of {allowed}")
    if isinstance(value, list) and "items" in schema:
        value = [check_value(v, schema["items"], f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and "properties" in schema:
        value, errors = check_object(value, schema, where)
        if errors:
            raise ValueError("; ".join(errors))
    return value


def check_object(arguments, schema, where=""):
    """An arguments dict against an object schema -> (checked arguments, [error strings])."""
    properties = schema.get("properties", {})
    checked, errors = {}, []
    for name in schema.get("required", []):
        if name not in arguments:
            errors.append(f"{where + '.' if where else ''}{name}: missing required argument")
    for name, value in arguments.items():
        label = f"{where}.{name}" if where else name
        if name not in properties:
            if schema.get("additionalProperties", False) is False and properties:
                errors.append(f"{label}: unexpected argument (expected {', '.join(properties)})")
            else:
                checked[name] = value
            continue
        try:
            checked[name] = check_value(value, properties[name], label)
        except ValueError as e:
            errors.append(str(e))
    return checked, errors


def validate_arguments(arguments, parameters):
    """A call's arguments against its tool's `parameters` schema -> (arguments, errors).

    Positional arguments from Python-style calls (`f(1, 2)`, read by the parser into
    `"__positional__"`) are first given the names of the schema's properties, in order.
    """
    arguments = dict(arguments)
    positional = arguments.pop("__positional__", [])
    names = list(parameters.get("properties", {}))
    if len(positional) > len(names):
        return arguments, [f"takes {len(names)} arguments, got {len(positional)} positional ones"]
    for name, value in zip(names, positional):
        if name in arguments:
            return arguments, [f"{name}: given twice"]
        arguments[name] = value
    return check_object(arguments, parameters)


def _short(value, limit=60):
    """A value as a short string for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
