"""Tools: schemas from functions, argument validation, calculator, BM25 search, visit_webpage, time."""

import json
import math
import threading
import time
from datetime import datetime, timezone
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Optional

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoagent.agent import Tool, run_call, tool
from nanoagent.agent.calculator import CalculatorError, calculator, evaluate
from nanoagent.agent.clock import get_current_time, now_in
from nanoagent.agent.schema import function_schema, parse_docstring, validate_arguments
from nanoagent.agent.search import BM25, LocalSearch, Searcher, make_web_search, split_passages
from nanoagent.agent.netguard import ALLOW_PRIVATE_ENV
from nanoagent.agent.web import (MAX_TEXT_CHARS, REST_OF_PAGE, FetchError, Page, fetch, html_to_text, main_first,
                                 make_visit_webpage, page_to_text, recipe_text, visit_webpage)
from nanoagent.eval import webpages


# ---------------------------------------------------------------- schemas from functions

class Unit(Enum):
    C = "celsius"
    F = "fahrenheit"


def get_weather(city: str, days: int = 1, unit: Unit = Unit.C, detailed: bool = False,
                hours: Optional[list[int]] = None, mode: Literal["fast", "slow"] = "fast") -> str:
    """Get the weather forecast for a city.

    A second paragraph that is still description.

    Args:
        city: the city name,
            e.g. "Paris"
        days (int): how many days ahead
        unit: temperature unit
        detailed: include hourly data
        hours: which hours to show
        mode: how hard to try

    Returns:
        the forecast as text
    """
    return f"{city} {days} {unit} {detailed} {hours} {mode}"


def test_schema_from_type_hints_and_docstring():
    schema = function_schema(get_weather)
    assert schema["name"] == "get_weather"
    assert schema["description"] == "Get the weather forecast for a city. A second paragraph that is still description."
    props = schema["parameters"]["properties"]
    assert props["city"] == {"type": "string", "description": 'the city name, e.g. "Paris"'}
    assert props["days"] == {"type": "integer", "description": "how many days ahead", "default": 1}
    assert props["unit"]["enum"] == ["celsius", "fahrenheit"] and props["unit"]["default"] == "celsius"
    assert props["detailed"]["type"] == "boolean"
    assert props["hours"]["type"] == "array" and props["hours"]["items"] == {"type": "integer"}
    assert props["mode"]["enum"] == ["fast", "slow"] and props["mode"]["type"] == "string"
    assert schema["parameters"]["required"] == ["city"]


def test_sphinx_docstring_and_decorator_with_overrides():
    @tool(name="adder")
    def add(a: int, b: float = 0.5):
        """Add numbers.

        :param a: first
        :param b: second
        """
        return a + b

    assert isinstance(add, Tool) and add.name == "adder"
    assert add.schema["parameters"]["properties"]["a"]["description"] == "first"
    assert add.schema["parameters"]["properties"]["b"]["type"] == "number"
    assert add(2, 3) == 5  # still callable as the function
    assert parse_docstring(None) == ("", {})


def test_unsupported_hint_is_a_clear_error():
    def f(x: complex):
        """No."""
    with pytest.raises(TypeError, match="no JSON Schema type"):
        function_schema(f)


# ---------------------------------------------------------------- validation

PARAMS = function_schema(get_weather)["parameters"]


@pytest.mark.parametrize("given, expected", [
    ({"city": "Paris"}, {"city": "Paris"}),
    ({"city": "Paris", "days": "3"}, {"city": "Paris", "days": 3}),       # number as a string
    ({"city": "Paris", "days": 3.0}, {"city": "Paris", "days": 3}),       # integral float
    ({"city": "Paris", "detailed": "true"}, {"city": "Paris", "detailed": True}),
    ({"city": 75001}, {"city": "75001"}),                                 # number for a string
    ({"city": "Paris", "hours": ["6", 7]}, {"city": "Paris", "hours": [6, 7]}),
    ({"__positional__": ["Paris", 2]}, {"city": "Paris", "days": 2}),     # f("Paris", 2)
])
def test_validation_accepts_and_coerces_unambiguous_values(given, expected):
    checked, errors = validate_arguments(given, PARAMS)
    assert errors == [] and checked == expected


@pytest.mark.parametrize("given, fragment", [
    ({}, "city: missing required argument"),
    ({"city": "Paris", "days": "three"}, "days: expected integer"),
    ({"city": "Paris", "days": 2.5}, "days: expected integer"),
    ({"city": "Paris", "unit": "kelvin"}, "is not one of"),
    ({"city": "Paris", "detailed": "maybe"}, "detailed: expected boolean"),
    ({"city": "Paris", "colour": "red"}, "colour: unexpected argument"),
    ({"city": ["Paris"]}, "city: expected string"),
    ({"city": True}, "city: expected string"),
    ({"city": "Paris", "hours": [1, "x"]}, "hours[1]: expected integer"),
    ({"__positional__": ["Paris"], "city": "Rome"}, "given twice"),
])
def test_validation_reports_each_problem(given, fragment):
    _, errors = validate_arguments(given, PARAMS)
    assert any(fragment in e for e in errors), errors


def test_run_call_turns_every_failure_into_an_error_result():
    def boom(x: int) -> int:
        """Fails."""
        raise RuntimeError("kaput")
    tools = {"calculator": calculator, "boom": tool(boom)}
    ok = run_call({"name": "calculator", "arguments": {"expression": "6*7"}}, tools)
    assert ok.ok and ok.content == "42"
    unknown = run_call({"name": "nope", "arguments": {}}, tools)
    assert not unknown.ok and "unknown tool 'nope'" in unknown.content and "calculator" in unknown.content
    invalid = run_call({"name": "calculator", "arguments": {}}, tools)
    assert not invalid.ok and "expression: missing required argument" in invalid.content
    failed = run_call({"name": "boom", "arguments": {"x": "1"}}, tools)
    assert not failed.ok and "RuntimeError: kaput" in failed.content
    refused = run_call({"name": "calculator", "arguments": {"expression": "__import__('os')"}}, tools)
    assert not refused.ok and "unknown function" in refused.content


def test_long_and_structured_results_are_formatted():
    @tool
    def big() -> str:
        """Big."""
        return "x" * 10_000

    @tool
    def data() -> dict:
        """Data."""
        return {"a": [1, 2]}
    result = run_call({"name": "big", "arguments": {}}, {"big": big}, max_chars=100)
    assert len(result.content) < 200 and "cut at 100" in result.content
    assert run_call({"name": "data", "arguments": {}}, {"data": data}).content == '{"a": [1, 2]}'


# ---------------------------------------------------------------- calculator

@pytest.mark.parametrize("expression, expected", [
    ("2+3*4", 14), ("(2+3)*4", 20), ("2^10", 1024), ("2**10", 1024), ("7/2", 3.5), ("7//2", 3),
    ("7 % 3", 1), ("-3**2", -9), ("sqrt(16)", 4.0), ("abs(-2.5)", 2.5), ("round(pi, 2)", 3.14),
    ("factorial(10)", 3628800), ("log(e)", 1.0), ("log10(1000)", 3.0), ("max(1, 5, 3)", 5),
    ("3 × 4 ÷ 2", 6.0), ("2 + 2 =", 4), ("1e3 + 1", 1001.0), ("cos(0)", 1.0), ("hypot(3, 4)", 5.0),
])
def test_calculator_evaluates_arithmetic(expression, expected):
    assert evaluate(expression) == pytest.approx(expected)


def test_calculator_output_is_short_text():
    assert calculator("0.1 + 0.2") == "0.3"
    assert calculator("sqrt(16)") == "4"
    assert calculator("10/3") == "3.33333333333"
    assert calculator("2**100") == str(2 ** 100)


@pytest.mark.parametrize("expression, fragment", [
    ("__import__('os').system('echo pwned')", "'Call' is not allowed"),  # a call on an attribute
    ("__import__('os')", "unknown function '__import__'"),
    ("(1).__class__", "Attribute"),
    ("().__class__.__bases__[0]", "'Subscript' is not allowed"),
    ("x + 1", "unknown name 'x'"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("'a' * 10", "not allowed"),
    ("[1, 2]", "not allowed"),
    ("lambda: 1", "not allowed"),
    ("9**9**9", "too large"),
    ("10**5000", "too large"),
    ("2**4097", "too large"),
    ("factorial(100000)", "limited"),
    ("1/0", "division by zero"),
    ("sqrt(-1)", "no real result"),
    ("(-8)**0.5", "complex"),
    ("10.0**400", "no real result"),
    ("1+" * 200 + "1", "longer than"),
    ("-" * 60 + "1", "nested too deeply"),
    ("2 +", "cannot read"),
    ("sqrt(x=4)", "not allowed"),
])
def test_calculator_refuses_unsafe_or_huge_input(expression, fragment):
    with pytest.raises(CalculatorError) as info:
        evaluate(expression)
    assert fragment in str(info.value)


def test_calculator_never_calls_eval(monkeypatch):
    import builtins

    def no_eval(*args, **kwargs):
        raise AssertionError("eval was called")
    monkeypatch.setattr(builtins, "eval", no_eval)
    assert evaluate("1 + 2 * 3") == 7


def _timed_evaluate(expression):
    """evaluate(expression) -> (result or the CalculatorError, seconds taken)."""
    start = time.perf_counter()
    try:
        result = evaluate(expression)
    except CalculatorError as e:
        result = e
    return result, time.perf_counter() - start


def test_a_long_flat_chain_is_not_deep_nesting():
    assert evaluate("+".join(["1"] * 60)) == 60
    assert evaluate("+".join(["1"] * 150)) == 150                 # 299 characters, just under the length limit
    assert evaluate("*".join(["2"] * 60) + "-" + "-".join(["1"] * 40)) == 2 ** 60 - 40
    assert evaluate("1*2+3*4-5/5+" * 20 + "0") == 20 * 13
    assert evaluate("(" * 40 + "1" + "+1)" * 40) == 41               # left-leaning, parenthesised


@pytest.mark.parametrize("expression", [
    "1+(" * 60 + "1" + ")" * 60,                                   # nesting a reader sees
    "abs(" * 55 + "1" + ")" * 55,
    "-(" * 60 + "1" + ")" * 60,
    "2**" * 60 + "1",                                              # ** groups to the right
])
def test_deep_nesting_is_still_refused(expression):
    result, seconds = _timed_evaluate(expression)
    assert isinstance(result, CalculatorError) and "nested too deeply" in str(result) and seconds < 1.0


@pytest.mark.parametrize("expression, fragment", [
    ("round(2**4000, -10**9)", "round's number of digits is limited"),   # built 10**(10**9): hung
    ("round(1, -10**7)", "limited to"),                                    # took seconds
    ("round(1.5, 10**9)", "limited to"),
    ("round(2, 0.5)", "whole number"),
    ("factorial(10**400)", "limited"),
    ("factorial(2.5)", "whole number"),
    ("factorial(-1)", "non-negative"),
    ("2**(2**4096)", "too large"),
    ("(2**4096)**2", "a number of 1234 digits"),
    ("2**4096*2**4096*2**4096", "too large"),
    ("gcd(2**4096*2**4096, 3)", "too large"),
    ("(2**4096)**0.5", "no real result"),
    ("2.0**(10**7)", "exponent is too large"),
    ("1e308*10", "not a finite number"),
])
def test_function_and_operator_arguments_are_bounded(expression, fragment):
    result, seconds = _timed_evaluate(expression)
    assert seconds < 1.0, f"{expression}: {seconds:.2f} s"
    assert isinstance(result, CalculatorError) and fragment in str(result)
    assert len(str(result)) < 100                                      # no 1,300-digit number in the message


def test_bounded_functions_still_compute():
    from nanoagent.agent.calculator import MAX_FACTORIAL, MAX_ROUND_DIGITS
    assert evaluate("round(12345, -2)") == 12300 and evaluate("round(2.675, 2.0)") == round(2.675, 2)
    assert evaluate(f"round(2**4000, -{MAX_ROUND_DIGITS})") == round(2 ** 4000, -MAX_ROUND_DIGITS)
    assert evaluate(f"factorial({MAX_FACTORIAL})") == math.factorial(MAX_FACTORIAL)
    assert "limited" in str(_timed_evaluate(f"factorial({MAX_FACTORIAL + 1})")[0])
    assert evaluate("2**4096") == 2 ** 4096 and evaluate("1**(10**300)") == 1 and evaluate("(-1)**(10**300+1)") == -1


_calc_tokens = st.sampled_from([
    "1", "2", "9", "0.5", "1e308", "10**9", "-10**9", "2**4096", "9" * 40, "pi", "(", ")", ",", "+", "-", "*", "/", "//",
    "%", "**", "^", "round(", "factorial(", "gcd(", "sqrt(", "log(", "exp(", "min(", "abs(", "hypot(", "cbrt(", "floor(",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_calc_tokens, min_size=1, max_size=30).map("".join))
def test_any_expression_answers_or_is_refused_quickly_and_briefly(expression):
    result, seconds = _timed_evaluate(expression)
    assert seconds < 1.0, f"{expression}: {seconds:.2f} s"
    if isinstance(result, CalculatorError):
        assert len(str(result)) < 120, str(result)
    else:
        assert isinstance(result, (int, float)) and not isinstance(result, bool)
        assert len(calculator(expression)) <= 2500                     # at most MAX_INT_BITS' 2467 digits


# ---------------------------------------------------------------- BM25 and the offline search

CORPUS = [
    "The cat sat on the mat. Cats are small furry animals.",
    "Dogs are loyal animals and love to play fetch in the park.",
    "The stock market fell sharply today as investors sold shares.",
    "A recipe for bread: flour, water, salt and yeast. Knead the dough.",
    "Quantum computers use qubits; a qubit can hold a superposition.",
]


def test_bm25_ranks_the_relevant_document_first():
    index = BM25(CORPUS)
    assert index.top("cats on a mat", 1)[0][0] == 0
    assert index.top("qubit superposition", 1)[0][0] == 4
    assert index.top("bread dough yeast", 1)[0][0] == 3
    assert index.top("zebra", 3) == []  # no shared term, no result


def test_bm25_matches_a_direct_computation_of_the_formula():
    k1, b = 1.2, 0.6
    index = BM25(CORPUS, k1=k1, b=b)
    docs = [[w for w in d.lower().replace(".", " ").replace(",", " ").replace(":", " ").replace(";", " ").split()]
            for d in CORPUS]
    avgdl = np.mean([len(d) for d in docs])
    query = ["the", "animals", "cat"]
    expected = []
    for d in docs:
        s = 0.0
        for t in query:
            df = sum(t in other for other in docs)
            idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            tf = d.count(t)
            s += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
        expected.append(s)
    np.testing.assert_allclose(index.scores(" ".join(query)), expected, rtol=1e-12)


def test_bm25_prefers_rarer_terms_and_shorter_documents():
    index = BM25(["apple banana", "apple banana " + "filler " * 50, "apple cherry"])
    scores = index.scores("apple banana")
    assert scores[0] > scores[1] > 0  # same matches, the short document wins
    assert index.scores("cherry")[2] > index.scores("apple")[2]  # the rare term weighs more


def test_split_passages_respects_the_size():
    text = "\n\n".join(" ".join(f"w{i}_{j}" for j in range(50)) for i in range(5))
    passages = split_passages(text, words=120)
    assert all(len(p.split()) <= 120 for p in passages)
    assert sum(len(p.split()) for p in passages) == 250
    assert split_passages(" ".join(["x"] * 300), words=100) == [" ".join(["x"] * 100)] * 3


@pytest.fixture
def docs_folder(tmp_path):
    (tmp_path / "paris.md").write_text("# Paris\n\nParis is the capital of France, on the Seine river.\n")
    (tmp_path / "python.txt").write_text("Python is a programming language created by Guido van Rossum.\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "moon.html").write_text("<html><head><title>The Moon</title><style>p{}</style></head>"
                                   "<body><p>The Moon orbits the Earth every 27 days.</p></body></html>")
    (tmp_path / "image.png").write_bytes(b"\x89PNG not text")
    return tmp_path


def test_local_search_over_a_folder(docs_folder):
    search = LocalSearch(docs_folder)
    assert {p.source for p in search.passages} == {"paris.md", "python.txt", "sub/moon.html"}
    best = search.search("capital of France", 1)[0]
    assert best["title"] == "Paris" and best["url"] == "paris.md" and "Seine" in best["snippet"]
    moon = search.search("how long does the moon take to orbit earth", 1)[0]
    assert moon["title"] == "The Moon" and "p{}" not in moon["snippet"]


def test_web_search_tool_offline(docs_folder):
    web_search = make_web_search(docs=docs_folder)
    text = web_search("who created python", max_results=2)
    assert text.startswith("1. python (python.txt)") and "Guido" in text
    assert web_search("xylophone") == "No results found."
    assert Searcher(docs=docs_folder).choose_backend() == "local"


def test_offline_search_without_documents_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NANOAGENT_DOCS", raising=False)
    result = run_call({"name": "web_search", "arguments": {"query": "x"}},
                      {"web_search": make_web_search(backend="local")})
    assert not result.ok and "--docs" in result.content


# ---------------------------------------------------------------- a loopback HTTP server
# Loopback is refused by default (tests/test_web_safety.py): these tests opt in.

PAGE = ("<!doctype html><html><head><title>Test  Page</title><script>var secret = 1;</script></head>"
        "<body><h1>Hello</h1><p>First   paragraph with <a href='/x'>a link</a>.</p>"
        "<ul><li>one</li><li>two</li></ul><noscript>hidden</noscript><p>Caf&eacute; &amp; more</p></body></html>")

SEARX = {"results": [{"title": "Result A", "url": "https://a.example/", "content": "About A"},
                     {"title": "Result B", "url": "https://b.example/", "content": "About B"}]}

DDG = ('<div class="result"><a class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fexample.org%2Fpage&rut=x">'
       'Example <b>Page</b></a><a class="result__snippet" href="#">An example   snippet.</a></div>'
       '<div class="result"><a class="result__a" href="https://second.example/">Second</a>'
       '<div class="result__snippet">Another one.</div></div>')


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, code, body, content_type="text/html; charset=utf-8", headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/page":
            self.send(200, PAGE)
        elif path == "/redirect":
            self.send(302, "", headers=[("Location", "/page")])
        elif path == "/loop":
            self.send(302, "", headers=[("Location", "/loop")])
        elif path == "/to-file":
            self.send(302, "", headers=[("Location", "file:///etc/passwd")])
        elif path == "/big":
            self.send(200, "<p>" + "a" * 3_000_000 + "</p>")
        elif path == "/slow":
            time.sleep(3)
            self.send(200, PAGE)
        elif path == "/plain":
            self.send(200, "just text", "text/plain")
        elif path == "/binary":
            self.send(200, b"\x00\x01", "application/octet-stream")
        elif path == "/search":
            self.send(200, json.dumps(SEARX), "application/json")
        elif path == "/html/":
            self.send(200, DDG)
        else:
            self.send(404, "not found")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_html_to_text_keeps_visible_text_only():
    title, text = html_to_text(PAGE)
    assert title == "Test Page"
    assert text.splitlines() == ["# Hello", "First paragraph with a link.", "- one", "- two", "Café & more"]
    assert "secret" not in text and "hidden" not in text


MENU = "".join(f"<li><a href='/s{i}'>Section number {i} of the site</a></li>" for i in range(150))
ARTICLE_PAGE = (
    "<html><head><title>Bridge  history</title></head><body>"
    f"<div class='cookie-banner'>We use cookies to improve your experience.</div><nav><ul>{MENU}</ul></nav>"
    "<article><h1>The old bridge</h1>"
    + "".join(f"<p>Paragraph {i} tells how the river was crossed by ferry before the bridge, and how the town grew "
              f"on both banks over the following decades.</p>" for i in range(3))
    + "<p>The bridge opened to traffic on 3 May 1932 after four years of building.</p></article>"
    "<footer>Copyright, contact, imprint and a list of partner sites.</footer></body></html>")


def test_the_main_text_comes_first_within_the_budget():
    assert len(html_to_text(ARTICLE_PAGE)[1]) > MAX_TEXT_CHARS                  # the menu alone fills the budget
    assert "3 May 1932" not in html_to_text(ARTICLE_PAGE)[1][:MAX_TEXT_CHARS]   # so the old cut lost the answer
    text = page_to_text(Page("https://example.org/bridge", 200, "text/html", ARTICLE_PAGE, False))
    head, body = text.split("\n\n", 1)
    assert head == "Title: Bridge history\nURL: https://example.org/bridge"
    assert body.startswith("The old bridge\nParagraph 0") and "3 May 1932" in body
    assert body.index("3 May 1932") < body.index(REST_OF_PAGE) < body.index("Section number 0")
    assert len(body) <= MAX_TEXT_CHARS + len("\n[... more text not shown]")
    assert body.count("Paragraph 1 tells") == 1                                 # the rest leaves out what came first


def test_a_page_that_fits_is_read_in_its_own_order():
    assert main_first(PAGE) == html_to_text(PAGE)
    assert main_first(ARTICLE_PAGE, max_chars=100_000) == html_to_text(ARTICLE_PAGE)


def test_a_declared_recipe_is_read_first():
    recipe = {"@context": "https://schema.org", "@graph": [
        {"@type": "WebPage", "name": "x"},
        {"@type": ["Recipe", "Thing"], "name": "Pancakes",
         "recipeIngredient": ["200 g flour", "2 eggs", "300 ml <b>milk</b> &amp; water"],
         "recipeInstructions": [{"@type": "HowToSection", "itemListElement": [
             {"@type": "HowToStep", "text": "Whisk everything."}, {"@type": "HowToStep", "text": " Fry  thin. "}]}]}]}
    story = "".join(f"<p>A long story about pancakes, number {i}, that goes on and on before the recipe.</p>"
                    for i in range(60))
    html = (f"<html><head><script type='application/ld+json'>{json.dumps(recipe)}</script>"
            "<script type='application/ld+json'>{not json</script></head>"
            f"<body><article>{story}<p>Recipe card: 200 g flour...</p></article></body></html>")
    assert recipe_text(html) == ("Ingredients:\n- 200 g flour\n- 2 eggs\n- 300 ml milk & water\n"
                                 "Steps:\n1. Whisk everything.\n2. Fry thin.")
    assert main_first(html)[1].startswith(recipe_text(html) + "\nA long story")
    assert recipe_text("<p>no recipe</p>") == ""


def test_saved_pages_keep_the_answer_within_the_budget():
    """Real news, documentation, recipe and encyclopedia pages (tests/fixtures/pages/): the answer to a
    question about each survives visit_webpage's cut on at least 90% of them (before: 21 of 30)."""
    for row in webpages.read_pages():
        assert webpages.survives(row["answer"], html_to_text(row["html"])[1]), row["file"]  # each page holds its answer
    s = webpages.evaluate()["summary"]
    assert s["pages"] >= 12
    assert s["new_tool"] >= 0.9 * s["pages"] and s["new_agent"] >= 0.9 * s["pages"], s
    assert s["new_tool"] > s["old_tool"], s


def test_visit_webpage_reads_an_html_page(server):
    text = make_visit_webpage(allow_private=True)(server + "/page")
    assert text.startswith("Title: Test Page\nURL: " + server + "/page")
    assert "# Hello" in text and "- two" in text and "secret" not in text


def test_redirects_are_followed_and_bounded(server):
    page = fetch(server + "/redirect", allow_private=True)
    assert page.url == server + "/page" and page.status == 200 and "Hello" in page.body
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetch(server + "/loop", max_redirects=3, allow_private=True)
    with pytest.raises(FetchError, match="only http and https"):
        fetch(server + "/to-file", allow_private=True)


def test_oversize_body_is_cut_at_the_cap(server):
    page = fetch(server + "/big", max_bytes=10_000, allow_private=True)
    assert page.truncated and len(page.body) == 10_000
    assert "[page cut at the size limit]" in page_to_text(page)


def test_slow_server_times_out(server):
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch(server + "/slow", timeout=0.5, allow_private=True)
    assert time.monotonic() - start < 2.5


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "javascript:alert(1)",
                                 "data:text/html,<p>x</p>", "/relative/path", "http://"])
def test_other_schemes_are_refused(url):
    with pytest.raises(FetchError):
        fetch(url)
    result = run_call({"name": "visit_webpage", "arguments": {"url": url}}, {"visit_webpage": visit_webpage})
    assert not result.ok and result.content.startswith("Error:")


def test_http_errors_plain_text_and_binary(server):
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(server + "/missing", allow_private=True)
    assert page_to_text(fetch(server + "/plain", allow_private=True)).endswith("just text")
    with pytest.raises(FetchError, match="cannot read content"):
        page_to_text(fetch(server + "/binary", allow_private=True))


def test_unreachable_host_is_a_fetch_error():
    with pytest.raises(FetchError, match="could not reach"):
        fetch("http://127.0.0.1:9/", timeout=2, allow_private=True)  # the discard port: nothing listens there


def test_online_backends_against_a_local_server(server, docs_folder, monkeypatch):
    searx = Searcher(backend="searxng", searxng_url=server)  # the user's own instance: a local address is fine
    assert [r["title"] for r in searx.search("anything", 2)] == ["Result A", "Result B"]
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")  # DuckDuckGo's endpoint is fetched with the environment's setting
    ddg = Searcher(backend="duckduckgo", duckduckgo_url=server + "/html/")
    results = ddg.search("anything", 5)
    assert results[0] == {"title": "Example Page", "url": "https://example.org/page", "snippet": "An example snippet."}
    assert results[1]["url"] == "https://second.example/" and results[1]["snippet"] == "Another one."
    # a failing online backend falls back to the local documents when there are some
    broken = Searcher(backend="searxng", searxng_url=server + "/missing", docs=docs_folder)
    assert broken.search("capital of France", 1)[0]["url"] == "paris.md"


def test_backend_choice_from_environment(monkeypatch, server):
    monkeypatch.delenv("NANOAGENT_DOCS", raising=False)
    monkeypatch.setenv("NANOAGENT_SEARXNG_URL", server)
    monkeypatch.delenv("NANOAGENT_SEARCH", raising=False)
    assert Searcher().choose_backend() == "searxng"
    monkeypatch.setenv("NANOAGENT_SEARCH", "bogus")
    with pytest.raises(ValueError, match="unknown search backend"):
        Searcher().choose_backend()


# ---------------------------------------------------------------- time

def test_get_current_time_is_timezone_aware():
    fixed = datetime(2024, 1, 15, 12, 0, tzinfo=timezone.utc)
    assert now_in("Asia/Tokyo", fixed).hour == 21
    assert now_in("America/New_York", fixed).hour == 7
    assert now_in("utc", fixed).hour == 12
    text = get_current_time("Europe/Paris")
    parsed = datetime.fromisoformat(text.split(" ")[0])
    assert parsed.utcoffset() is not None
    assert abs((parsed - datetime.now(timezone.utc)).total_seconds()) < 60
    with pytest.raises(ValueError, match="unknown time zone"):
        now_in("Mars/Olympus_Mons")
