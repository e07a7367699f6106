"""``python -m sigproxy``."""

from .cli import main

raise SystemExit(main())
