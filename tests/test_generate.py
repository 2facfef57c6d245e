"""Generation: streaming text, stop strings, and `python -m nanoagent.generate` on the real weights."""
import subprocess
import sys

import numpy as np
import pytest

from nanoagent.generate import GenerationStats, TextStream, generate_ids
from nanoagent.decode import ContextLengthError


class CharTokenizer:
    """Each id is one byte of UTF-8; incomplete characters decode to U+FFFD like a byte-level BPE."""
    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def stream(text, stop=None):
    s, pieces = TextStream(CharTokenizer(), stop), []
    for b in text.encode():
        pieces.append(s.push(b))
        if s.stopped:
            break
    pieces.append(s.flush())
    return pieces


def test_stream_never_splits_a_character():
    pieces = stream("né😀!")
    assert "".join(pieces) == "né😀!"
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_ends_the_text_and_is_not_shown():
    assert "".join(stream("Answer: 42</tool_call> trailing", stop=["</tool_call>"])) == "Answer: 42"


def test_text_that_may_begin_a_stop_string_is_held_back_then_released():
    pieces = stream("a</b>c", stop=["</bx>"])
    assert "".join(pieces) == "a</b>c"
    assert pieces[1:4] == ["", "", ""]  # "<", "/", "b" wait until they cannot start "</bx>"


def test_generation_stops_at_stop_ids_and_counts(tiny_model):
    ids = np.arange(5)
    free = list(generate_ids(tiny_model, ids, max_new_tokens=12, stop_ids=()))
    stats = GenerationStats()
    stop = free[3]
    stopped = list(generate_ids(tiny_model, ids, max_new_tokens=12, stop_ids=(stop,), stats=stats))
    assert len(free) == 12 and stopped == free[:free.index(stop)]
    assert stats.prompt_tokens == 5 and stats.generated_tokens == len(stopped)


def test_prompt_longer_than_the_context_is_a_clear_error(tiny_model):
    with pytest.raises(ContextLengthError, match="do not fit the context of 128.*Shorten the prompt"):
        next(generate_ids(tiny_model, np.zeros(200, dtype=int), stop_ids=()))


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "nanoagent.generate", *args], input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_cli_streams_a_reply_and_reports_speed(real_model):
    r = run_cli("--prompt", "What is the capital of France?", "--max-new-tokens", "12")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    assert "Prompt: 37 tokens" in r.stderr and "Generation:" in r.stderr and "Peak memory:" in r.stderr


def test_cli_reads_the_prompt_from_stdin_with_a_system_prompt_and_sampling(real_model):
    r = run_cli("--prompt", "-", "--system", "Answer in one word.", "--temperature", "0.7", "--top-p", "0.9",
                "--seed", "1", "--max-new-tokens", "8", "--no-stream", stdin="Name a color.")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "Generation:" in r.stderr


def test_cli_errors_are_one_clear_line(real_model, tmp_path):
    r = run_cli("--prompt", "hi " * 9000)
    assert r.returncode != 0 and "context of 8192" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("--prompt", "hi", "--model", str(tmp_path))
    assert r.returncode != 0 and "not a model folder" in r.stderr and "Traceback" not in r.stderr
