"""The evaluation sets as data: BFCL's items (out of the `bfcl-eval` wheel), IFEval's and IFBench's prompts.

The evaluation (nanoagent/eval/) scores a model on them; the training mix (mix.py) is built
without any of their prompts (`eval_prompts`). Reading them lives here, so that data never
needs the evaluation code and the evaluation reads its items through data.
"""
from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path

from ..checkpoint import atomic_dir
from ..weights import pip_download, weights_home
from .clean import normalize_text
from .io import find_data_dir, iter_rows, read_rows

BFCL_WHEEL = "bfcl-eval==2026.3.23"
CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")


class BFCLDataError(RuntimeError):
    """The BFCL data cannot be found or fetched; the message says how to provide it."""


# ---- the data: bfcl_eval/data/ out of the wheel, cached beside the weights ---------------

def bfcl_cache_dir() -> Path:
    return weights_home() / ("bfcl-eval-" + BFCL_WHEEL.split("==")[1])


def _has_data(folder: Path) -> bool:
    return (folder / f"BFCL_v4_{CATEGORIES[0]}.json").is_file() and (folder / "possible_answer").is_dir()


def extract_bfcl_data(wheel: Path, dest: Path) -> Path:
    """Unzip `bfcl_eval/data/` of the wheel into `dest`, atomically (a half-written folder never stays)."""
    prefix = "bfcl_eval/data/"
    try:
        with zipfile.ZipFile(wheel) as z, atomic_dir(dest) as tmp:
            names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
            if not names:
                raise BFCLDataError(f"{wheel} holds no {prefix}: it is not the {BFCL_WHEEL} wheel")
            for n in names:
                out = tmp / n[len(prefix):]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(n))
    except (zipfile.BadZipFile, OSError) as e:
        raise BFCLDataError(f"{wheel} is not a readable wheel ({e}); delete it and try again") from e
    return dest


def bfcl_data_dir(bfcl_dir: str | Path | None = None) -> Path:
    """A folder holding BFCL_v4_*.json and possible_answer/: `bfcl_dir`, else the cache, fetched on first use."""
    if bfcl_dir is not None:
        folder = Path(bfcl_dir).expanduser()
        for cand in (folder, folder / "data", folder / "bfcl_eval" / "data"):
            if _has_data(cand):
                return cand
        raise BFCLDataError(f"{folder} holds no BFCL data (BFCL_v4_{CATEGORIES[0]}.json and possible_answer/). "
                            f"Unzip bfcl_eval/data/ of `pip download --no-deps {BFCL_WHEEL}` there.")
    dest = bfcl_cache_dir()
    if _has_data(dest):
        return dest
    with tempfile.TemporaryDirectory(prefix="nanoagent-bfcl-") as work:
        print(f"Fetching the BFCL data ({BFCL_WHEEL}, data files only) into {dest}", file=sys.stderr, flush=True)
        if not pip_download(BFCL_WHEEL, Path(work)):
            raise BFCLDataError(f"could not download {BFCL_WHEEL} with pip. Check the connection, or run "
                                f"`pip download --no-deps {BFCL_WHEEL}`, unzip bfcl_eval/data/ and pass --bfcl-dir.")
        wheel = next(Path(work).glob("bfcl_eval-*.whl"))
        return extract_bfcl_data(wheel, dest)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_category(folder: Path, category: str) -> list[dict]:
    """Items {id, category, messages, functions, ground_truth} of one category (no ground truth for irrelevance)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown BFCL category {category!r}; choose from {', '.join(CATEGORIES)}")
    questions = _read_jsonl(folder / f"BFCL_v4_{category}.json")
    answers = {}
    if category != "irrelevance":
        answers = {a["id"]: a["ground_truth"] for a in _read_jsonl(folder / "possible_answer" / f"BFCL_v4_{category}.json")}
    items = []
    for q in questions:
        turns = q["question"]
        messages = turns[0] if turns and isinstance(turns[0], list) else turns  # single-turn categories
        items.append({"id": q["id"], "category": category, "messages": messages, "functions": q["function"],
                      "ground_truth": answers.get(q["id"])})
    return items


def bfcl_prompts(bfcl_dir=None, categories=CATEGORIES) -> list[str]:
    """Every user prompt of the categories (to keep them out of training data)."""
    folder = bfcl_data_dir(bfcl_dir)
    return [m["content"] for c in categories for it in load_category(folder, c)
            for m in it["messages"] if m.get("role") == "user"]


# ---- IFEval and IFBench (evaluation only) ----------------------------------------------------------------

def local_or_hub(path: str | Path | None, in_folder: str, hub: str) -> list[dict]:
    """Rows of `path`, else of the shared data folder's file `in_folder`, else of the hub dataset `hub`."""
    if path is None:
        local = find_data_dir(required=False)
        path = local / in_folder if local is not None and (local / in_folder).is_file() else hub
    return read_rows(str(path))


def ifeval_items(path: str | Path | None = None) -> list[dict]:
    """IFEval prompts: a local input_data.jsonl, else the shared data folder's, else the hub copy."""
    return local_or_hub(path, "ifeval/input_data.jsonl", "google/IFEval")


def ifbench_items(path: str | Path | None = None) -> list[dict]:
    """IFBench test prompts: a local IFBench_test.jsonl, else the shared data folder's, else the hub copy."""
    return local_or_hub(path, "ifbench/IFBench_test.jsonl", "allenai/IFBench_test")


# ---- what never goes into training ---------------------------------------------------------------

def eval_prompts(data_dir: Path | None, bfcl_dir=None, fetch_bfcl: bool = True) -> set[str]:
    """Normalized prompts of IFEval and IFBench (shared folder) and BFCL (when its data is at hand), to drop from
    the mix."""
    out = set()
    for name in ("ifeval/input_data.jsonl", "ifbench/IFBench_test.jsonl"):
        if data_dir is not None and (data_dir / name).is_file():
            out |= {normalize_text(r["prompt"]) for r in iter_rows(str(data_dir / name))}
    try:
        if bfcl_dir is not None or fetch_bfcl or bfcl_cache_dir().is_dir():
            out |= {normalize_text(p) for p in bfcl_prompts(bfcl_dir)}
    except Exception as e:  # no network and no cache: IFEval alone, said aloud
        print(f"note: BFCL prompts not available for decontamination ({e})", file=sys.stderr)
    return out
