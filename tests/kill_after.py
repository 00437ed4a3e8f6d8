"""Launcher for exact-resume tests: run the msmtrec CLI and SIGKILL this process after N optimiser steps.

``python tests/kill_after.py N train ...`` (also under torchrun). The kill is injected into the trainer's
``after_step`` hook from here, so the library carries no test-only switch.
"""

from __future__ import annotations

import os
import signal
import sys

from msmtrec.cli import main
from msmtrec.training.trainer import Trainer

STEPS = int(sys.argv[1])
_done = {"steps": 0}


def _kill_after(_state: object) -> None:
    _done["steps"] += 1
    if _done["steps"] >= STEPS:
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


Trainer.after_step = staticmethod(_kill_after)
sys.exit(main(sys.argv[2:]))
