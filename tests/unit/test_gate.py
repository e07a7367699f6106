"""The connection gate's bookkeeping, with real TCP connections on 127.0.0.1 (accepted by a plain asyncio
server whose transports go to the gate)."""

from __future__ import annotations

import asyncio
import ipaddress
import json

from sigproxy.config import ProxyConfig
from sigproxy.intake.gate import Gate, Ticket


async def _accepting(gate: Gate, proxy: ProxyConfig, clients: tuple[ipaddress.IPv4Network, ...] = ()
                     ) -> tuple[asyncio.Server, list[Ticket | None]]:
    tickets: list[Ticket | None] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            tickets.append(gate.admit(transport, proxy, clients, "test"))

    server = await asyncio.get_running_loop().create_server(Probe, "127.0.0.1", 0)
    return server, tickets


async def _dial(server: asyncio.Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.05)  # accepted and judged
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> tuple[int, str]:
    reply = await asyncio.wait_for(reader.read(), 5)
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head[9:12]), json.loads(body)["error"]["code"]


def test_limits_and_release() -> None:
    async def main() -> None:
        gate = Gate()
        server, tickets = await _accepting(gate, ProxyConfig(max_connections=3, max_connections_per_client=2))
        a, b = await _dial(server), await _dial(server)
        assert gate.open == 2 and gate.count("127.0.0.1") == 2
        r, w = await _dial(server)
        assert tickets[2] is None
        assert await _answer(r) == (503, "too_many_connections")
        w.close()
        ticket = tickets[0]
        assert ticket is not None
        ticket.release()
        ticket.release()  # idempotent
        assert gate.open == 1 and gate.count("127.0.0.1") == 1
        c = await _dial(server)
        assert tickets[3] is not None and gate.open == 2
        for _, writer in (a, b, c):
            writer.close()
        server.close()

    asyncio.run(main())


def test_total_limit_and_allow_list() -> None:
    async def main() -> None:
        gate = Gate()
        server, tickets = await _accepting(gate, ProxyConfig(max_connections=1))
        _, w1 = await _dial(server)
        r, w2 = await _dial(server)
        assert tickets == [tickets[0], None] and tickets[0] is not None
        assert await _answer(r) == (503, "too_many_connections")
        server.close()
        outside, outside_tickets = await _accepting(gate, ProxyConfig(),
                                                    (ipaddress.ip_network("10.0.0.0/8"),))
        r3, w3 = await _dial(outside)
        assert outside_tickets == [None]
        assert await _answer(r3) == (403, "client_not_allowed")
        assert gate.open == 1  # refusals hold no place
        for w in (w1, w2, w3):
            w.close()
        outside.close()

    asyncio.run(main())
