"""``python -m hilt``: the command line."""

from .cli import main

raise SystemExit(main())
