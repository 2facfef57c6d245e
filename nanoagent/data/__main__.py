"""`python -m nanoagent.data build --recipe local|nanoagent --out mix.jsonl`: build a training mix, print its stats."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ..checkpoint import WeightsError
from ..tokenizer import Tokenizer
from ..weights import hub_reachable, resolve
from .benchmarks import eval_prompts
from .io import DataError, find_data_dir
from .mix import RECIPES, Options, build, stats_table, write_jsonl


def default_recipe() -> str:
    """'nanoagent' when the hub is reachable and `datasets` is installed, else 'local'."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        return "local"
    return "nanoagent" if hub_reachable() else "local"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.data", description=__doc__.split(":")[1].strip())
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a training mix (jsonl of {messages, tools?, source})",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="sources to mix (default: nanoagent when the hub is reachable, else local)")
    b.add_argument("--out", type=Path, default=Path("mix.jsonl"))
    b.add_argument("--data-dir", default=None, help="the shared data folder (default: $NANOAGENT_DATA or "
                                                    "shared/data beside the checkout)")
    b.add_argument("--limit", type=int, default=None, help="read at most this many rows per source")
    b.add_argument("--source-limit", action="append", default=[], metavar="NAME=N",
                   help="rows read from one source (repeatable)")
    b.add_argument("--weight", action="append", default=[], metavar="NAME=W", help="weight of one source (repeatable)")
    b.add_argument("--max-tokens", type=int, default=1024, help="longest chat kept, in tokens")
    b.add_argument("--min-tokens", type=int, default=16)
    b.add_argument("--near-dup", type=float, default=0.8, help="MinHash Jaccard threshold for near duplicates")
    b.add_argument("--short-answer-words", type=int, default=120, help="casual chats: longest reply kept, in words")
    b.add_argument("--p-distractor", type=float, default=0.5, help="share of tool chats given distractor tools")
    b.add_argument("--p-system", type=float, default=0.5, help="share of tool chats given a varied system prompt")
    b.add_argument("--model", default=None, help="model folder whose tokenizer counts tokens (default: SmolLM2)")
    b.add_argument("--bfcl-dir", default=None, help="BFCL data, to keep its prompts out (default: fetched)")
    b.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    try:
        name = args.recipe or default_recipe()
        recipe = [s for s in RECIPES[name]]
        for flag, attr, cast in ((args.source_limit, "limit", int), (args.weight, "weight", float)):
            for item in flag:
                key, _, value = item.partition("=")
                matches = [s for s in recipe if s.name == key]
                if not matches:
                    raise DataError(f"no source {key!r} in recipe {name}: {', '.join(s.name for s in recipe)}")
                for s in matches:
                    recipe[recipe.index(s)] = type(s)(**{**asdict(s), attr: cast(value)})
        data_dir = find_data_dir(args.data_dir, required=name == "local")
        tokenizer = Tokenizer.from_file(resolve(args.model) / "tokenizer.json")
        options = Options(max_tokens=args.max_tokens, min_tokens=args.min_tokens, near_dup_threshold=args.near_dup,
                          short_answer_words=args.short_answer_words, p_distractor=args.p_distractor,
                          p_system=args.p_system, seed=args.seed)
        t0 = time.perf_counter()
        blocked = eval_prompts(data_dir, args.bfcl_dir)
        rows, stats = build(recipe, data_dir, tokenizer, options, blocked, args.limit, progress=True)
        if not rows:
            raise DataError("the mix is empty: every row was dropped (see the table)")
        write_jsonl(rows, args.out)
        stats_path = args.out.with_suffix(".stats.json")
        stats_path.write_text(json.dumps({"recipe": name, "options": asdict(options),
                                          "sources": {k: asdict(v) for k, v in stats.items()}}, indent=1) + "\n")
    except (DataError, WeightsError) as e:
        sys.exit(f"error: {e}")
    print(f"recipe {name}: {len(rows)} chats in {args.out} ({time.perf_counter() - t0:.0f} s)\n{stats_table(stats)}")


if __name__ == "__main__":
    main()
