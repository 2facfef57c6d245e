"""`python -m nanoagent.eval {toolcall,ifeval,ppl,all}`: print a table, write the results as JSON."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..checkpoint import WeightsError
from ..data.benchmarks import BFCL_WHEEL, CATEGORIES, BFCLDataError
from ..data.io import DataError
from ..generate import load
from . import bfcl, ifeval, ppl


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m nanoagent.eval",
                                 description="Evaluate a model: tool calls (BFCL AST), instruction following "
                                             "(IFEval), perplexity.")
    ap.add_argument("task", choices=("toolcall", "ifeval", "ppl", "all"),
                    help="'all' runs toolcall and ifeval")
    ap.add_argument("--model", default=None, help="HF model folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--limit", type=int, default=None, help="how many items: the first N of each BFCL category (so 5 x N for all five), the first N IFEval prompts, or N ppl rows")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="reply length cap (default: 256 for toolcall, 512 for ifeval)")
    ap.add_argument("--batch", type=int, default=8,
                    help="replies decoded together (the same replies as one at a time, sooner; 1: one at a time)")
    ap.add_argument("--categories", default=",".join(CATEGORIES), help="BFCL categories, comma-separated")
    ap.add_argument("--bfcl-dir", default=None,
                    help=f"unzipped bfcl_eval/data/ of {BFCL_WHEEL} (default: fetched on first use and cached)")
    ap.add_argument("--ifeval-data", default=None,
                    help="IFEval input_data.jsonl (default: the shared data folder, else google/IFEval)")
    ap.add_argument("--data", default=None, help="ppl: a text file, a .jsonl/.json/.parquet file or a hub dataset")
    ap.add_argument("--seq-len", type=int, default=1024, help="ppl: tokens per window")
    ap.add_argument("--out", type=Path, default=None, help="write the results here (default: eval-TASK.json)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        if args.task == "ppl" and not args.data:
            raise DataError("ppl needs --data (a text file, a .jsonl/.json/.parquet file or a hub dataset name)")
        model = load(args.model)
        report = {"model": str(args.model or "SmolLM2-135M-Instruct"), "limit": args.limit}
        tasks = ("toolcall", "ifeval") if args.task == "all" else (args.task,)
        for task in tasks:
            t0 = time.perf_counter()
            if task == "toolcall":
                cats = [c.strip() for c in args.categories.split(",") if c.strip()]
                res = bfcl.run_toolcall(model, cats, args.limit, args.bfcl_dir, args.max_new_tokens or 256,
                                        progress=not args.quiet, batch=args.batch)
                table = bfcl.format_table(res["summary"])
            elif task == "ifeval":
                res = ifeval.run_ifeval(model, args.ifeval_data, args.limit, args.max_new_tokens or 512,
                                        progress=not args.quiet, batch=args.batch)
                table = ifeval.format_table(res["summary"])
            else:
                res = ppl.run_ppl(model, args.data, args.seq_len, args.limit, progress=not args.quiet)
                table = ppl.format_table(res["summary"])
            res["seconds"] = round(time.perf_counter() - t0, 1)
            report[task] = res
            print(f"== {task} ({res['seconds']:.0f} s)\n{table}", flush=True)
        out = args.out or Path(f"eval-{args.task}.json")
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(out)
        print(f"wrote {out}", file=sys.stderr)
        return report
    except (WeightsError, DataError, BFCLDataError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
