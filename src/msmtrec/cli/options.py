"""Command-line options shared by several commands, so each is spelled and explained once.

Commands build their parameters from these helpers (``threads: int = threads_option()``) and call
:func:`use_threads` before any heavy work. Importing this module is cheap: torch is imported only when a
command actually sets its thread count.
"""

from __future__ import annotations

from typing import Any

import typer

DEFAULT_THREADS = 1
"""One intra-op torch thread per process unless the user asks for more.

On a small or shared CPU, a second intra-op thread gains little when the host is idle (1.15-1.3x for
MMoE on 2 cores) and loses 7-11x when the other core is busy, because every small op then waits for a
thread that is not scheduled. One thread never collapses; use ``--threads N`` (or several one-thread
ranks under ``torchrun``, see docs/training.md) on a machine you have to yourself.
"""

THREADS_HELP = (
    "Intra-op torch threads for this process (default 1: never oversubscribes a shared CPU; "
    "0: torch's own default, one per core)."
)


def threads_option(default: int | None = DEFAULT_THREADS, help: str = THREADS_HELP) -> Any:
    """The ``--threads N`` option; ``default=None`` lets a config file's setting stand when it is not given."""
    return typer.Option(default, "--threads", min=0, help=help)


def use_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count for this process (``None`` or 0: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))
