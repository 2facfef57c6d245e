"""`python -m nanoagent.chat`: the REPL in-process with a scripted model, and the real CLI through stdin."""

import io
import subprocess
import sys
from pathlib import Path

from nanoagent.agent import calculator
from nanoagent.agent.scripted import ScriptedModel
from nanoagent.chat import build_parser, repl

ROOT = Path(__file__).resolve().parent.parent
CALL = '<tool_call>[{"name": "calculator", "arguments": {"expression": "17*23"}}]</tool_call>'


def run_repl(model, lines, **kwargs):
    """Feed `lines` to the REPL -> (questions answered, everything it printed)."""
    out = io.StringIO()
    answered = repl(model, input_stream=io.StringIO("".join(line + "\n" for line in lines)), output_stream=out, **kwargs)
    return answered, out.getvalue()


def test_repl_shows_the_call_its_result_and_the_answer():
    model = ScriptedModel([CALL, "17 * 23 is 391."])
    answered, shown = run_repl(model, ["What is 17*23?", "/exit"], tools=[calculator])
    assert answered == 1
    assert "Tools: calculator" in shown
    assert '-> calculator {"expression": "17*23"}' in shown
    assert "<- 391" in shown
    assert shown.index("-> calculator") < shown.index("<- 391") < shown.index("17 * 23 is 391.")


def test_repl_without_streaming_prints_the_answer_once():
    model = ScriptedModel([CALL, "It is 391."])
    _, shown = run_repl(model, ["17*23?"], tools=[calculator], stream=False)
    assert shown.count("It is 391.") == 1 and "<tool_call>" not in shown  # raw call text is not streamed


def test_repl_keeps_history_until_reset():
    model = ScriptedModel(["Hello Ann.", "You are Ann.", "I do not know."])
    answered, shown = run_repl(model, ["I am Ann.", "Who am I?", "/reset", "", "Who am I?", "/quit", "never read"])
    assert answered == 3 and "(conversation cleared)" in shown
    assert [m["role"] for m in model.requests[1]["messages"]] == ["user", "assistant", "user"]
    assert model.requests[2]["messages"] == [{"role": "user", "content": "Who am I?"}]
    assert len(model.requests) == 3  # nothing after /quit was read


def test_repl_ends_cleanly_at_end_of_input_and_reports_max_steps():
    model = ScriptedModel([CALL])  # calls forever
    answered, shown = run_repl(model, ["17*23?"], tools=[calculator], max_steps=2)
    assert answered == 1 and "stopped after 2 steps" in shown
    assert shown.count("<- 391") == 2


def test_plain_chat_has_no_tools():
    model = ScriptedModel(["Hi there!"])
    _, shown = run_repl(model, ["hello"])
    assert "Tools: none (plain chat)" in shown and "Hi there!" in shown
    assert model.requests[0]["tools"] is None


def test_arguments_parse():
    args = build_parser().parse_args(["--tools", "calculator,web_search", "--docs", "d", "--int8", "--max-steps", "3"])
    assert args.tools == "calculator,web_search" and args.docs == "d" and args.int8 and args.max_steps == 3


def run_cli(args, stdin, timeout=300):
    """Run `python -m nanoagent.chat ARGS` with `stdin` -> CompletedProcess (not a tty: a pipe)."""
    return subprocess.run([sys.executable, "-m", "nanoagent.chat", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def test_cli_rejects_an_unknown_tool_before_loading_the_model():
    done = run_cli(["--tools", "calculator,teleport"], "")
    assert done.returncode != 0 and "unknown tool 'teleport'" in done.stderr


def test_cli_through_stdin_with_the_real_model():
    done = run_cli(["--tools", "calculator", "--max-new-tokens", "12", "--max-steps", "2"],
                   "What is 2+2?\n/reset\n/exit\n")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Tools: calculator" in done.stdout
    assert done.stdout.count("> ") >= 3 and "(conversation cleared)" in done.stdout
    reply = done.stdout.split("> ", 2)[1]
    assert reply.strip(), "the model printed nothing"
