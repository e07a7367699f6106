"""The skeleton: bench/floor.py's callbacks doing sigproxy's per-request work with sigproxy's own functions.

    .venv/bin/python bench/skeleton.py [--listen 127.0.0.1:0] [--log-level info]

A measurement for issue 15's target 1, never a product. bench/floor.py is the least a Python signing proxy costs;
sigproxy costs about three times as much. This splits that gap in two: what sigproxy's per-request *functions*
cost (routing, policy, signing, the egress check, the request head, the response's end-to-end headers, metrics,
the access line) and what its *skeleton* costs around them (a task and coroutines per request, the request,
exchange, body-plan and response objects, futures, timeouts, the pool, pipelining order). Here the same
functions run from protocol callbacks, as bench/floor.py's work does: what sigproxy would cost if its skeleton
were as thin as the floor's and every function stayed as it is. bench/instructions.py (``--rows skeleton``) and
bench/small_get.py (row ``skeleton``) run it beside the others.

The request takes the path sigproxy's handler takes for a bodiless GET on the bench connection (static keys;
:func:`sigproxy.handler.Handler._handle`): the same calls in the same order with the same arguments, the same
access line (written by :func:`sigproxy.observability.log_access` at ``info``) and the same metrics. What it
leaves out: the credential provider (the static keys are used directly; sigproxy's cache hit is a dict lookup
in a coroutine), timeouts, limits, error answers (a request it can't handle gets the connection closed), bodies
and the pool (one kept-alive upstream connection per client connection, as the floor has).

Prints ``skeleton: forward proxy listening on http://HOST:PORT`` once listening, as ``sigproxy run`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import time
from datetime import UTC, datetime

import floor
import uvloop
from common import BENCH_CONNECTION
from multidict import CIMultiDict

from sigproxy.config import loads
from sigproxy.egress import EgressPolicy
from sigproxy.h1wire import request_head
from sigproxy.headerrules import connection_options, end_to_end
from sigproxy.http1 import Response
from sigproxy.jsonlines import RequestIds, audit_path
from sigproxy.metrics import Metrics
from sigproxy.observability import log_access, setup_logging
from sigproxy.prepare import sign_request
from sigproxy.routing import (
    check_host,
    check_policy,
    check_shape,
    parse_absolute_target,
    parse_client_key_id,
    parse_client_scope,
    presigned_by_client,
    resolve_service_region,
    select_connection,
    sigv4a_region_set,
)
from sigproxy.signing import EMPTY_SHA256, Credentials, Signer

_config = loads('[proxy]\nadmin_listen = ""\ndefault_connection = "bench"\n[store]\nurl = ""\n' + BENCH_CONNECTION)
_static = _config.connections["bench"].credentials  # BENCH_CONNECTION's static keys, used as a cache hit would
assert _static.access_key_id is not None
assert _static.secret_access_key is not None
_creds = Credentials(_static.access_key_id, _static.secret_access_key.reveal())
_signer = Signer()
_metrics = Metrics()
_ids = RequestIds()
_access = logging.getLogger("sigproxy.access")
_policies: dict[str, EgressPolicy] = {}
_utc_now = functools.partial(datetime.now, UTC)  # the handler's clock
_connecting: set[asyncio.Task[object]] = set()


class Upstream(floor.Upstream):
    """bench/floor.py's upstream connection, its response's headers read and answered as sigproxy does."""

    def __init__(self, client: Client) -> None:
        assert client.transport is not None
        super().__init__(client.transport)
        self.owner = client
        self.fields: list[tuple[str, str]] = []
        self.connection: list[str] = []

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.fields, self.connection = [], []

    def on_header(self, name: bytes, value: bytes) -> None:
        pair = (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        self.fields.append(pair)
        if len(name) == 10 and name.lower() == b"connection":
            self.connection.append(pair[1])

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        body = b"".join(self.body)
        out = end_to_end(self.fields, connection_options(self.connection))
        self.client.write(Response(status, None, out, body).encode(None, keep_alive=True))
        self.owner.done(status, len(body))


class Client(floor.Client):
    """bench/floor.py's client connection, its request routed, checked, signed, logged and counted with
    sigproxy's functions."""

    def __init__(self) -> None:
        super().__init__()
        self.remote = "-"
        self.info: dict[str, object] = {}
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.remote = transport.get_extra_info("peername")[0]

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_message_complete(self) -> None:
        # sigproxy.handler.Handler.__call__ and _handle for a bodiless GET, in order.
        self.started = time.monotonic()
        method = self.parser.get_method().decode()
        target = parse_absolute_target(self.url.decode("utf-8", "surrogateescape"))
        headers = CIMultiDict(self.headers)
        info: dict[str, object] = {"request_id": _ids.next(), "client": self.remote, "method": method,
                                   "host": target.host, "path": audit_path(target)}
        self.info = info
        authorization = headers.get("Authorization")
        scope = parse_client_scope(authorization, target.query)
        selection = select_connection(_config, target, connection_header=headers.get("X-Sigproxy-Connection"),
                                      proxy_authorization=headers.get("Proxy-Authorization"), client_scope=scope,
                                      listener=None, client_key_id=parse_client_key_id(authorization, target.query))
        conn = selection.connection
        info["connection"], info["selected_by"] = conn.name, selection.how
        check_host(conn, target)
        region_set = sigv4a_region_set(conn, target, headers)
        service, region = resolve_service_region(conn, target, service_header=headers.get("X-Sigproxy-Service"),
                                                 region_header=region_set or headers.get("X-Sigproxy-Region"),
                                                 client_scope=scope)
        info["service"], info["region"] = service, region
        check_shape(target, headers, service)
        check_policy(conn, method, service, region, headers.items(), websocket=False)
        presigned_by_client(target.query)
        info["cred_cache"], info["key_id"], info["body"] = "hit", _creds.access_key_id, "empty"
        out = sign_request(_signer, _creds, method=method, target=target, headers=list(headers.items()),
                           payload_hash=EMPTY_SHA256, body_length=None, service=service, region=region,
                           now=_utc_now(), upstream_scheme=conn.upstream_scheme)
        policy = _policies.get(conn.name)
        if policy is None:
            policy = _policies[conn.name] = EgressPolicy.for_connection(conn.name, conn.hosts, conn.private_networks)
        policy.check(target.host, target.port, target.host)
        origin = target.path + ("?" + target.query if target.query else "")
        head, _ = request_head(method, origin, target.authority, out.headers, None)
        if self.upstream is None:
            self.upstream = upstream = Upstream(self)
            loop = asyncio.get_running_loop()
            task = loop.create_task(loop.create_connection(lambda: upstream, target.host, target.port))
            _connecting.add(task)
            task.add_done_callback(_connecting.discard)
        self.upstream.send(head)

    def done(self, status: int, sent: int) -> None:
        """sigproxy.handler.Handler._finish."""
        info = self.info
        info["bytes_up"], info["bytes_down"], info["status"] = None, sent, status
        elapsed = time.monotonic() - self.started
        info["ms"] = round(elapsed * 1000, 2)
        log_access(_access, info)
        _metrics.record(str(info["connection"]), str(info["service"]), str(status), elapsed, bytes_up=0,
                        bytes_down=sent, error=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    parser.add_argument("--log-level", default="info", help="info (an access line per request) or warning")
    args = parser.parse_args()
    setup_logging(args.log_level, "json")
    host, port = args.listen.rsplit(":", 1)
    uvloop.run(floor.serve(host, int(port), Client, "skeleton"))


if __name__ == "__main__":
    main()
