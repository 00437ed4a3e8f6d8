"""``python -m msmtrec.cli`` is the same as the ``msmtrec`` console script."""

from msmtrec.cli import main

main()
