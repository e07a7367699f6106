"""What every benchmark here shares: pinning processes to cores and starting a server that prints its URL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "pinned", "start"]

ROOT = Path(__file__).resolve().parent.parent


def pinned(core: int, cmd: list[str]) -> list[str]:
    """``cmd`` run on one core with taskset, where the machine has more than one."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *cmd]
    return cmd


def start(cmd: list[str], marker: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``cmd`` and return it with the last word of its first stdout line containing ``marker``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line:
            return proc, line.strip().split()[-1]
    sys.exit(f"{cmd[0]} did not start")
