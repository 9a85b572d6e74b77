"""``python -m ipop``: the same command line as the ``ipop`` console script."""

from .cli import main

raise SystemExit(main())
