"""``python -m sdactivate``: units without a venv on PATH need it."""

from sdactivate.cli import main

raise SystemExit(main())
