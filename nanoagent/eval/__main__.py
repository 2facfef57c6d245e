"""`python -m nanoagent.eval {toolcall,ifeval,ifbench,chain,agent,ppl,all,plot,webpages}`: print a table, write the
results as JSON (or, for `plot`, draw reports as a PNG; `webpages` needs no model, see webpages.py)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..checkpoint import WeightsError
from ..cli import one_line_errors
from ..data.benchmarks import BFCL_WHEEL, CATEGORIES, BFCLDataError
from ..data.io import DataError
from ..generate import load
from ..weights import resolve
from . import bfcl, chain, ifbench, ifeval, inuse, ppl, webpages
from .cache import CachedReplies, model_identity
from .plot import plot_reports, read_report

TASKS = ("toolcall", "ifeval", "ifbench", "chain", "agent", "ppl", "all", "plot", "webpages")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m nanoagent.eval",
                                 description="Evaluate a model: tool calls (BFCL AST), instruction following "
                                             "(IFEval, and IFBench's unseen constraints), multi-step tool use "
                                             "(GSM8K test with the calculator), the agent in use with the project's "
                                             "calculator and clock, perplexity; or draw reports.")
    ap.add_argument("task", choices=TASKS,
                    help="'all' runs toolcall and ifeval; 'plot' draws --reports as grouped bars (or lines, --lines); "
                         "'webpages' measures visit_webpage's text on saved pages (no model)")
    ap.add_argument("--model", default=None, help="HF model folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--limit", type=int, default=None,
                    help="how many items: the first N of each BFCL category (so 5 x N for all five), the first N "
                         "IFEval prompts, the first N checkable IFBench prompts, the first N GSM8K test questions, "
                         "the first N requests of each kind for agent, or N ppl rows")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="reply length cap (default: 256 for toolcall and agent, 512 for ifeval and ifbench, 384 for "
                         "chain)")
    ap.add_argument("--batch", type=int, default=8,
                    help="replies decoded together (the same replies as one at a time, sooner; 1: one at a time)")
    ap.add_argument("--categories", default=",".join(CATEGORIES), help="BFCL categories, comma-separated")
    ap.add_argument("--bfcl-dir", default=None,
                    help=f"unzipped bfcl_eval/data/ of {BFCL_WHEEL} (default: fetched on first use and cached)")
    ap.add_argument("--ifeval-data", default=None,
                    help="IFEval input_data.jsonl (default: the shared data folder, else google/IFEval)")
    ap.add_argument("--ifbench-data", default=None,
                    help="IFBench IFBench_test.jsonl (default: the shared data folder, else allenai/IFBench_test)")
    ap.add_argument("--data", default=None,
                    help="ppl: a text file, a .jsonl/.json/.parquet file or a hub dataset; chain: a GSM8K test "
                         ".jsonl (default: the shared data folder's gsm8k/test.jsonl, else openai/gsm8k)")
    ap.add_argument("--max-steps", type=int, default=chain.MAX_STEPS,
                    help=f"chain and agent: most replies of the agent per question (default {chain.MAX_STEPS})")
    ap.add_argument("--seq-len", type=int, default=1024, help="ppl: tokens per window")
    ap.add_argument("--out", type=Path, default=None,
                    help="write the results here (default: eval-TASK.json; for plot, eval.png); the replies are "
                         "remembered beside it in OUT_STEM.replies.jsonl")
    ap.add_argument("--resume", action="store_true",
                    help="take the replies remembered beside --out by an earlier run of the same model; generate "
                         "only the rest")
    ap.add_argument("--reports", nargs="+", default=None, metavar="JSON",
                    help="plot: one report per model (several files of one model joined with commas)")
    ap.add_argument("--names", nargs="+", default=None, metavar="NAME",
                    help="plot: the models' names, in the order of --reports (default: each report's model)")
    ap.add_argument("--title", default=None, help="plot: a title above the bars")
    ap.add_argument("--first", type=int, default=None,
                    help="plot: BFCL's figures of the first N items of each category (runs of more items beside "
                         "runs of N)")
    ap.add_argument("--lines", action="store_true",
                    help="plot: the reports are the rounds of one run, in order: one line per measure across them")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    for flag in ("limit", "max_new_tokens", "batch", "max_steps", "seq_len", "first"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1, not {value}")
    if args.task == "plot":
        if not args.reports:
            ap.error("plot needs --reports (one report per model)")
        if args.names is not None and len(args.names) != len(args.reports):
            ap.error(f"--names: {len(args.names)} names for {len(args.reports)} reports; give one per report")
    elif args.reports or args.names or args.first or args.lines:
        ap.error("--reports, --names, --first and --lines are for the plot task")
    return args


def replies_path(out: Path) -> Path:
    """Where a report's replies are remembered: beside it, `eval-chain.json` -> `eval-chain.replies.jsonl`."""
    return out.with_name(out.stem + ".replies.jsonl")


def plot(args) -> None:
    reports = [read_report(spec) for spec in args.reports]
    names = args.names or [Path(str(r.get("model") or spec)).name for r, spec in zip(reports, args.reports)]
    out = plot_reports(reports, names, args.out or Path("eval.png"), args.title, args.first, args.lines)
    print(f"wrote {out}", file=sys.stderr)


def run_task(task: str, model, args) -> tuple[dict, str]:
    """One evaluation -> (its results, its table)."""
    if task == "toolcall":
        cats = [c.strip() for c in args.categories.split(",") if c.strip()]
        res = bfcl.run_toolcall(model, cats, args.limit, args.bfcl_dir, args.max_new_tokens or 256,
                                progress=not args.quiet, batch=args.batch)
        return res, bfcl.format_table(res["summary"])
    if task == "ifeval":
        res = ifeval.run_ifeval(model, args.ifeval_data, args.limit, args.max_new_tokens or 512,
                                progress=not args.quiet, batch=args.batch)
        return res, ifeval.format_table(res["summary"])
    if task == "ifbench":
        res = ifbench.run_ifbench(model, args.ifbench_data, args.limit, args.max_new_tokens or 512,
                                  progress=not args.quiet, batch=args.batch)
        return res, ifbench.format_table(res["summary"])
    if task == "chain":
        res = chain.run_chain(model, args.data, args.limit, args.max_new_tokens or 384, args.max_steps,
                              progress=not args.quiet, batch=args.batch)
        return res, chain.format_table(res["summary"])
    if task == "agent":
        res = inuse.run_inuse(model, args.limit, args.max_new_tokens or 256, args.max_steps, progress=not args.quiet)
        return res, inuse.format_table(res["summary"])
    res = ppl.run_ppl(model, args.data, args.seq_len, args.limit, progress=not args.quiet)
    return res, ppl.format_table(res["summary"])


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    with one_line_errors(WeightsError, DataError, BFCLDataError, ValueError, OSError,
                         interrupted="interrupted; run again with --resume to go on from the replies made so far"):
        if args.task == "plot":
            return plot(args)
        if args.task == "webpages":
            return webpages.main([])
        if args.task == "ppl" and not args.data:
            raise DataError("ppl needs --data (a text file, a .jsonl/.json/.parquet file or a hub dataset name)")
        out = args.out or Path(f"eval-{args.task}.json")
        folder = resolve(args.model)
        model = load(folder)
        if args.task != "ppl":  # replies, remembered so that a stopped run can be resumed
            model = CachedReplies(model, replies_path(out), model_identity(folder), resume=args.resume)
        report = {"model": str(args.model or "SmolLM2-135M-Instruct"), "limit": args.limit}
        tasks = ("toolcall", "ifeval") if args.task == "all" else (args.task,)
        for task in tasks:
            t0, hits = time.perf_counter(), getattr(model, "hits", 0)
            res, table = run_task(task, model, args)
            res["seconds"] = round(time.perf_counter() - t0, 1)
            res["remembered_replies"] = getattr(model, "hits", 0) - hits  # from an earlier run (--resume)
            report[task] = res
            resumed = f", {res['remembered_replies']} replies from the earlier run" if res["remembered_replies"] else ""
            print(f"== {task} ({res['seconds']:.0f} s{resumed})\n{table}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(out)
        print(f"wrote {out}", file=sys.stderr)
        return report


if __name__ == "__main__":
    main()
