"""Does the answer survive the cut? `visit_webpage`'s text on saved real pages, old way and new way.

    python -m nanoagent.eval webpages              # the pages under tests/fixtures/pages/
    python -m nanoagent.eval.webpages --pages DIR --max-chars 3000

A small model reads a page through a small window: `visit_webpage` cuts its text at
MAX_TEXT_CHARS, and the agent passes a tool result on cut at MAX_RESULT_CHARS. For each
saved page (news, documentation, recipes, an encyclopedia; see the folder's README) a
question's answer either survives the cut or is lost. The old way read every line of the
page in order (menus and banners first) and cut; the new way (`page_to_text`) puts the
main text first within the same budget. No model is needed: an answer survives when its
string appears in the text the model would read, case and whitespace ignored.
"""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from ..agent.registry import MAX_RESULT_CHARS
from ..agent.web import MAX_TEXT_CHARS, Page, html_to_text, page_to_text

PAGES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "pages"


def read_pages(folder=PAGES) -> list[dict]:
    """questions.json's rows, each with its page's HTML added as "html"."""
    folder = Path(folder)
    rows = json.loads((folder / "questions.json").read_text(encoding="utf-8"))
    for row in rows:
        data = (folder / row["file"]).read_bytes()
        row["html"] = (gzip.decompress(data) if row["file"].endswith(".gz") else data).decode("utf-8", "replace")
    return rows


def old_way(html: str, url: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """visit_webpage's text before main-text-first: title, URL, then every line of the page, cut."""
    title, text = html_to_text(html)
    cut = text[:max_chars] + ("\n[... more text not shown]" if len(text) > max_chars else "")
    return f"Title: {title}\nURL: {url}\n\n{cut}" if title else f"URL: {url}\n\n{cut}"


def new_way(html: str, url: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """visit_webpage's text now (`page_to_text`): title, URL, the main text first, cut."""
    return page_to_text(Page(url, 200, "text/html; charset=utf-8", html, False), max_chars)


def survives(answer: str, text: str) -> bool:
    """Whether `answer` appears in `text`, case and whitespace ignored."""
    return " ".join(answer.split()).lower() in " ".join(text.split()).lower()


def evaluate(folder=PAGES, max_chars: int = MAX_TEXT_CHARS, result_chars: int = MAX_RESULT_CHARS) -> dict:
    """Every saved page -> {"pages": [per-page survival, old and new, at both cuts], "summary": counts}.

    "tool": within the tool's text (max_chars); "agent": within what the agent passes on
    (the tool's text cut again at result_chars).
    """
    pages = []
    for row in read_pages(folder):
        url = row.get("url") or row["file"]
        result = {"file": row["file"], "kind": row["kind"], "question": row["question"]}
        for way, make in (("old", old_way), ("new", new_way)):
            text = make(row["html"], url, max_chars)
            result[f"{way}_tool"] = survives(row["answer"], text)
            result[f"{way}_agent"] = survives(row["answer"], text[:result_chars])
        pages.append(result)
    keys = ("old_tool", "new_tool", "old_agent", "new_agent")
    summary = {"pages": len(pages), "max_chars": max_chars, "result_chars": result_chars,
               **{key: sum(p[key] for p in pages) for key in keys}}
    return {"pages": pages, "summary": summary}


def format_table(report: dict) -> str:
    """The per-page table and the totals, as text."""
    s = report["summary"]
    mark = {True: "yes", False: "-"}
    width = max([len("page")] + [len(p["file"]) for p in report["pages"]])
    lines = [f"{'page':{width}s} {'kind':13s} old@{s['max_chars']:<5d} new@{s['max_chars']:<5d} "
             f"old@{s['result_chars']:<5d} new@{s['result_chars']:<5d}"]
    for p in report["pages"]:
        lines.append(f"{p['file']:{width}s} {p['kind']:13s} {mark[p['old_tool']]:9s} {mark[p['new_tool']]:9s} "
                     f"{mark[p['old_agent']]:9s} {mark[p['new_agent']]:9s}")
    n = s["pages"]

    def share(key):
        return f"{s[key]}/{n} ({s[key] / n:.0%})"
    lines.append(f"answers surviving, {n} pages: within the tool's {s['max_chars']} characters old {share('old_tool')}, "
                 f"new {share('new_tool')}; within the agent's {s['result_chars']} old {share('old_agent')}, "
                 f"new {share('new_agent')}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.eval.webpages", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=Path, default=PAGES, help="a folder with questions.json and the pages")
    ap.add_argument("--max-chars", type=int, default=MAX_TEXT_CHARS, help="the tool's cut (default: MAX_TEXT_CHARS)")
    args = ap.parse_args(argv)
    report = evaluate(args.pages, args.max_chars)
    print(format_table(report))
    return report


if __name__ == "__main__":
    main()
