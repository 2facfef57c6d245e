"""`python -m nanoagent.bench serve --minutes N`: a few seconds of the soak on the tiny model pass, and
each of its checks fails when what it checks is wrong (a stream cut short, a status not the one expected,
a reply that differs when replayed, anything unexpected in the verdict)."""
import json
import random
import re
import subprocess
import sys
from argparse import Namespace

import pytest

from nanoagent.bench.serve import Malformed, Server, Soak, read_stream, report
from test_serve import USER, scripted, serving


def test_a_short_soak_passes_on_the_tiny_model(tiny_long):  # a context that holds the tools prompt
    r = subprocess.run([sys.executable, "-m", "nanoagent.bench", "serve", "--model", str(tiny_long), "--minutes", "0.1",
                        "--clients", "4", "--slots", "4", "--max-tokens", "8", "--replays", "8"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    sent = re.search(r"sent: (\d+) requests \([\d.]+/s\): valid (\d+), streamed (\d+), cancelled (\d+), "
                     r"malformed (\d+)", out)
    assert sent, out
    total, *kinds = map(int, sent.groups())
    assert all(k > 0 for k in kinds) and sum(kinds) == total
    line = out.split("refused as expected: ")[1].splitlines()[0]
    refused = dict(map(int, pair) for pair in re.findall(r"(\d{3}) x(\d+)", line))
    assert set(refused) <= {400, 401, 404, 405, 413} and sum(refused.values()) == kinds[3]
    assert re.search(r"^unexpected: 0$", out, re.M), out
    assert re.search(r"^server log: \d+ lines, 0 tracebacks$", out, re.M), out
    rss = re.search(r"first \d+ s median ([\d.]+), last \d+ s median ([\d.]+): ([\d.]+)x", out)
    assert rss and float(rss.group(1)) > 0 and float(rss.group(3)) == pytest.approx(
        float(rss.group(2)) / float(rss.group(1)), abs=2e-3), out
    assert re.search(r"^replayed alone: 8 of 8 greedy replies identical$", out, re.M), out
    assert out.splitlines()[-1].startswith(f"verdict: pass: {total} requests, nothing unexpected")


# ---- each check can fail -----------------------------------------------------------------------------

def event(payload) -> bytes:
    return f"data: {json.dumps(payload)}\n".encode()


def chunk(delta, finish=None):
    return event({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


WHOLE = [chunk({"role": "assistant", "content": ""}), b"\n", chunk({"content": "Hi"}), chunk({}, "stop"),
         event({"choices": [], "usage": {"completion_tokens": 1}}), b"data: [DONE]\n"]


@pytest.mark.parametrize("lines,problem", [
    (WHOLE, None),
    (WHOLE[:-1], "without [DONE]"),
    (WHOLE[:3] + WHOLE[4:], "without a finish_reason"),
    (WHOLE[:4] + WHOLE[5:], "without usage"),
    (WHOLE[:3] + [event({"error": {"message": "the server is shutting down"}})] + WHOLE[-1:], "shutting down"),
    (WHOLE + [chunk({"content": "late"})], "not an event where one may be"),
    (WHOLE[:2] + [b": a comment\n"] + WHOLE[2:], "not an event"),
])
def test_a_stream_is_read_whole_or_said_to_be_wrong(lines, problem):
    reply, said = read_stream(lines)
    if problem is None:
        assert (reply, said) == (("Hi", [], "stop"), None)
    else:
        assert reply is None and problem in said


def soak_on(url, **options) -> Soak:
    """A Soak's checks against a server in this process (no process of its own: no RSS, no log)."""
    args = Namespace(slots=4, max_tokens=8, replays=3, model=None, int8=False, minutes=0.01, clients=1,
                     max_rss_growth=1.1, **options)
    return Soak(Server(None, int(re.search(r":(\d+)/", url).group(1)), "none", 1024), args)


def test_a_refusal_with_another_status_is_unexpected():
    with serving(scripted("ok")) as url:
        run = soak_on(url)
        run.refusals = [Malformed("an empty body", 400, b"")]
        assert run.malformed(random.Random(0)) is None and run.refused == {400: 1}
        run.refusals = [Malformed("an empty body", 413, b"")]
        assert "status 400, expected 413" in run.malformed(random.Random(0))
        run.refusals = [Malformed("a fine request", 400, json.dumps({"model": "m", "messages": USER}).encode())]
        assert "status 200, expected 400" in run.malformed(random.Random(0))


def test_a_reply_that_differs_when_replayed_is_counted():
    with serving(scripted("ok")) as url:
        run = soak_on(url)
        body = {"model": "m", "messages": USER, "temperature": 0}
        run.sample = [(body, ("ok", [], "stop")), (body, ("ok!", [], "stop")),
                      ({**body, "stream": True, "stream_options": {"include_usage": True}}, ("ok", [], "stop"))]
        run.replay()
    assert run.same == 2 and len(run.differ) == 1 and "('ok!', [], 'stop') under load" in run.differ[0]


def test_the_verdict_fails_on_anything_unexpected(capsys):
    with serving(scripted("ok")) as url:
        run = soak_on(url)
    run.sent.update(valid=3, malformed=1)
    run.rss = [(0.1, 100.0), (0.2, 100.0), (0.3, 101.0), (0.5, 104.0), (0.6, 104.0)]  # windows of 0.2 s
    report(run, 0.6, 0.02, alive=True)
    assert capsys.readouterr().out.splitlines()[-1] == ("verdict: pass: 4 requests, nothing unexpected, RSS 1.040x "
                                                        "(at most 1.1x), 0 of 0 replays identical")
    run.unexpected, run.problems = 1, ["valid: status 500: internal server error"]
    run.rss[-2:] = [(0.5, 120.0), (0.6, 120.0)]
    with pytest.raises(SystemExit):
        report(run, 0.6, 0.02, alive=False)
    out = capsys.readouterr().out
    assert "\n  valid: status 500" in out
    assert out.splitlines()[-1] == ("verdict: FAIL: 1 unexpected answers; the server died; "
                                    "RSS grew 1.200x, over the 1.1x allowed")
