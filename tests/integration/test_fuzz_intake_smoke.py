"""A bounded run (~12 s) of the intake fuzz target (fuzz/intake.py): a real ``sigproxy run``, raw request
heads over sockets; every connection answered well-formed or closed, no traceback, /healthz still 200."""

from __future__ import annotations

from fuzz import intake
from fuzz.engine import fuzz


def test_intake_fuzz_smoke() -> None:
    stats = fuzz(intake.TARGETS[0], 12.0, batch=100, save=False, log=print)
    print(stats.report())
    assert stats.executions >= 10
    assert not stats.findings, stats.report()
