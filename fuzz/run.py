"""Run the fuzz targets: ``python fuzz/run.py [--target NAME ...] [--seconds N]`` (``make fuzz``).

Each target runs for N seconds (default 180); the report gives executions, executions per second, the
outcomes (the declared errors by kind) and every finding, whose shrunk input is saved under fuzz/crashes/.
Exit status 1 if anything was found.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.engine import Target, fuzz


def all_targets() -> dict[str, Target]:
    from fuzz import (  # noqa: PLC0415
        authorization,
        chunked,
        config_loader,
        intake,
        routing_parsers,
        sts_answer,
        upstream_response,
    )

    targets = [*chunked.TARGETS, *config_loader.TARGETS, *sts_answer.TARGETS, *routing_parsers.TARGETS,
               *authorization.TARGETS, *intake.TARGETS, *upstream_response.TARGETS]
    return {t.name: t for t in targets}


def main(argv: list[str] | None = None) -> int:
    targets = all_targets()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", action="append", choices=sorted(targets),
                        help="run only this target (repeatable); default: all")
    parser.add_argument("--seconds", type=float, default=180.0, help="seconds per target (default 180)")
    args = parser.parse_args(argv)
    found = 0
    for name in args.target or list(targets):
        print(f"[{name}] running for {args.seconds:.0f} s ({time.strftime('%H:%M:%S')})", flush=True)
        stats = fuzz(targets[name], args.seconds, log=lambda line: print(line, flush=True))
        print(stats.report(), flush=True)
        found += len(stats.findings)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
