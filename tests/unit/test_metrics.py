"""Metrics.record (written out for speed) counts exactly what Counter.inc and Histogram.observe would."""

from __future__ import annotations

import pytest

from sigproxy.metrics import Metrics

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
