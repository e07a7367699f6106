"""``python -m sigproxy.workers``: one worker of a ``workers = N`` group (started by the supervisor only)."""

from .worker import main

raise SystemExit(main())
