"""The `web_search` tool: a real search engine when online, BM25 over local documents when not.

Backends, chosen in this order unless one is named:
1. `local` when a documents folder is given (`--docs DIR`, or `NANOAGENT_DOCS`);
2. `searxng` when `NANOAGENT_SEARXNG_URL` names a SearXNG instance (its JSON API,
   `GET {url}/search?q=...&format=json`, must be enabled in the instance's settings);
3. `duckduckgo` (its HTML endpoint) when the network answers;
4. `local` otherwise.
`NANOAGENT_SEARCH=local|searxng|duckduckgo` forces one. An online search that fails
falls back to the local documents when there are some.

The offline search is BM25 (Robertson & Zaragoza, 2009) written in NumPy over passages
of the `.txt`, `.md` and `.html` files of a folder. For a query q and passage d:

    score(q, d) = sum_t  idf(t) * tf(t,d) (k1 + 1) / (tf(t,d) + k1 (1 - b + b |d| / avgdl))
    idf(t)      = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
"""

import json
import os
import re
import socket
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from .registry import tool
from .web import FetchError, fetch, html_to_text

SEARXNG_URL_ENV = "NANOAGENT_SEARXNG_URL"
BACKEND_ENV = "NANOAGENT_SEARCH"
DOCS_ENV = "NANOAGENT_DOCS"
DUCKDUCKGO_URL = "https://html.duckduckgo.com/html/"
DOC_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".html", ".htm")
PASSAGE_WORDS = 120
SNIPPET_CHARS = 400

_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize(text):
    """Text -> lowercase word tokens."""
    return _WORD.findall(text.lower())


# ---------------------------------------------------------------- BM25 in NumPy

class BM25:
    """A BM25 index over a list of texts; `scores(query)` -> (N,) relevance of each text.

    Postings are stored term-major (CSR): for term t, `doc_ids[starts[t]:starts[t+1]]` are
    the texts holding it and `counts[...]` how often.
    """

    def __init__(self, texts, k1=1.5, b=0.75):
        self.k1, self.b = k1, b
        self.vocab, term_ids, doc_ids, counts = {}, [], [], []
        self.doc_len = np.zeros(len(texts), dtype=np.float64)  # (N,) tokens per text
        for d, text in enumerate(texts):
            tokens = tokenize(text)
            self.doc_len[d] = len(tokens)
            for word, count in Counter(tokens).items():
                term_ids.append(self.vocab.setdefault(word, len(self.vocab)))
                doc_ids.append(d)
                counts.append(count)
        order = np.argsort(np.array(term_ids, dtype=np.int64), kind="stable")
        terms = np.array(term_ids, dtype=np.int64)[order]
        self.doc_ids = np.array(doc_ids, dtype=np.int64)[order]     # (nnz,)
        self.counts = np.array(counts, dtype=np.float64)[order]     # (nnz,)
        self.starts = np.searchsorted(terms, np.arange(len(self.vocab) + 1))  # (V+1,)
        df = np.diff(self.starts).astype(np.float64)                 # (V,) texts holding each term
        n = len(texts)
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))              # (V,)
        self.avgdl = max(self.doc_len.mean(), 1.0) if n else 1.0

    def scores(self, query):
        """query (str) -> (N,) BM25 score of every text."""
        scores = np.zeros(len(self.doc_len), dtype=np.float64)
        norm = self.k1 * (1 - self.b + self.b * self.doc_len / self.avgdl)  # (N,)
        for word in set(tokenize(query)):
            t = self.vocab.get(word)
            if t is None:
                continue
            d = self.doc_ids[self.starts[t]:self.starts[t + 1]]    # texts with term t
            tf = self.counts[self.starts[t]:self.starts[t + 1]]
            scores[d] += self.idf[t] * tf * (self.k1 + 1) / (tf + norm[d])  # each d once per term
        return scores

    def top(self, query, k):
        """query -> [(index, score)] of the k best texts with a positive score, best first."""
        scores = self.scores(query)
        best = np.argsort(-scores, kind="stable")[:k]
        return [(int(i), float(scores[i])) for i in best if scores[i] > 0]


# ---------------------------------------------------------------- local documents

@dataclass
class Passage:
    """A piece of a document: where it is from, its title, its text."""

    source: str
    title: str
    text: str


def read_document(path):
    """A .txt/.md/.html file -> (title, text); the title is the HTML title, first heading or file name."""
    raw = Path(path).read_text(encoding="utf-8", errors="replace")
    if Path(path).suffix.lower() in (".html", ".htm"):
        title, text = html_to_text(raw)
    else:
        text = raw
        heading = re.search(r"^\s*#+\s+(.+)$", raw, re.MULTILINE)
        title = heading.group(1).strip() if heading else ""
    return title or Path(path).stem.replace("_", " "), text


def split_passages(text, words=PASSAGE_WORDS):
    """A document's text -> passages of at most `words` words, cut at paragraph breaks when possible."""
    passages, current = [], []
    for paragraph in re.split(r"\n\s*\n", text):
        tokens = paragraph.split()
        if current and len(current) + len(tokens) > words:
            passages.append(" ".join(current))  # this paragraph starts a new passage
            current = []
        current += tokens
        while len(current) > words:  # a paragraph longer than a passage is cut
            passages.append(" ".join(current[:words]))
            current = current[words:]
    if current:
        passages.append(" ".join(current))
    return passages


def load_passages(folder):
    """Every text/Markdown/HTML file under `folder` -> [Passage], in path order."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"the documents folder '{folder}' does not exist")
    passages = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in DOC_SUFFIXES):
        title, text = read_document(path)
        passages += [Passage(str(path.relative_to(root)), title, t) for t in split_passages(text)]
    return passages


class LocalSearch:
    """BM25 search over the passages of a folder of documents (or a given list of Passages)."""

    def __init__(self, folder=None, passages=None):
        self.passages = passages if passages is not None else load_passages(folder)
        self.index = BM25([p.title + "\n" + p.text for p in self.passages])

    def search(self, query, max_results=3):
        """query -> [{"title", "url", "snippet"}] of the best passages."""
        return [{"title": self.passages[i].title, "url": self.passages[i].source,
                 "snippet": self.passages[i].text[:SNIPPET_CHARS]}
                for i, _ in self.index.top(query, max_results)]


# ---------------------------------------------------------------- online backends

def searxng_search(query, max_results, base_url, timeout=10.0):
    """query -> results from a SearXNG instance's JSON API. The instance is the user's own setting, often on
    their own network, so it may be a private address (the pages its results name are checked as usual)."""
    url = base_url.rstrip("/") + "/search?" + urllib.parse.urlencode({"q": query, "format": "json"})
    data = json.loads(fetch(url, timeout=timeout, allow_private=True).body)
    return [{"title": r.get("title", ""), "url": r.get("url", ""), "snippet": r.get("content", "")[:SNIPPET_CHARS]}
            for r in data.get("results", [])[:max_results]]


class _DuckDuckGoResults(HTMLParser):
    """Reads the result links (`result__a`) and snippets (`result__snippet`) of DuckDuckGo's HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.results, self.field = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "a" and "result__a" in classes:
            self.results.append({"title": "", "url": _unwrap_redirect(attrs.get("href", "")), "snippet": ""})
            self.field = "title"
        elif "result__snippet" in classes and self.results:
            self.field = "snippet"

    def handle_endtag(self, tag):
        if tag in ("a", "td", "div"):
            self.field = None

    def handle_data(self, data):
        if self.field and self.results:
            self.results[-1][self.field] += data


def _unwrap_redirect(href):
    """DuckDuckGo's `//duckduckgo.com/l/?uddg=<url>` -> <url>; other links unchanged."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(href).query)
    return query["uddg"][0] if "uddg" in query else href


def duckduckgo_search(query, max_results, endpoint=DUCKDUCKGO_URL, timeout=10.0):
    """query -> results read from DuckDuckGo's HTML endpoint (no API key)."""
    page = fetch(endpoint + "?" + urllib.parse.urlencode({"q": query}), timeout=timeout)
    parser = _DuckDuckGoResults()
    parser.feed(page.body)
    return [{k: " ".join(v.split()) for k, v in r.items()} for r in parser.results[:max_results]]


def network_available(host="html.duckduckgo.com", port=443, timeout=2.0):
    """True if a TCP connection to `host` opens within `timeout` seconds."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- the tool

def format_results(results):
    """[{"title", "url", "snippet"}] -> numbered text for the model."""
    if not results:
        return "No results found."
    return "\n\n".join(f"{i}. {r['title']} ({r['url']})\n{r['snippet']}" for i, r in enumerate(results, 1))


class Searcher:
    """Picks a backend on first use (see the module docstring) and runs searches through it."""

    def __init__(self, backend=None, docs=None, searxng_url=None, duckduckgo_url=DUCKDUCKGO_URL):
        self.backend, self.docs, self.searxng_url = backend, docs, searxng_url
        self.duckduckgo_url = duckduckgo_url
        self._local = None

    def choose_backend(self):
        """The backend name in use: the named one, else by the order in the module docstring.

        Settings not given to the constructor are read from the environment here, on first use.
        """
        self.docs = self.docs or os.environ.get(DOCS_ENV) or None
        self.searxng_url = self.searxng_url or os.environ.get(SEARXNG_URL_ENV) or None
        self.backend = self.backend or os.environ.get(BACKEND_ENV) or None
        if self.backend is None:
            if self.docs:
                self.backend = "local"
            elif self.searxng_url:
                self.backend = "searxng"
            else:
                self.backend = "duckduckgo" if network_available() else "local"
        if self.backend not in ("local", "searxng", "duckduckgo"):
            raise ValueError(f"unknown search backend '{self.backend}'; use local, searxng or duckduckgo")
        return self.backend

    def local(self):
        """The local BM25 search, built on first use."""
        if self._local is None:
            if not self.docs:
                raise FileNotFoundError(f"no documents to search offline: pass --docs DIR or set {DOCS_ENV}")
            self._local = LocalSearch(self.docs)
        return self._local

    def search(self, query, max_results=3):
        """query -> [{"title", "url", "snippet"}] from the chosen backend (local when online fails)."""
        backend = self.choose_backend()
        if backend == "local":
            return self.local().search(query, max_results)
        try:
            if backend == "searxng":
                if not self.searxng_url:
                    raise ValueError(f"set {SEARXNG_URL_ENV} to the SearXNG instance's URL")
                return searxng_search(query, max_results, self.searxng_url)
            return duckduckgo_search(query, max_results, self.duckduckgo_url)
        except (FetchError, ValueError) as e:
            if self.docs:
                return self.local().search(query, max_results)
            raise FetchError(f"{backend} search failed: {e}") from None


def make_web_search(backend=None, docs=None, searxng_url=None, duckduckgo_url=DUCKDUCKGO_URL):
    """A `web_search` Tool bound to one Searcher (see Searcher for the arguments)."""
    searcher = Searcher(backend, docs, searxng_url, duckduckgo_url)

    def web_search(query: str, max_results: int = 3) -> str:
        """Search the web and return the best results with their titles, addresses and snippets.

        Args:
            query: what to search for, in a few keywords
            max_results: how many results to return (1 to 10)
        """
        return format_results(searcher.search(query, max(1, min(int(max_results), 10))))

    return tool(web_search)


web_search = make_web_search()
