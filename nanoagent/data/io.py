"""Where rows come from: local json/jsonl/parquet files, or a hub dataset by name (streamed).

`datasets` is optional: it is imported only when a hub name is asked for. The shared data
folder (GSM8K, the glaive sample, IFEval) is found via `--data-dir`, `$NANOAGENT_DATA`, or a
`shared/data` folder beside the source checkout.
"""
from __future__ import annotations

import gzip
import json
import os
from itertools import islice
from pathlib import Path
from typing import Iterator


class DataError(RuntimeError):
    """Data that cannot be found or read; the message says what to do."""


def find_data_dir(data_dir: str | Path | None = None, required: bool = True) -> Path | None:
    """The shared data folder: the argument, else $NANOAGENT_DATA, else `shared/data` beside the checkout."""
    if data_dir is None and os.environ.get("NANOAGENT_DATA"):
        data_dir = os.environ["NANOAGENT_DATA"]
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if folder.is_dir():
            return folder
        if required:
            raise DataError(f"the data folder {folder} does not exist")
        return None
    checkout = Path(__file__).resolve().parents[2]
    for cand in (checkout.parent / "shared" / "data", checkout / "shared" / "data"):
        if cand.is_dir():
            return cand
    if required:
        raise DataError("no local data folder: pass --data-dir, set NANOAGENT_DATA, or put a shared/data folder "
                        "beside the checkout")
    return None


def iter_file(path: Path) -> Iterator[dict]:
    """Rows of a .jsonl (one object a line), .json (a list, or {"data"/"rows": [...]}) or .parquet file;
    .jsonl and .json may be gzipped (.json.gz)."""
    gz = path.suffix.lower() == ".gz"
    suffix = Path(path.stem).suffix.lower() if gz else path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_lines(path)
    elif suffix == ".json":
        try:
            with _open(path) as f:
                data = json.loads(f.read())
        except json.JSONDecodeError:  # a .json file written one object a line
            yield from _jsonl_lines(path)
            return
        if isinstance(data, dict):
            data = data.get("data") or data.get("rows") or [data]
        yield from data
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DataError(f"reading {path} needs pyarrow (pip install pyarrow, or the `data` extra)") from e
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    else:
        raise DataError(f"{path}: unknown file type {suffix!r}; use .jsonl, .json or .parquet")


def _open(path: Path):
    """A text file, read through gzip when it ends in .gz."""
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix.lower() == ".gz" else open(path, encoding="utf-8")


def _jsonl_lines(path: Path) -> Iterator[dict]:
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n} is not valid JSON ({e}); fix or remove that line") from e


def iter_hub(name: str, config: str | None = None, split: str = "train") -> Iterator[dict]:
    """A hub dataset, streamed (nothing but the rows read is downloaded)."""
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"{name} is not a local file, and loading a hub dataset needs the `datasets` package "
                        "(pip install 'nanoagent[data]')") from e
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
        for row in ds:
            yield dict(row)
    except (ConnectionError, OSError, ValueError) as e:
        raise DataError(f"could not load {name} ({config or 'default'}, {split}) from the hub ({e})") from e


def read_rows(spec: str, config: str | None = None, split: str = "train", limit: int | None = None) -> list[dict]:
    """A local file (or a folder of them) or a hub dataset name -> at most `limit` rows."""
    return list(islice(iter_rows(spec, config, split), limit))


def iter_rows(spec: str, config: str | None = None, split: str = "train") -> Iterator[dict]:
    path = Path(spec).expanduser()
    if path.is_file():
        yield from iter_file(path)
    elif path.is_dir():
        every = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jsonl", ".json", ".parquet"))
        files = [p for p in every if split in p.name or split in p.parent.name] or every  # the split's files
        if not files:
            raise DataError(f"{path} holds no .jsonl/.json/.parquet file for split {split!r}")
        for f in files:
            yield from iter_file(f)
    elif path.suffix.lower() in (".jsonl", ".json", ".parquet") or "/" not in spec or spec.startswith((".", "/", "~")):
        raise DataError(f"{spec} is not a file; pass a .jsonl/.json/.parquet file or a hub dataset name (owner/name)")
    else:
        yield from iter_hub(spec, config, split)
