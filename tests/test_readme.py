"""The README's promises: its Python snippet runs as written on the real weights, and its setup
names the test command CI runs."""
import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def snippet() -> str:
    """The first ```python block of the README's "Use it" section."""
    section = README.read_text().split("## Use it", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_snippet_runs_as_written(real_model):
    code = snippet()
    assert "nanoagent.load()" in code and "nanoagent.Agent" in code
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    text = out.getvalue()
    assert "Paris" in text  # model.chat answered the first question
    assert "'calculator'" in text  # parse_tool_calls' result was printed


def test_the_setup_names_the_test_command_ci_runs():
    setup = README.read_text().split("## Setup", 1)[1].split("\n## ", 1)[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest" in setup and "python -m pytest" in ci
