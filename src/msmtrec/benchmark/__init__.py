"""Benchmarks: suites of models × datasets × seeds under one budget, and the reports built from them.

``load_suite`` reads a suite (shipped name or YAML path), ``run_suite`` executes the pending runs into a
results folder (resumable), and ``write_reports`` turns ``results.csv`` into the Markdown tables and plots.
The ``msmtrec benchmark`` command (:mod:`msmtrec.cli.bench`) is a thin wrapper over these three.
"""

from msmtrec.benchmark.report import load_results
from msmtrec.benchmark.runner import RESULT_COLUMNS, run_suite
from msmtrec.benchmark.suite import Suite, load_suite, shipped_suites
from msmtrec.benchmark.writer import write_reports

__all__ = ["RESULT_COLUMNS", "Suite", "load_results", "load_suite", "run_suite", "shipped_suites", "write_reports"]
