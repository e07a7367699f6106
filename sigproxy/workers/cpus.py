"""How many CPUs this process may use: the default of ``[proxy] workers``.

The CPUs it may be scheduled on (``os.sched_getaffinity``: ``taskset``, cgroup cpusets), capped by a CPU
bandwidth limit of its cgroup (a container's ``resources.limits.cpu``: cgroup v2 ``cpu.max``, v1
``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounded down, at least 1. A pod limited to 500m CPU on a 64-CPU
node runs one worker, not 64.
Must not: raise (an unreadable limit is no limit).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus"]

_V2 = Path("/sys/fs/cgroup/cpu.max")
_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def _quota(root: Path | None = None) -> float | None:
    """The cgroup's CPU bandwidth limit in CPUs, or ``None`` when there is none (or it can't be read)."""
    v2 = _V2 if root is None else root / "cpu.max"
    quota_v1, period_v1 = _V1 if root is None else (root / "cpu.cfs_quota_us", root / "cpu.cfs_period_us")
    try:
        if v2.exists():
            quota, _, period = v2.read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period or "100000")
        if quota_v1.exists():
            quota_us = int(quota_v1.read_text())
            return None if quota_us <= 0 else quota_us / int(period_v1.read_text())
    except (OSError, ValueError):
        return None
    return None


def available_cpus(root: Path | None = None) -> int:
    """CPUs this process may use (see the module docstring); ``root``: a cgroup folder to read instead of the
    process's own (tests)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _quota(root)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)
