"""``python -m msmtrec`` is the same as the ``msmtrec`` console script."""

from msmtrec.cli import main

main()
