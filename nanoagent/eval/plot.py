"""The picture: evaluation reports of several models as grouped bars, one group per measure; or, with
`--lines`, the reports as the rounds of one run, one line per measure across them.

    python -m nanoagent.eval plot --reports eval-base.json eval-sft.json --names base SFT --out docs/eval.png

A report is the JSON `python -m nanoagent.eval` writes; one model's figures may be spread over several
(`base-toolcall.json,base-chain.json`: joined with commas, later files adding their tasks). The measures
are those present in any report, in this order: the five BFCL categories and their mean, format
compliance, IFEval prompt-level strict and IFBench's beside it, the chain evaluation with the calculator and
without tools, the agent in use.
Drawn with matplotlib (the `eval` extra) on its file-only Agg backend; the PNG is written atomically.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..data.benchmarks import CATEGORIES
from .bfcl import first_of_each, summarize

MEASURES = (*CATEGORIES, "BFCL mean", "format compliance", "IFEval prompt strict", "IFBench prompt strict",
            "chain, calculator", "chain, no tools", "agent in use")


def read_report(spec: str) -> dict:
    """A report file, or several joined with commas (one model's tasks from separate runs) -> one report."""
    report: dict = {}
    for name in spec.split(","):
        path = Path(name.strip())
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ValueError(f"cannot read the report {path}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not a JSON report ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a report of `python -m nanoagent.eval`")
        report |= data
    return report


def measures(report: dict, first: int | None = None) -> dict[str, float]:
    """A report -> {measure: percent} for the measures it holds (see MEASURES); with `first`, the BFCL measures
    of the first `first` items of each category only (a first-100 run beside first-40 ones)."""
    out = {}
    toolcall = (report.get("toolcall") or {}).get("summary")
    if first is not None and toolcall:
        toolcall = summarize(first_of_each(report["toolcall"]["results"], first))
    if toolcall:
        for c, v in toolcall.get("categories", {}).items():
            out[c] = 100 * v["accuracy"]
        if toolcall.get("categories"):
            out["BFCL mean"] = 100 * toolcall["overall"]
        if toolcall.get("format_compliance") is not None:
            out["format compliance"] = 100 * toolcall["format_compliance"]
    ifeval = (report.get("ifeval") or {}).get("summary")
    if ifeval:
        out["IFEval prompt strict"] = 100 * ifeval["prompt_strict"]
    ifbench = (report.get("ifbench") or {}).get("summary")
    if ifbench:
        out["IFBench prompt strict"] = 100 * ifbench["prompt_strict"]
    chain = (report.get("chain") or {}).get("summary")
    if chain:
        out["chain, calculator"] = 100 * chain["with_tools"]["accuracy"]
        out["chain, no tools"] = 100 * chain["without_tools"]["accuracy"]
    agent = (report.get("agent") or {}).get("summary")
    if agent:
        out["agent in use"] = 100 * agent["accuracy"]
    return out


def plot_reports(reports: list[dict], names: list[str], out: str | Path, title: str | None = None,
                 first: int | None = None, lines: bool = False) -> Path:
    """Grouped bars (measures x models) of `reports`, labelled with `names`, written to the PNG `out`; with
    `first`, BFCL's figures of the first `first` items of each category; with `lines`, one line per measure
    across the reports in their order (the rounds of one run, `names` on the x axis)."""
    if len(names) != len(reports):
        raise ValueError(f"{len(names)} names for {len(reports)} reports: give one name per report")
    figures = [measures(r, first) for r in reports]
    shown = [m for m in MEASURES if any(m in f for f in figures)]
    if not shown:
        raise ValueError("the reports hold no figure to draw (no toolcall, ifeval, ifbench or chain results)")
    try:
        import matplotlib
    except ImportError:
        raise ValueError("drawing needs matplotlib: pip install matplotlib (or the `eval` extra)") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    if lines:
        fig, ax = plt.subplots(figsize=(max(7.0, 2.5 + 1.4 * len(reports)), 4.2), dpi=150)
        for m in shown:
            ys = [f.get(m, math.nan) for f in figures]  # a round not run on a measure: a gap in its line
            ax.plot(range(len(reports)), ys, marker="o", label=m.replace("_", " "),
                    linewidth=2.5 if m == "BFCL mean" else 1.2)
        ax.set_xticks(range(len(reports)), names, rotation=20, ha="right", fontsize=8)
        legend = dict(loc="center left", bbox_to_anchor=(1.01, 0.5))  # one column beside the lines
    else:
        width = 0.8 / len(reports)  # the bars of one group share 0.8 of the space between groups
        fig, ax = plt.subplots(figsize=(max(6.0, 0.5 + len(shown) * (0.35 + 0.22 * len(reports))), 4.2), dpi=150)
        for k, (name, fig_values) in enumerate(zip(names, figures)):
            xs = [i - 0.4 + width * (k + 0.5) for i in range(len(shown))]
            ys = [fig_values.get(m, math.nan) for m in shown]  # a measure a model was not run on: no bar
            bars = ax.bar(xs, ys, width, label=name)
            ax.bar_label(bars, labels=["" if math.isnan(y) else f"{y:.0f}" for y in ys], fontsize=6, padding=1)
        ax.set_xticks(range(len(shown)), [m.replace("_", " ") for m in shown], rotation=30, ha="right", fontsize=8)
        legend = dict(ncols=min(len(reports), 5), loc="upper center", bbox_to_anchor=(0.5, -0.32))
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, **legend)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png")
        tmp.replace(out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
