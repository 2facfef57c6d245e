"""Fetching a web page as readable text: the `visit_webpage` tool.

`fetch` speaks plain HTTP(S) through the standard library's `http.client`, with a
timeout on the whole request (not only on each socket read), a cap on the bytes read,
and redirects followed by hand so that each hop is checked: only http and https are
ever fetched, and every hop's host is resolved once, its addresses checked and the
connection pinned to them (`netguard.py`), so no private, loopback, link-local or
multicast address is reached unless the user allows it.

`page_to_text` puts the page's main content first (a recipe the page declares in
schema.org JSON-LD, then the article as `trafilatura` finds it), then the rest of the
page, within MAX_TEXT_CHARS: a small model's context holds little, and menus, cookie
banners and link lists often come before the article. `html_to_text`
keeps every visible line, one block per line, using the standard library's
`html.parser`; it reads the local documents of the offline search too.
"""

import http.client
import json
import re
import time
import urllib.parse
from dataclasses import dataclass
from html import unescape
from html.parser import HTMLParser

import trafilatura

from .netguard import RefusedAddress, open_connection
from .registry import tool

USER_AGENT = "nanoagent/0.1 (+visit_webpage)"
HEADERS = {"User-Agent": USER_AGENT, "Accept": "text/html,text/*;q=0.9,*/*;q=0.5", "Connection": "close"}
TIMEOUT_S = 10.0
MAX_BYTES = 1_000_000
MAX_REDIRECTS = 5
MAX_TEXT_CHARS = 3000
REDIRECTS = (301, 302, 303, 307, 308)
REST_OF_PAGE = "[rest of the page]"


class FetchError(RuntimeError):
    """A URL that could not be fetched: bad scheme, refused address, too many redirects, timeout, HTTP error."""


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


# ---------------------------------------------------------------- the main text first

_JSON_LD = re.compile(r"<script[^>]*application/ld\+json[^>]*>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def main_text(html):
    """HTML (str) -> the page's main content as text, one block per line (trafilatura); "" if none is found."""
    try:
        return trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True) or ""
    except Exception:  # a page trafilatura cannot parse: the whole page is read instead
        return ""


def json_ld_items(html):
    """Every JSON-LD object a page declares (schema.org data), those inside lists and `@graph` too."""
    for block in _JSON_LD.findall(html):
        try:
            stack = [json.loads(block)]
        except ValueError:
            continue
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            elif isinstance(item, dict):
                yield item
                stack.append(item.get("@graph"))  # a list, an object or None


def _steps(instructions):
    """schema.org recipeInstructions (text, HowToStep, HowToSection or lists of them) -> step texts."""
    if isinstance(instructions, str):
        yield from (line.strip() for line in instructions.splitlines() if line.strip())
    elif isinstance(instructions, list):
        for item in instructions:
            yield from _steps(item)
    elif isinstance(instructions, dict):
        yield from _steps(instructions.get("itemListElement") or instructions.get("text") or [])


def recipe_text(html):
    """HTML (str) -> the schema.org Recipe the page declares, as ingredients and steps; "" if none.

    A recipe page's answer (how much flour?) sits in its recipe card, which text extraction
    often drops or finds only after a long story; the card's data is declared in JSON-LD.
    """
    for item in json_ld_items(html):
        kinds = item.get("@type")
        if "Recipe" not in (kinds if isinstance(kinds, list) else [kinds]):
            continue
        ingredients = item.get("recipeIngredient") or []
        ingredients = [f"- {i}" for i in ([ingredients] if isinstance(ingredients, str) else ingredients)]
        steps = [f"{k}. {step}" for k, step in enumerate(_steps(item.get("recipeInstructions")), 1)]
        lines = (["Ingredients:"] + ingredients if ingredients else []) + (["Steps:"] + steps if steps else [])
        return "\n".join(" ".join(_TAG.sub(" ", unescape(line)).split()) for line in lines)
    return ""


def _words(text):
    """Text -> its words, lowercase, one space apart and one at each end: for "is this line in that text"."""
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def main_first(html, max_chars=MAX_TEXT_CHARS):
    """HTML (str) -> (title, text): the main content (a declared recipe, then the article), then the
    page's other lines, up to about max_chars; a page that fits in max_chars is kept in its own order.

    The other lines are the ones `html_to_text` keeps whose words are not already in the
    main content (menus, captions, link lists, footers), in page order.
    """
    title, everything = html_to_text(html)
    if len(everything) <= max_chars:  # nothing would be cut
        return title, everything
    main = "\n".join(part for part in (recipe_text(html), main_text(html)) if part)
    if not main.strip():
        return title, everything
    seen, rest, size = _words(main), [], len(main)
    for line in everything.splitlines():
        if size >= max_chars:  # enough to fill the budget; the rest would be cut anyway
            break
        words = _words(line)
        if words.strip() and words not in seen:
            rest.append(line)
            size += len(line) + 1
    return title, main + (f"\n\n{REST_OF_PAGE}\n" + "\n".join(rest) if rest else "")


# ---------------------------------------------------------------- fetching

@dataclass
class Page:
    """A fetched page: final URL after redirects, status, content type, body text, truncation flag."""

    url: str
    status: int
    content_type: str
    body: str
    truncated: bool


def check_url(url):
    """`url` -> its urlsplit parts; FetchError unless it is an absolute http(s) URL with a host and a valid port."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise FetchError(f"only http and https URLs can be visited, not '{parts.scheme or url}'")
    if not parts.hostname:
        raise FetchError(f"the URL '{url}' has no host")
    try:
        parts.port
    except ValueError:
        raise FetchError(f"the URL '{url}' has an invalid port") from None
    return parts


def _target(parts):
    """The request target of a URL: its path (non-ASCII and spaces percent-encoded) and query."""
    path = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    query = urllib.parse.quote(parts.query, safe="/%:@!$&'()*+,;=~?")
    return path + ("?" + query if query else "")


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


def fetch(url, timeout=TIMEOUT_S, max_bytes=MAX_BYTES, max_redirects=MAX_REDIRECTS, allow_private=None):
    """GET an http(s) URL -> Page. Redirects are followed up to max_redirects, each hop checked.

    Each hop's host is resolved once and the connection goes to the checked address
    (netguard.py); allow_private lets private and local addresses through (None: the
    NANOAGENT_ALLOW_PRIVATE_URLS setting). Raises FetchError (bad scheme, refused address,
    too many redirects, HTTP error, timeout, network error).
    """
    deadline = time.monotonic() + timeout
    for _ in range(max_redirects + 1):
        parts = check_url(url)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"timed out after {timeout:g} s")
        connection = None
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            connection = open_connection(parts.scheme.lower(), parts.hostname, port, remaining, allow_private)
            connection.request("GET", _target(parts), headers=HEADERS)
            response = connection.getresponse()
            if response.status in REDIRECTS and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                continue
            if not 200 <= response.status < 300:
                raise FetchError(f"HTTP {response.status} {response.reason} for {url}")
            content_type = response.getheader("Content-Type", "")
            data, truncated = _read_capped(response, max_bytes, deadline)
        except RefusedAddress as e:
            raise FetchError(f"refused to visit {url}: {e}") from None
        except TimeoutError:
            raise FetchError(f"timed out after {timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:  # refused, reset, DNS failure, bad TLS, bad reply
            raise FetchError(f"could not reach {url}: {str(e) or type(e).__name__}") from None
        finally:
            if connection is not None:
                connection.close()
        body = data.decode(_charset(content_type, data), errors="replace")
        return Page(url, response.status, content_type, body, truncated)
    raise FetchError(f"more than {max_redirects} redirects")


# ---------------------------------------------------------------- the tool

def page_to_text(page, max_chars=MAX_TEXT_CHARS):
    """A Page -> the text the model reads: title, URL, the main text first, cut to max_chars."""
    kind = page.content_type.split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml", "") or page.body.lstrip()[:15].lower().startswith(("<!doctype html", "<html")):
        title, text = main_first(page.body, max_chars)
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


def make_visit_webpage(allow_private=None):
    """A `visit_webpage` Tool; allow_private=True lets it reach private and local addresses
    (None: the NANOAGENT_ALLOW_PRIVATE_URLS setting, read at each call)."""

    def visit_webpage(url: str) -> str:
        """Fetch a web page and return its readable text.

        Args:
            url: the full http or https address of the page
        """
        return page_to_text(fetch(url, allow_private=allow_private))

    return tool(visit_webpage)


visit_webpage = make_visit_webpage()
