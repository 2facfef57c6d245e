"""`python -m nanoagent.data build --recipe local|agent|nanoagent --out mix.jsonl`: build a training mix, print its stats."""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

from ..checkpoint import WeightsError
from ..cli import one_line_errors
from ..tokenizer import Tokenizer
from ..weights import hub_reachable, resolve
from .benchmarks import eval_prompts
from .instructions import instruction_items
from .io import DataError, find_data_dir
from .mix import RECIPES, Options, build, kinds_table, stats_table, write_jsonl


@functools.cache
def hub_available() -> bool:
    """Whether hub datasets can be read here: `datasets` is installed and the hub answers."""
    return importlib.util.find_spec("datasets") is not None and hub_reachable()


def default_recipe() -> str:
    """'nanoagent' when hub datasets can be read, else 'local'."""
    return "nanoagent" if hub_available() else "local"


def local_data(data_dir: str | None, recipe: str = "local") -> Path | None:
    """Where recipes local and agent-glaive read: the data folder, else (None) the same datasets on the hub;
    DataError if neither."""
    folder = find_data_dir(data_dir, required=data_dir is not None)
    if folder is not None:
        return folder
    if not hub_available():
        named = os.environ.get("NANOAGENT_DATA")
        raise DataError(f"recipe {recipe} found no data" + (f" (NANOAGENT_DATA names {named}, which does not exist)"
                                                         if named else "") +
                        ": set NANOAGENT_DATA or pass --data-dir to the shared data folder (with glaive/ and gsm8k/), "
                        "or install the `data` extra (pip install 'nanoagent[data]') and be online to read the "
                        "same datasets from the hub")
    print(f"no data folder: reading recipe {recipe}'s datasets from the hub", file=sys.stderr, flush=True)
    return None


def with_overrides(recipe, name, source_limit, weight, scale=1.0):
    """The recipe's sources with --scale F, then --source-limit NAME=N and --weight NAME=W applied."""
    recipe = [replace(s, limit=max(1, round(s.limit * scale))) if s.limit else s for s in recipe]
    for flag, items, attr, cast in (("--source-limit", source_limit, "limit", int),
                                    ("--weight", weight, "weight", float)):
        for item in items:
            key, _, value = item.partition("=")
            matches = [s for s in recipe if s.name == key]
            if not matches:
                raise DataError(f"no source {key!r} in recipe {name}: {', '.join(s.name for s in recipe)}")
            try:
                value = cast(value)
            except ValueError:
                kind = "an integer" if cast is int else "a number"
                raise DataError(f"{flag} {item}: {value!r} is not {kind}") from None
            for s in matches:
                recipe[recipe.index(s)] = replace(s, **{attr: value})
    return recipe


def write_instructions(args: argparse.Namespace) -> None:
    """`instructions`: verifiable-instruction prompts (IFEval's form, never IFEval's prompts) -> a jsonl."""
    with one_line_errors(DataError, OSError):
        data_dir = find_data_dir(args.data_dir)
        blocked = eval_prompts(data_dir, args.bfcl_dir)
        items, counts = instruction_items(data_dir, args.n, args.seed, blocked)
        write_jsonl(items, args.out)
    kinds = Counter(i for it in items for i in it["instruction_id_list"])
    print(f"{len(items)} instruction prompts in {args.out}: " +
          ", ".join(f"{n} {source}" for source, n in counts.items() if source != "blocked") +
          f"; {counts['blocked']} tasks or prompts dropped as evaluation prompts\n" +
          "\n".join(f"  {n:5d}  {kind}" for kind, n in kinds.most_common()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m nanoagent.data", description=__doc__.split(":")[1].strip())
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a training mix (jsonl of {messages, tools?, source})")
    b.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="sources to mix (default: nanoagent when hub datasets can be read, else local; local and agent "
                        "read the shared data folder, or the same datasets from the hub when there is none; agent mixes "
                        "its tool-calling sets with the derived families, one SFT epoch in about 150 minutes on 2 "
                        "cores; the *-stage recipes are shorter second stages on top of a fine-tune)")
    b.add_argument("--out", type=Path, default=Path("mix.jsonl"), help="the mix to write (default: %(default)s)")
    b.add_argument("--data-dir", default=None, help="the shared data folder (default: $NANOAGENT_DATA or "
                                                    "shared/data beside the checkout)")
    b.add_argument("--limit", type=int, default=None, help="read at most this many rows per source")
    b.add_argument("--source-limit", action="append", default=[], metavar="NAME=N",
                   help="rows read from one source (repeatable)")
    b.add_argument("--weight", action="append", default=[], metavar="NAME=W", help="weight of one source (repeatable)")
    b.add_argument("--scale", type=float, default=1.0, metavar="F",
                   help="every source's rows times F, the shares kept: an ablation arm or a quick run (default 1)")
    b.add_argument("--max-tokens", type=int, default=1024, help="longest chat kept, in tokens (default: %(default)s)")
    b.add_argument("--min-tokens", type=int, default=16, help="shortest chat kept, in tokens (default: %(default)s)")
    b.add_argument("--near-dup", type=float, default=0.8,
                   help="MinHash Jaccard threshold for near duplicates (default: %(default)s)")
    b.add_argument("--short-answer-words", type=int, default=120,
                   help="casual chats: longest reply kept, in words (default: %(default)s)")
    b.add_argument("--p-distractor", type=float, default=0.5,
                   help="share of tool chats given distractor tools (default: %(default)s)")
    b.add_argument("--p-system", type=float, default=0.5,
                   help="share of tool chats given a varied system prompt (default: %(default)s)")
    b.add_argument("--model", default=None, help="model folder whose tokenizer counts tokens (default: SmolLM2)")
    b.add_argument("--bfcl-dir", default=None, help="BFCL data, to keep its prompts out (default: fetched)")
    b.add_argument("--seed", type=int, default=0, help="random seed of the mix (default: %(default)s)")
    i = sub.add_parser("instructions", help="prompts with 1-3 verifiable constraints (IFEval's form) for GRPO or "
                                            "rejection sampling: jsonl of {key, prompt, instruction_id_list, kwargs}")
    i.add_argument("--n", type=int, default=500, help="prompts to write (default: %(default)s)")
    i.add_argument("--out", type=Path, default=Path("instructions.jsonl"), help="the file to write (default: "
                                                                                 "%(default)s)")
    i.add_argument("--data-dir", default=None, help="the shared data folder with gsm8k/ and toolcalls/ (default: "
                                                    "$NANOAGENT_DATA or shared/data beside the checkout)")
    i.add_argument("--bfcl-dir", default=None, help="BFCL data, to keep its prompts out (default: fetched)")
    i.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.command == "instructions":
        return write_instructions(args)

    with one_line_errors(DataError, WeightsError, OSError):
        name = args.recipe or default_recipe()
        if not 0 < args.scale <= 100:
            raise DataError(f"--scale {args.scale:g}: choose a factor above 0 and at most 100")
        recipe = with_overrides(RECIPES[name], name, args.source_limit, args.weight, args.scale)
        if any(s.adapter == "toolset" for s in recipe):  # the tool-calling sets are only in the data folder
            data_dir = find_data_dir(args.data_dir)
        elif name in ("local", "agent-glaive"):  # the data folder, else the same datasets on the hub
            data_dir = local_data(args.data_dir, name)
        else:
            data_dir = find_data_dir(args.data_dir, required=args.data_dir is not None)
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
    print(f"recipe {name}: {len(rows)} chats in {args.out} ({time.perf_counter() - t0:.0f} s)\n{stats_table(stats)}\n"
          f"{kinds_table(stats)}")


if __name__ == "__main__":
    main()
