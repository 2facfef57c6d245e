"""The house runs one way: the imports between modules follow the design's picture, with no circle.

    config <- math (kernels, layers, loss, optim, quant, sampling, decode) <- model <- generate <- agent
    IO (weights, checkpoint, tokenizer, toolcalls, export, quantize) beside the model;
    data -> train; eval reads data and drives a loaded model.

Read with `ast` from the source, so a test of the picture needs no module imported.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nanoagent"

ROOMS = {  # module (or package) -> the room of the house it belongs to
    "config": "config", "cli": "config",
    "kernels": "math", "kernels_int8": "math", "layers": "math", "loss": "math", "optim": "math",
    "quant": "math", "sampling": "math", "decode": "math", "gradcheck": "math", "threads": "math",
    "model": "model",
    "weights": "io", "checkpoint": "io", "tokenizer": "io", "toolcalls": "io", "export": "io", "quantize": "io",
    "merge": "io",
    "generate": "generate", "batch": "generate",
    "agent": "agent", "chat": "agent", "serve": "agent", "openai_api": "agent",
    "data": "data",
    "train": "train",
    "eval": "eval",
    "rl": "rl", "tuner": "rl",
    "bench": "bench",
}

FORBIDDEN = {  # room -> rooms it must never import
    "config": {"math", "model", "io", "generate", "agent", "data", "train", "eval", "rl", "bench"},
    "math": {"model", "io", "generate", "agent", "data", "train", "eval", "rl", "bench"},
    "model": {"io", "generate", "agent", "data", "train", "eval", "rl", "bench"},
    "io": {"generate", "agent", "data", "train", "eval", "rl", "bench"},
    "generate": {"agent", "data", "train", "eval", "rl", "bench"},
    "agent": {"data", "train", "eval", "rl", "bench"},
    "data": {"generate", "agent", "train", "eval", "rl", "bench"},
    "eval": {"train", "rl", "bench"},
    "train": {"generate", "agent", "eval", "rl", "bench"},
    "rl": {"bench"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str | None:
    parts = module.split(".")
    return ROOMS.get(parts[1]) if len(parts) > 1 else None


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported nanoagent module, at module level?) for every import statement in a file."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, here: str, is_package: bool = False) -> list[tuple[str, bool]]:
    """The same for the source of module `here`."""
    tree = ast.parse(source)
    package = here if is_package else here.rpartition(".")[0]
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            targets = [n for n in names if (PACKAGE.parent / n.replace(".", "/")).with_suffix(".py").exists()
                       or (PACKAGE.parent / n.replace(".", "/")).is_dir()] or [target]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out += [(t, id(node) in top) for t in targets if t == "nanoagent" or t.startswith("nanoagent.")]
    return out


FILES = sorted(PACKAGE.rglob("*.py"))
EDGES = {module_name(f): imports(f) for f in FILES}


def test_every_module_has_a_room():
    assert [m for m in EDGES if m != "nanoagent" and room(m) is None] == []


@pytest.mark.parametrize("module", sorted(EDGES))
def test_no_import_inside_a_function(module):
    """A function-local import is how a circle hides: every import of the package is at the top of its file."""
    assert [t for t, at_top in EDGES[module] if not at_top] == []


@pytest.mark.parametrize("module", sorted(EDGES))
def test_no_import_the_house_forbids(module):
    assert forbidden(module, EDGES[module]) == [], f"{module} ({room(module)}) imports what its room may not"


def forbidden(module: str, edges) -> list[str]:
    """The imports of `module` that its room may not make."""
    return [t for t, _ in edges if room(t) in FORBIDDEN.get(room(module), set())]


def test_no_circle():
    graph = {m: {t for t, _ in ts if t in EDGES and t != m} for m, ts in EDGES.items()}
    graph["nanoagent"] = set()  # the package's names are read lazily (see its __init__)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                raise AssertionError(" -> ".join(path + [m, t]))
            if t not in state:
                visit(t, path + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_the_checker_sees_a_forbidden_edge_and_a_hidden_import():
    """The rules above can fail: math importing the model is caught, and so is an import inside a function."""
    source = "from . import kernels\nfrom .model import Model\n\ndef f():\n    from .generate import load\n"
    edges = imports_in(source, "nanoagent.layers")
    assert forbidden("nanoagent.layers", edges) == ["nanoagent.model", "nanoagent.generate"]
    assert [t for t, at_top in edges if not at_top] == ["nanoagent.generate"]
