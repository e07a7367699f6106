"""The modules compiled with mypyc (:mod:`sigproxy.compiled`): that the suite runs them compiled, and the rules
compiled code must keep beyond what mypy checks."""

from __future__ import annotations

import ast
import asyncio
import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sigproxy.compiled import MODULES, SOURCES, pure_python
from sigproxy.h1conn import H1Connection
from sigproxy.h1wire import request_head

ROOT = Path(__file__).resolve().parents[2]

# ``async with`` whose exit never suspends (so never while an exception is being handled): the context
# expression as written, and why.
_EXITS_WITHOUT_AWAIT = {
    "asyncio.timeout": "asyncio.Timeout.__aexit__ awaits nothing",
    "upstream": "UpstreamResponse.__aexit__ (sigproxy/h1response.py) calls H1Connection.finish and awaits nothing",
}


@pytest.mark.skipif(pure_python(), reason="SIGPROXY_PURE_PYTHON runs the source")
@pytest.mark.parametrize("module", MODULES)
def test_the_suite_runs_the_compiled_module(module: str) -> None:
    """What is shipped is what is tested: each module of MODULES is the extension built from it (``make``
    builds them; conftest.py stops the suite when one is older than the source)."""
    loaded = importlib.import_module(module)
    assert loaded.__file__ is not None
    assert loaded.__file__.endswith(".so"), f"{module} runs from {loaded.__file__}: build it (`make setup`)"


def _suspends_while_handling(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every ``await``, ``async for`` and ``async with`` a coroutine may suspend at while an exception is being
    handled: in an ``except`` or ``finally`` block, or an ``async with`` exit not known to run straight through."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Try | ast.TryStar):
            blocks = [*(handler.body for handler in node.handlers), node.finalbody]
            for block in blocks:
                for statement in block:
                    for inner in ast.walk(statement):
                        if isinstance(inner, ast.Await | ast.AsyncFor | ast.AsyncWith):
                            yield inner.lineno, ast.unparse(inner).splitlines()[0]
        elif isinstance(node, ast.AsyncWith):
            for item in node.items:
                expr = item.context_expr
                name = ast.unparse(expr.func if isinstance(expr, ast.Call) else expr)
                if name not in _EXITS_WITHOUT_AWAIT:
                    yield node.lineno, f"async with {name}"


@pytest.mark.parametrize(("module", "source"), list(zip(MODULES, SOURCES, strict=True)))
def test_no_compiled_coroutine_suspends_while_handling_an_exception(module: str, source: str) -> None:
    """A mypyc coroutine that suspends while it handles an exception (the CancelledError of a cancelled task,
    thrown into it) leaves that exception set as the thread's current one after it suspends: every exception
    raised later in the event loop takes it as its ``__context__`` (wrong chains in logged tracebacks, and
    objects kept alive). Await after the ``try`` statement instead (``H1Connection._write_stream``)."""
    found = list(_suspends_while_handling(ast.parse((ROOT / source).read_text())))
    assert not found, f"{module}: " + "; ".join(f"line {line}: {text}" for line, text in found)


# Module-level names of compiled modules that are not Final constants, and why.
_NOT_FINAL = {
    ("sigproxy/bodyplan.py", "Stream"): "a type alias",
    ("sigproxy/egress.py", "IPAddress"): "a type alias",
    ("sigproxy/egress.py", "Lookup"): "a type alias",
    ("sigproxy/egress.py", "_shared"): "made on first use (global)",
    ("sigproxy/forwarding.py", "_Key"): "a type alias",
    ("sigproxy/h1conn.py", "Interim"): "a type alias",
    ("sigproxy/inbound.py", "_Pairs"): "a type alias",
    ("sigproxy/intake/h1server.py", "Entry"): "a type alias",
    ("sigproxy/metrics.py", "Snapshot"): "a type alias",
    ("sigproxy/metrics.py", "_Finished"): "a type alias",
    ("sigproxy/metrics.py", "Sampled"): "a type alias",
    ("sigproxy/signing.py", "_last_stamp"): "swapped whole each second (global)",
}


def _module_names(tree: ast.Module) -> Iterator[tuple[str, bool]]:
    """(name, declared Final) of each module-level assignment but the dunders."""
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and not target.id.startswith("__"):
                    yield target.id, False
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            yield node.target.id, "Final" in ast.unparse(node.annotation)


@pytest.mark.parametrize("source", SOURCES)
def test_module_constants_are_final(source: str) -> None:
    """A compiled module's constants are declared ``Final``: mypyc keeps those in C variables (or inlines them),
    where any other module-level name is looked up in the module's dictionary at every use (issue 15: a small
    GET's compiled code made 65 such lookups before, 18 after). mypy checks that nothing rebinds them."""
    found = [name for name, final in _module_names(ast.parse((ROOT / source).read_text()))
             if not final and (source, name) not in _NOT_FINAL]
    assert not found, f"{source}: declare Final (or list in _NOT_FINAL with why): {', '.join(found)}"


def test_the_constants_rule_finds_what_it_is_about() -> None:
    tree = ast.parse("A = 1\nB: Final = 2\nC: int = 3\nD: Final[int] = 4\n__all__ = []\nE: int\n")
    assert list(_module_names(tree)) == [("A", False), ("B", True), ("C", False), ("D", True)]


def test_the_rule_finds_what_it_is_about() -> None:
    source = """
async def f(x):
    try:
        await x
    finally:
        await x.close()
    try:
        await x
    except Exception:
        async for _ in x:
            pass
    async with lock:
        pass
    async with asyncio.timeout(1):
        await x
"""
    assert [line for line, _ in _suspends_while_handling(ast.parse(source))] == [6, 10, 12]


async def test_a_cancelled_body_writer_leaves_no_current_exception() -> None:
    """The streamed-body writer is cancelled when its response ends first (H1Connection.finish) and closes its
    source then: afterwards no exception is left current in the event loop's callbacks."""
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the proxy gives the connection up
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            yield b"x" * 10
            await asyncio.Event().wait()  # the source never ends: the writer is cancelled waiting on it
            yield b""
        finally:
            await asyncio.sleep(0)  # its close suspends, as a spool file's or a client's body may
            closed.set()

    loop = asyncio.get_running_loop()
    conn = H1Connection("127.0.0.1", 5.0)
    try:
        await loop.create_connection(lambda: conn, "127.0.0.1", port)
        source = endless()
        head, chunked = request_head("PUT", "/k", f"127.0.0.1:{port}", [], source)
        response = await conn.request("PUT", head, source, chunked)
        assert response.status == 413
        conn.finish()  # cancels the writer, which closes its source
        await asyncio.wait_for(closed.wait(), 5)
        current: list[BaseException | None] = []
        loop.call_soon(lambda: current.append(sys.exception()))
        await asyncio.sleep(0.01)
        assert current == [None]
    finally:
        conn.close()
        server.close()
        await server.wait_closed()
