"""Fetching a web page as readable text: the `visit_webpage` tool.

`fetch` speaks plain HTTP(S) through the standard library, with a timeout on the
whole request (not only on each socket read), a cap on the bytes read, and
redirects followed by hand so that each hop is counted and its scheme checked:
only http and https are ever fetched. `html_to_text` turns HTML into the lines a
person would read, using the standard library's `html.parser`.
"""

import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser

from .registry import tool

USER_AGENT = "nanoagent/0.1 (+visit_webpage)"
TIMEOUT_S = 10.0
MAX_BYTES = 1_000_000
MAX_REDIRECTS = 5
MAX_TEXT_CHARS = 3000


class FetchError(RuntimeError):
    """A URL that could not be fetched: bad scheme, too many redirects, timeout, HTTP error."""


# ---------------------------------------------------------------- HTML -> text

_SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "canvas"}
_BLOCK = {"p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "br", "hr",
          "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "tr", "table", "pre", "blockquote",
          "form", "dt", "dd", "dl", "figure", "figcaption", "address", "details", "summary"}


class _TextExtractor(HTMLParser):
    """Collects visible text, one block element per line, with `#` headings and `-` list items."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.title, self.skipping, self.in_title, self.in_pre = [], "", 0, False, 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self.skipping += 1
        if tag == "title":
            self.in_title = True
        if tag == "pre":
            self.in_pre += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        if re.fullmatch(r"h[1-6]", tag):
            self.parts.append("#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("- ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")

    def handle_endtag(self, tag):
        if tag in _SKIP and self.skipping:
            self.skipping -= 1
        if tag == "title":
            self.in_title = False
        if tag == "pre" and self.in_pre:
            self.in_pre -= 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        elif not self.skipping:
            self.parts.append(data if self.in_pre else re.sub(r"\s+", " ", data))


def html_to_text(html):
    """HTML (str) -> (title, text): visible text, one block per line, blank-line runs collapsed."""
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # html.parser is lenient; a failure mid-page keeps what was read so far
        pass
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    lines = [line for line in lines if line and line not in ("|", "-", "- |")]
    return " ".join(parser.title.split()), "\n".join(lines)


# ---------------------------------------------------------------- fetching

@dataclass
class Page:
    """A fetched page: final URL after redirects, status, content type, body text, truncation flag."""

    url: str
    status: int
    content_type: str
    body: str
    truncated: bool


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand 3xx responses back to `fetch` instead of following them."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def check_url(url):
    """Raise FetchError unless `url` is an absolute http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise FetchError(f"only http and https URLs can be visited, not '{parts.scheme or url}'")
    if not parts.hostname:
        raise FetchError(f"the URL '{url}' has no host")


def _read_capped(response, max_bytes, deadline):
    """Read at most max_bytes from a response, stopping at the deadline -> (bytes, truncated)."""
    chunks, size = [], 0
    while size <= max_bytes:
        if time.monotonic() > deadline:
            raise FetchError("timed out while reading the page")
        chunk = response.read1(min(65536, max_bytes + 1 - size))  # what has arrived, not a full block
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    return data[:max_bytes], len(data) > max_bytes


def _charset(content_type, data):
    """The text encoding from the Content-Type header or a <meta charset>, else utf-8."""
    match = re.search(r"charset=[\"']?([\w-]+)", content_type, re.IGNORECASE) or \
        re.search(rb"<meta[^>]+charset=[\"']?([\w-]+)", data[:4096], re.IGNORECASE)
    name = match.group(1) if match else "utf-8"
    return name.decode("ascii", "replace") if isinstance(name, bytes) else name


def fetch(url, timeout=TIMEOUT_S, max_bytes=MAX_BYTES, max_redirects=MAX_REDIRECTS):
    """GET an http(s) URL -> Page. Redirects are followed up to max_redirects, each one checked.

    Raises FetchError (bad scheme, too many redirects, HTTP error, timeout, network error).
    """
    deadline = time.monotonic() + timeout
    for _ in range(max_redirects + 1):
        check_url(url)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "text/html,text/*;q=0.9,*/*;q=0.5"})
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"timed out after {timeout:g} s")
        try:
            response = _OPENER.open(request, timeout=remaining)
        except urllib.error.HTTPError as e:
            if e.code in (301, 302, 303, 307, 308) and e.headers.get("Location"):
                url = urllib.parse.urljoin(url, e.headers["Location"])
                e.close()
                continue
            e.close()
            raise FetchError(f"HTTP {e.code} {e.reason} for {url}") from None
        except (TimeoutError, OSError) as e:  # URLError is an OSError; socket timeouts too
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise FetchError(f"timed out after {timeout:g} s") from None
            raise FetchError(f"could not reach {url}: {reason}") from None
        with response:
            content_type = response.headers.get("Content-Type", "")
            try:
                data, truncated = _read_capped(response, max_bytes, deadline)
            except (TimeoutError, OSError):
                raise FetchError(f"timed out after {timeout:g} s") from None
            body = data.decode(_charset(content_type, data), errors="replace")
            return Page(response.geturl(), response.status, content_type, body, truncated)
    raise FetchError(f"more than {max_redirects} redirects")


def page_to_text(page, max_chars=MAX_TEXT_CHARS):
    """A Page -> the text the model reads: title, URL, readable body, cut to max_chars."""
    kind = page.content_type.split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml", "") or page.body.lstrip()[:15].lower().startswith(("<!doctype html", "<html")):
        title, text = html_to_text(page.body)
    elif kind.startswith("text/") or kind in ("application/json", "application/xml"):
        title, text = "", page.body.strip()
    else:
        raise FetchError(f"cannot read content of type '{kind}' as text")
    if len(text) > max_chars:
        text = text[:max_chars] + "\n[... more text not shown]"
    if page.truncated:
        text += "\n[page cut at the size limit]"
    header = f"Title: {title}\nURL: {page.url}\n\n" if title else f"URL: {page.url}\n\n"
    return header + text


@tool
def visit_webpage(url: str) -> str:
    """Fetch a web page and return its readable text.

    Args:
        url: the full http or https address of the page
    """
    return page_to_text(fetch(url))
