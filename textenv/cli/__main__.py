"""``python -m textenv.cli``."""

from textenv.cli import main

raise SystemExit(main())
