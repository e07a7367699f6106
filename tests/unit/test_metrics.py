"""Metrics.record (written out for speed) counts exactly what Counter.inc and Histogram.observe would."""

from __future__ import annotations

import asyncio

import pytest

from sigproxy.metrics import SETTLE_AT, Metrics

REQUESTS = [
    ("acme", "s3", "200", 0.0004, 0, 420, None),
    ("acme", "s3", "200", 0.7, 1024, 0, None),
    ("acme", "sqs", "403", 0.003, 0, 180, "policy_refused"),
    ("other", "s3", "502", 12.0, 5, 0, "upstream_error"),
    ("other", "s3", "200", 0.0, 0, 0, None),
]


def _by_hand(label: bool) -> Metrics:
    m = Metrics(connection_label=label)
    for conn, service, status, seconds, up, down, error in REQUESTS:
        by = (conn,) if label else ()
        m.requests.inc(*by, service, status)
        if error is not None:
            m.errors.inc(*by, error)
        m.latency.observe(seconds, *by)
        if up:
            m.bytes_up.inc(*by, amount=up)
        if down:
            m.bytes_down.inc(*by, amount=down)
    return m


@pytest.mark.parametrize("label", [True, False])
def test_record_is_inc_and_observe(label: bool) -> None:
    m = Metrics(connection_label=label)
    for conn, service, status, seconds, up, down, error in REQUESTS:
        m.record(conn, service, status, seconds, bytes_up=up, bytes_down=down, error=error)
    assert m.snapshot() == _by_hand(label).snapshot()
    text = "\n".join(line for metric in m._all() for line in metric.render())
    if label:
        assert 'sigproxy_requests_total{connection="acme",service="s3",status="200"} 2' in text
        assert 'sigproxy_errors_total{connection="other",code="upstream_error"} 1' in text
        assert 'sigproxy_request_bytes_total{connection="acme"} 1024' in text
        assert 'sigproxy_response_bytes_total{connection="acme"} 600' in text
        assert 'sigproxy_request_duration_seconds_count{connection="other"} 2' in text
    else:
        assert 'sigproxy_requests_total{service="s3",status="200"} 3' in text
        assert "sigproxy_response_bytes_total 600" in text
        assert "sigproxy_request_duration_seconds_count 5" in text


async def test_in_a_loop_requests_are_counted_when_the_iteration_ends() -> None:
    """Inside an event loop record() queues; the iteration's end adds them (counted once each, whatever the
    order of reads); a read (render, snapshot) adds what is queued first; past SETTLE_AT queued, at once."""
    m = Metrics()
    for conn, service, status, seconds, up, down, error in REQUESTS:
        m.record(conn, service, status, seconds, bytes_up=up, bytes_down=down, error=error)
    assert m.requests.values == {} and m.recorded == len(REQUESTS)
    await asyncio.sleep(0)
    assert m.snapshot() == _by_hand(True).snapshot()
    m.record("acme", "s3", "200", 0.001)
    assert 'sigproxy_requests_total{connection="acme",service="s3",status="200"} 3' in m.render({})
    await asyncio.sleep(0)  # the queued end of the iteration finds nothing left: nothing counted twice
    assert m.requests.values[("acme", "s3", "200")] == 3.0
    for _ in range(SETTLE_AT):
        m.record("burst", "s3", "200", 0.001)
    assert m.requests.values[("burst", "s3", "200")] == float(SETTLE_AT)


def test_a_stopped_loop_loses_no_count() -> None:
    """A loop that stops before the iteration's end ran: the queued requests are counted at the next read."""
    m = Metrics()
    loop = asyncio.new_event_loop()

    def record_then_stop() -> None:
        m.record("acme", "s3", "200", 0.001)
        loop.stop()

    loop.call_soon(record_then_stop)
    loop.run_forever()
    loop.close()
    assert m.snapshot()["sigproxy_requests_total"] == [[["acme", "s3", "200"], 1.0]]
