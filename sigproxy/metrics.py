"""Prometheus metrics, kept in process and rendered in the text exposition format (version 0.0.4).

Owns: counters, gauges and histograms with labels, and their rendering. Values sampled from elsewhere at
scrape time (cache counters, open tunnels, connection states) are passed to :meth:`Metrics.render` by the
admin endpoint.

Per-connection series (label ``connection``) are one time series per tenant; with ``[proxy]
metrics_connection_label = "none"`` (``Metrics(connection_label=False)``) request counts, latency and bytes
drop that label and the per-connection ``sigproxy_connection_up`` gauge is left out, so a fleet of thousands
of connections exports a fixed number of series.
Must not: do I/O, read the clock (callers pass durations), or carry a secret in a label.

A finished request's counts (:meth:`Metrics.record`) are queued and added when the event-loop iteration ends,
with the iteration's others, as access lines are made (:mod:`sigproxy.accesslog` says why: between two
requests the rest of a request's code pushes the counting code out of the CPU's instruction cache; issue 15).
Whatever reads the counts (:meth:`Metrics.render`, :meth:`Metrics.snapshot`) adds what is queued first.
"""

from __future__ import annotations

import bisect
from asyncio.events import _get_running_loop
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["SETTLE_AT", "Counter", "GroupMetrics", "Histogram", "Metrics", "Sampled", "Snapshot"]

SETTLE_AT: Final = 128
"""Past this many requests queued, :meth:`Metrics.record` adds them at once, even inside one loop iteration."""

# The running loop or None, as asyncio's own code asks (get_running_loop raises without one).
_running_loop: Final = _get_running_loop
# A request's counts as record() queues them: connection, service, status, seconds, bytes up and down, error.
_Finished = tuple[str, str, str, float, int, int, str | None]

# Request latency buckets in seconds: a signing proxy adds milliseconds; AWS calls take tens to thousands.
_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


Snapshot = dict[str, list[list[Any]]]
"""A :class:`Metrics`' counts as JSON-able data (:meth:`Metrics.snapshot`): metric name -> ``[labels, value]``
rows for counters, ``[labels, bucket counts, sum]`` rows for histograms."""

Sampled = float | Mapping[tuple[tuple[str, str], ...], float]
"""A value sampled at scrape: one number, or numbers by their labels (``((name, value), ...)``)."""


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    escaped = (v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True)) + "}"


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class Counter:
    __slots__ = ("help", "labelnames", "name", "values")

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labelnames = name, help_text, labelnames
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.add(labels, amount)

    def add(self, labels: tuple[str, ...], amount: float) -> None:
        """:meth:`inc` with the labels as one tuple (no packing: :meth:`Metrics.record` runs per request)."""
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labelnames, labels)} {_num(value)}"


class Histogram:
    __slots__ = ("buckets", "help", "labelnames", "name", "series")

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...] = (),
                 buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self.name, self.help, self.labelnames, self.buckets = name, help_text, labelnames, buckets
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        self.add(labels, value)

    def add(self, labels: tuple[str, ...], value: float) -> None:
        """:meth:`observe` with the labels as one tuple (no packing: :meth:`Metrics.record` runs per request)."""
        series = self.series.get(labels)
        if series is None:  # not setdefault: that would build the empty series on every call
            series = self.series[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        counts, total = series
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, (counts, total) in sorted(self.series.items()):
            cumulative = 0
            names = (*self.labelnames, "le")
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _num(bound)
                yield f"{self.name}_bucket{_labels(names, (*labels, le))} {cumulative}"
            yield f"{self.name}_sum{_labels(self.labelnames, labels)} {_num(total[0])}"
            yield f"{self.name}_count{_labels(self.labelnames, labels)} {cumulative}"


class Metrics:
    """The proxy's metrics; one instance per process, survives config reloads (so ``connection_label``,
    from ``[proxy] metrics_connection_label``, changes only with a restart)."""

    def __init__(self, *, connection_label: bool = True) -> None:
        self.connection_label = connection_label
        by = ("connection",) if connection_label else ()
        self.requests = Counter("sigproxy_requests_total",
                                f"Requests handled, by {'connection, ' if by else ''}service and status.",
                                (*by, "service", "status"))
        self.latency = Histogram("sigproxy_request_duration_seconds", "Time from request head to last byte.", by)
        self.errors = Counter("sigproxy_errors_total",
                              f"Requests sigproxy answered itself with an error, by {'connection and ' if by else ''}"
                              "its error code (X-Sigproxy-Error: host_not_allowed, upstream_error, ...).",
                              (*by, "code"))
        self.bytes_up = Counter("sigproxy_request_bytes_total", "Request body bytes sent upstream.", by)
        self.bytes_down = Counter("sigproxy_response_bytes_total", "Response body bytes sent to clients.", by)
        self.sts_latency = Histogram("sigproxy_credential_fetch_duration_seconds",
                                     "Time taken by credential fetches (STS and friends).")
        self.admin_auth_failures = Counter("sigproxy_admin_auth_failures_total",
                                           "Admin API (/v1) requests refused for a missing or wrong bearer token.")
        self.admin_auth_failures.values[()] = 0.0  # exported from the start, not after the first failure
        self.recorded = 0
        """Requests :meth:`record` has counted (a worker's heartbeat sends its counts when this moved)."""
        self._pending: list[_Finished] = []

    def record(self, connection: str, service: str, status: str, seconds: float, *, bytes_up: int = 0,
               bytes_down: int = 0, error: str | None = None) -> None:
        """One finished request (``connection`` is dropped when the label is off); ``error``: the snake code of
        the error sigproxy answered it with (:mod:`sigproxy.errors`), if it did. In an event loop it is added
        to the counts when the loop iteration ends (module docstring), past :data:`SETTLE_AT` queued at once;
        outside one, at once."""
        self.recorded += 1
        pending = self._pending
        pending.append((connection, service, status, seconds, bytes_up, bytes_down, error))
        if len(pending) == 1:  # the iteration's first: the only running-loop look-up (a getpid() each)
            loop = _running_loop()
            if loop is None:
                self.settle()
            else:
                loop.call_soon(self.settle)
        elif len(pending) >= SETTLE_AT:
            self.settle()

    def settle(self) -> None:
        """Add the requests :meth:`record` queued to the counts (run at the end of a loop iteration, and before
        the counts are read). The labels are built once and handed over as tuples (``add``), not packed again
        by ``inc``/``observe`` (13.8k -> 9.1k instructions, issue 15)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        labelled = self.connection_label
        for connection, service, status, seconds, bytes_up, bytes_down, error in pending:
            by = (connection,) if labelled else ()
            self.requests.add((*by, service, status), 1.0)
            if error is not None:
                self.errors.add((*by, error), 1.0)
            self.latency.add(by, seconds)
            if bytes_up:
                self.bytes_up.add(by, bytes_up)
            if bytes_down:
                self.bytes_down.add(by, bytes_down)

    def _all(self) -> tuple[Counter | Histogram, ...]:
        return (self.requests, self.errors, self.latency, self.bytes_up, self.bytes_down, self.sts_latency,
                self.admin_auth_failures)

    def snapshot(self) -> Snapshot:
        """Every count so far as JSON-able data, for another process to :meth:`add` (``workers = N``: each
        worker's counts, summed by the supervisor for ``/metrics``)."""
        self.settle()
        out: Snapshot = {}
        for metric in self._all():
            if isinstance(metric, Counter):
                out[metric.name] = [[list(labels), value] for labels, value in metric.values.items()]
            else:
                out[metric.name] = [[list(labels), list(counts), total[0]]
                                    for labels, (counts, total) in metric.series.items()]
        return out

    def add(self, snapshot: Snapshot) -> None:
        """Add another process's :meth:`snapshot` to these counts (counters and histogram buckets summed).

        Raises :class:`ValueError` when the snapshot's histogram buckets or label names differ from these.
        """
        for metric in self._all():
            for row in snapshot.get(metric.name, ()):
                labels = tuple(str(v) for v in row[0])
                if len(labels) != len(metric.labelnames):
                    raise ValueError(f"{metric.name}: labels {labels!r} do not match {metric.labelnames!r}")
                if isinstance(metric, Counter):
                    metric.inc(*labels, amount=float(row[1]))
                    continue
                counts, total = metric.series.setdefault(labels, ([0] * (len(metric.buckets) + 1), [0.0]))
                if len(row[1]) != len(counts):
                    raise ValueError(f"{metric.name}: {len(row[1])} buckets, expected {len(counts)}")
                for i, n in enumerate(row[1]):
                    counts[i] += int(n)
                total[0] += float(row[2])

    def render(self, gauges: Mapping[str, tuple[str, str, Sampled]]) -> str:
        """The exposition text; ``gauges`` maps name -> (type, help, value) for values sampled at scrape."""
        self.settle()
        lines: list[str] = []
        for metric in self._all():
            lines.extend(metric.render())
        for name, (kind, help_text, value) in sorted(gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            if isinstance(value, Mapping):
                for labels, number in sorted(value.items()):
                    names, values = tuple(k for k, _ in labels), tuple(v for _, v in labels)
                    lines.append(f"{name}{_labels(names, values)} {_num(number)}")
            else:
                lines.append(f"{name} {_num(value)}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class GroupMetrics:
    """A ``workers = N`` group's counts, summed over the supervisor and every worker (``/metrics``).

    ``metrics``: requests, latency and bytes of every worker (those of workers that have exited included, as of
    their last report) plus the supervisor's own (credential fetches, admin API); ``open_tunnels`` and
    ``client_connections``: summed over the workers now; ``cache_hits`` and ``cache_misses``: the workers'
    credential lookups (answered from their copies, or waiting for the supervisor's broker).
    """

    metrics: Metrics
    open_tunnels: int
    client_connections: int
    cache_hits: int
    cache_misses: int
