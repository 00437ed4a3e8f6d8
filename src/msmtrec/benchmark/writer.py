"""Writing a results folder's reports: the Markdown tables (:mod:`.report`) and the plots (:mod:`.plots`).

Kept apart from both so the data flows one way: plots read what report computes, and neither imports this.
"""

from __future__ import annotations

from pathlib import Path

from msmtrec.benchmark import plots
from msmtrec.benchmark.report import ablation_md, cost_md, load_results, seesaw_md, summary_md


def write_reports(out: Path) -> list[Path]:
    """(Re)write every Markdown report and plot of a results folder; returns the files written."""
    res = load_results(out)
    if res.frame.empty:
        raise ValueError(f"{out}/results.csv holds no complete run yet")
    written = []
    for name, text in (
        ("summary.md", summary_md(res)),
        ("seesaw.md", seesaw_md(res)),
        ("ablation.md", ablation_md(res)),
        ("cost.md", cost_md(res)),
    ):
        (out / name).write_text(text)
        written.append(out / name)
    written += plots.write_plots(res, out)
    return written
