"""``python -m msmtrec`` is the same as the ``msmtrec`` console script.

After a command has finished (its files written and closed), the process leaves with ``os._exit`` once the
exit hooks have run and the standard streams are flushed: the interpreter's own teardown of torch and pandas
is a noticeable share of a short ``msmtrec train`` (figures in docs/training.md). Errors still leave through
``SystemExit`` as before.
"""

import atexit
import os
import sys

from msmtrec.cli import main

main()
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
