"""Fixtures the unit tests of more than one module share."""

from __future__ import annotations

import pytest

from sigproxy import logsink


@pytest.fixture
def sink_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Each ``write_all`` call's data, in order, as :class:`sigproxy.logsink.LineSink` writes batches of log lines
    (the writes still happen)."""
    writes: list[bytes] = []
    write_all = logsink.write_all

    def recording(fd: int, data: bytes) -> None:
        writes.append(data)
        write_all(fd, data)

    monkeypatch.setattr(logsink, "write_all", recording)
    return writes
