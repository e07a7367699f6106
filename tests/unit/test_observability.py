"""The access log's fast path writes what the logging machinery would, in the same order, and loses nothing."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import random
import re
import select
import shlex
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from sigproxy.jsonlines import access_millis
from sigproxy.observability import (
    _TEXT_FORMAT,
    _BufferedStreamHandler,
    _JsonFormatter,
    _TextFormatter,
    encode_line,
    log_access,
)

FIELDS: dict[str, object] = {
    "request_id": "r-1", "client": "127.0.0.1", "method": "GET", "host": "bucket.s3.amazonaws.com",
    "path": "/k", "connection": "main", "service": "s3", "region": "us-east-1", "status": 200, "bytes_up": 0,
    "bytes_down": 12, "user": 'alice status=200 "x\u2028', "expires": object(), "ms": 1.5,
}


@pytest.fixture
def root_stream() -> Iterator[Callable[[], tuple[io.StringIO, _BufferedStreamHandler]]]:
    """Call it in the test (pytest adds its capture handlers to the root logger after fixtures ran): the root
    logger then writes only through a buffered handler into a StringIO, as setup_logging sets it up."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level

    def install() -> tuple[io.StringIO, _BufferedStreamHandler]:
        stream = io.StringIO()
        handler = _BufferedStreamHandler(stream)
        handler.setFormatter(_JsonFormatter())
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        return stream, handler

    yield install
    root.handlers[:] = saved
    root.setLevel(level)


Root = Callable[[], tuple[io.StringIO, _BufferedStreamHandler]]


def _record(created: float, access: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("sigproxy.access", logging.INFO, __file__, 1, "%s %s %s",
                               (access["method"], access["host"], access["status"]), None)
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    record.access = access
    return record


@pytest.mark.parametrize("formatter", [_JsonFormatter(), _TextFormatter(_TEXT_FORMAT), _JsonFormatter({"worker": 1}),
                                       _TextFormatter(_TEXT_FORMAT, {"worker": 1})])
@pytest.mark.parametrize("created", [1764547200.0, 1764547200.0005, 1764547259.9999, 1764547201.123456])
@pytest.mark.parametrize("fields", [FIELDS, {**FIELDS, "msg": "x", "worker": 7}, {"method": "GET", "host": "h"},
                                    {"method": "GET", "host": "h", "ts": "t", "msg": "x", "worker": 7},
                                    {"method": "GET", "host": "h", "big": 2**70, "none": None, "f": 1.25}])
def test_access_line_is_what_format_makes(formatter: _JsonFormatter | _TextFormatter, created: float,
                                          fields: dict[str, object]) -> None:
    """Every field, the message, level, logger, timestamp and the process's own fields (a worker's number),
    also when an access field has the name of one of them: the fast line equals the formatted record."""
    access = {"status": 200, **fields}
    fast = formatter.access_line(created, "sigproxy.access", access)
    assert fast == encode_line(formatter.format(_record(created, access)))


def test_json_line_keeps_the_old_shape() -> None:
    """The JSON line: ts (ISO 8601 UTC, milliseconds), level, logger, msg, then every field (str() if needed)."""
    line = _JsonFormatter().access_line(1764547201.123456, "sigproxy.access", FIELDS)
    assert line is not None
    entry = json.loads(line)
    assert list(entry)[:4] == ["ts", "level", "logger", "msg"]
    assert entry["ts"] == "2025-12-01T00:00:01.123+00:00" and entry["level"] == "info"
    assert b'"logger":"sigproxy.access"' in line
    assert {k: v for k, v in entry.items() if k in FIELDS} == {k: v if k != "expires" else str(v)
                                                               for k, v in FIELDS.items()}


FORGED_HOSTS = ["evil status=200 connection=admin",
                "a\u2028" + "2025-12-01 00:00:00,000 INFO sigproxy.access GET x 200", "b\nc", "d\r\ne",
                "\x1b[2J\x1b[31mred", "f\x85g\u2029h", 'q"uote', "back\\slash"]


@pytest.mark.parametrize("host", FORGED_HOSTS)
@pytest.mark.parametrize("fast", [True, False])
def test_text_access_line_is_one_line_whatever_the_host(host: str, fast: bool) -> None:
    """A client-chosen Host (``handler.reject`` logs it as sent) can neither add a line, nor a field, nor drive
    a terminal: it is quoted as a field value is, on the fast path and on logging's."""
    formatter = _TextFormatter(_TEXT_FORMAT)
    access = {"method": "GET", "host": host, "status": 400, "error": "bad_request"}
    line = (formatter.access_line(0.0, "sigproxy.access", access) if fast
            else encode_line(formatter.format(_record(0.0, access))))
    assert line is not None
    text = line.decode()
    assert len(text.splitlines()) == 1
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", text)
    message = text.split(" sigproxy.access ", 1)[1]
    assert message.startswith(f"GET {json.dumps(host)} 400 ")  # the host one JSON string, as field values are
    tokens = shlex.split(message)  # as a reader of key=value text splits it: quotes group
    assert len(tokens) == 5 and tokens[3:] == ["status=400", "error=bad_request"]


def test_text_messages_keep_to_one_line_and_tracebacks_keep_theirs() -> None:
    """Any message may carry what a client sent (a refused request's start): its controls are escaped; a
    traceback after it keeps its own lines; the process's fields (``worker``) still end a plain line."""
    formatter = _TextFormatter(_TEXT_FORMAT, {"worker": 3})
    record = logging.LogRecord("sigproxy.intake", logging.INFO, __file__, 1, "request head from %s refused: %s",
                               ("127.0.0.1", "GET /\r\nX-Evil: 1\x1b[0m\u2028next"), None)
    text = formatter.format(record)
    assert len(text.splitlines()) == 1
    assert text.endswith("refused: GET /\\r\\nX-Evil: 1\\x1b[0m\\u2028next worker=3")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("sigproxy", logging.ERROR, __file__, 1, "bad\nthing", (), sys.exc_info())
    lines = formatter.format(record).splitlines()
    assert lines[0].endswith("bad\\nthing") and lines[-1] == "ValueError: boom worker=3"


def test_text_formatter_with_another_format_takes_the_record_path() -> None:
    """A text format other than the default is not imitated: the record goes through logging."""
    assert _TextFormatter("%(message)s").access_line(0.0, "sigproxy.access", {}) is None


async def test_lines_are_written_once_per_loop_iteration(root_stream: Root,
                                                         ) -> None:
    """Inside the loop access lines wait for the iteration's end; a warning writes everything at once, in order."""
    stream, _ = root_stream()
    access = logging.getLogger("sigproxy.access")
    for i in range(3):
        log_access(access, {**FIELDS, "request_id": f"r-{i}"})
    assert stream.getvalue() == ""
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [json.loads(x)["request_id"] for x in stream.getvalue().splitlines()] == ["r-0", "r-1", "r-2"]
    log_access(access, {**FIELDS, "request_id": "r-3"})
    logging.getLogger("sigproxy.test").warning("now")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5 and json.loads(lines[3])["request_id"] == "r-3" and "now" in lines[4]


async def test_a_json_access_line_is_made_when_written(root_stream: Root) -> None:
    """Inside the loop a JSON access line is queued as the request's fields and made with the iteration's other
    lines when they are written (sigproxy.accesslog: the instruction cache), from the dict as it is then: the
    first line of an iteration (logging's checks) and the rest (the route) alike. The text is what the formatter
    makes of the same fields and time."""
    stream, handler = root_stream()
    access = logging.getLogger("sigproxy.access")
    fields = [{**FIELDS, "request_id": f"r-{i}"} for i in range(3)]
    for one in fields:
        log_access(access, one)
    for one in fields:
        one["status"] = 503  # after logging: the line is the dict's from then on
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    lines = stream.getvalue().splitlines()
    assert [json.loads(x)["status"] for x in lines] == [503, 503, 503]
    assert isinstance(handler.formatter, _JsonFormatter)
    for line, one in zip(lines, fields, strict=True):
        created = datetime.fromisoformat(json.loads(line)["ts"]).timestamp() + 0.0005  # within its millisecond
        assert line == handler.formatter.access_line(created, "sigproxy.access", one).decode()


async def test_an_access_line_that_cannot_be_made_is_reported_and_still_written(
        root_stream: Root, capsys: pytest.CaptureFixture[str]) -> None:
    """A field whose ``str()`` raises (JSON has no type for it) is reported on stderr with its traceback when the
    lines are made, as logging reports a record it can't format, and its line is written with that field as
    ``<TYPE>``: every request keeps its one line, in order."""
    stream, _ = root_stream()
    access = logging.getLogger("sigproxy.access")

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text for this field")

    for i, extra in enumerate(({}, {"odd": Unprintable()}, {}, {"odd": Unprintable()}, {})):
        log_access(access, {**FIELDS, "request_id": f"r-{i}", **extra})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["request_id"] for x in lines] == ["r-0", "r-1", "r-2", "r-3", "r-4"]
    assert [x.get("odd") for x in lines] == [None, "<Unprintable>", None, "<Unprintable>", None]
    assert all(x["status"] == 200 and x["user"] == FIELDS["user"] for x in lines)
    err = capsys.readouterr().err
    assert err.count("--- Logging error ---") == 2 and "no text for this field" in err
    assert "an access line could not be made as logged" in err


async def test_a_field_that_logs_while_its_line_is_made_loses_no_line(root_stream: Root) -> None:
    """A field whose ``str()`` logs a warning: that warning is written while the batch is being made (the
    handler's lock is re-entrant), and every access line still comes out once."""
    stream, _ = root_stream()
    access = logging.getLogger("sigproxy.access")

    class Chatty:
        def __str__(self) -> str:
            logging.getLogger("sigproxy.test").warning("made into text")
            return "chatty"

    for i in range(4):
        log_access(access, {**FIELDS, "request_id": f"r-{i}", "odd": Chatty()})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert sorted(x["request_id"] for x in lines if "request_id" in x) == ["r-0", "r-1", "r-2", "r-3"]
    assert all(x["odd"] == "chatty" for x in lines if "request_id" in x)
    assert sum(x["msg"] == "made into text" for x in lines) >= 4


def test_a_failed_write_reports_how_many_lines_it_lost(capsys: pytest.CaptureFixture[str]) -> None:
    """A batch the stream refuses (a pipe nobody reads: EPIPE) is reported once on stderr with its line count."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w", closefd=False) as stream:
        handler = _BufferedStreamHandler(stream)
        handler.setFormatter(_JsonFormatter())
        handler._pending.extend([b'{"n":1}', b'{"n":2}', b'{"n":3}'])
        handler._write()
        assert not handler._pending
    os.close(write_end)
    err = capsys.readouterr().err
    assert err.count("--- Logging error ---") == 1
    assert "%d log lines could not be written" in err and "Arguments: (3,)" in err


def test_outside_a_loop_lines_are_written_at_once(root_stream: Root) -> None:
    """A thread without an event loop writes through."""
    stream, _ = root_stream()
    log_access(logging.getLogger("sigproxy.access"), FIELDS)
    assert json.loads(stream.getvalue())["request_id"] == "r-1"


def test_an_operator_handler_still_sees_access_records(root_stream: Root,
                                                       ) -> None:
    """sigproxy.access stays a logger: a handler or filter added to it gets real records; levels silence it."""
    stream, _ = root_stream()
    access = logging.getLogger("sigproxy.access")
    seen: list[logging.LogRecord] = []
    extra = logging.Handler()
    extra.emit = seen.append  # type: ignore[method-assign]
    access.addHandler(extra)
    try:
        log_access(access, FIELDS)
    finally:
        access.removeHandler(extra)
    assert len(seen) == 1 and seen[0].access == FIELDS and seen[0].getMessage() == "GET bucket.s3.amazonaws.com 200"
    assert len(stream.getvalue().splitlines()) == 1  # and the root handler wrote it once
    access.setLevel(logging.WARNING)
    try:
        log_access(access, FIELDS)
    finally:
        access.setLevel(logging.NOTSET)
    assert len(stream.getvalue().splitlines()) == 1


def test_flush_writes_what_is_pending(root_stream: Root) -> None:
    """flush() -- what logging.shutdown calls at exit -- writes pending lines."""
    stream, handler = root_stream()

    loop = asyncio.new_event_loop()

    def log_then_stop() -> None:
        log_access(logging.getLogger("sigproxy.access"), FIELDS)
        loop.stop()  # the loop ends with this iteration: the flush it queued never runs

    loop.call_soon(log_then_stop)
    loop.run_forever()
    loop.close()
    assert stream.getvalue() == ""
    handler.flush()
    assert json.loads(stream.getvalue())["request_id"] == "r-1"


def _record_writes(handler: _BufferedStreamHandler) -> list[str]:
    """The handler's stream becomes a StringIO that also lists each write() call's text, returned."""
    writes: list[str] = []

    class Recording(io.StringIO):
        def write(self, s: str) -> int:
            writes.append(s)
            return super().write(s)

    handler.setStream(Recording())
    return writes


def test_writes_are_whole_lines_within_pipe_buf(root_stream: Root, sink_writes: list[bytes]) -> None:
    """One process: each write() to stderr's descriptor holds whole lines and at most PIPE_BUF bytes (atomic on
    a pipe, which another program may share)."""
    _, handler = root_stream()
    writes = sink_writes
    read_fd, write_fd = os.pipe()
    with open(read_fd, "rb") as reader:
        with open(write_fd, "w", encoding="utf-8") as stream:
            handler.setStream(stream)
            loop = asyncio.new_event_loop()

            def burst() -> None:
                for i in range(100):
                    log_access(logging.getLogger("sigproxy.access"), {**FIELDS, "request_id": f"r-{i}"})

            loop.call_soon(burst)
            loop.call_soon(loop.stop)
            loop.run_forever()
            loop.close()
            handler.flush()
        written = reader.read()
    assert 1 < len(writes) < 100
    assert all(w.endswith(b"\n") and len(w) <= select.PIPE_BUF for w in writes)
    assert b"".join(writes) == written
    assert [json.loads(x)["request_id"] for x in written.splitlines()] == [f"r-{i}" for i in range(100)]


def test_threads_lose_and_reorder_no_line(root_stream: Root) -> None:
    """Lines are queued without a lock: the loop's lines and those of threads writing at once all arrive, each
    source's in its order, and every write holds whole lines."""
    _, handler = root_stream()
    writes = _record_writes(handler)
    access = logging.getLogger("sigproxy.access")

    def thread_lines(name: str) -> None:
        for i in range(400):
            log_access(access, {**FIELDS, "request_id": f"{name}-{i}"})

    loop = asyncio.new_event_loop()

    async def loop_lines() -> None:
        for i in range(2000):
            log_access(access, {**FIELDS, "request_id": f"loop-{i}"})
            if i % 50 == 49:
                await asyncio.sleep(0)  # the flush queued for this iteration runs

    threads = [threading.Thread(target=thread_lines, args=(f"t{n}",)) for n in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns as often as the interpreter allows: races show
    try:
        for t in threads:
            t.start()
        loop.run_until_complete(loop_lines())
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    loop.close()
    handler.flush()
    assert all(w.endswith("\n") for w in writes)
    ids = [json.loads(x)["request_id"] for w in writes for x in w.splitlines()]
    assert len(ids) == 2000 + 4 * 400
    for source, count in [("loop", 2000)] + [(f"t{n}", 400) for n in range(4)]:
        assert [i for i in ids if i.startswith(f"{source}-")] == [f"{source}-{i}" for i in range(count)]


async def test_logging_changes_apply_from_the_next_loop_iteration(root_stream: Root) -> None:
    """The routing checks run once per loop iteration: a handler an operator adds to sigproxy.access sees the
    records of the next iteration on, and a level that silences it holds from then on too."""
    stream, _ = root_stream()
    access = logging.getLogger("sigproxy.access")
    seen: list[logging.LogRecord] = []
    extra = logging.Handler()
    extra.emit = seen.append  # type: ignore[method-assign]
    log_access(access, {**FIELDS, "request_id": "a"})  # checked: straight to the root handler, trusted
    access.addHandler(extra)
    try:
        log_access(access, {**FIELDS, "request_id": "b"})  # the same iteration: still the straight path
        await asyncio.sleep(0)  # the flush ends the trust
        log_access(access, {**FIELDS, "request_id": "c"})
        assert [r.access["request_id"] for r in seen] == ["c"]  # type: ignore[attr-defined]
    finally:
        access.removeHandler(extra)
    await asyncio.sleep(0)
    access.setLevel(logging.WARNING)
    try:
        log_access(access, {**FIELDS, "request_id": "d"})
        await asyncio.sleep(0)
    finally:
        access.setLevel(logging.NOTSET)
    assert [json.loads(x)["request_id"] for x in stream.getvalue().splitlines()] == ["a", "b", "c"]


def test_a_new_loop_does_not_write_to_a_replaced_handler(root_stream: Root) -> None:
    """A loop that stops before its flush runs leaves the trust behind; another loop logging after the root
    handler was replaced must find the new handler, not write to the old one."""
    old_stream, old = root_stream()
    access = logging.getLogger("sigproxy.access")
    first = asyncio.new_event_loop()

    def log_then_stop() -> None:
        log_access(access, {**FIELDS, "request_id": "old"})
        first.stop()  # the flush it queued never runs

    first.call_soon(log_then_stop)
    first.run_forever()
    first.close()
    new_stream, _ = root_stream()

    async def log() -> None:
        log_access(access, {**FIELDS, "request_id": "new"})
        await asyncio.sleep(0)

    asyncio.run(log())
    assert [json.loads(x)["request_id"] for x in new_stream.getvalue().splitlines()] == ["new"]
    old.flush()
    assert [json.loads(x)["request_id"] for x in old_stream.getvalue().splitlines()] == ["old"]


async def test_a_burst_is_written_every_128_lines(root_stream: Root) -> None:
    """Inside one loop iteration the queue is bounded: every 128th line writes what is pending."""
    stream, _ = root_stream()
    access = logging.getLogger("sigproxy.access")
    for i in range(300):
        log_access(access, {**FIELDS, "request_id": f"r-{i}"})
    assert len(stream.getvalue().splitlines()) == 256
    await asyncio.sleep(0)
    assert [json.loads(x)["request_id"] for x in stream.getvalue().splitlines()] == [f"r-{i}" for i in range(300)]


def test_lines_reach_a_file_descriptor_after_the_stream_own_text() -> None:
    """On a UTF-8 text stream with a file descriptor (stderr: a file or a pipe) lines go to the descriptor; what
    was written to the stream itself before them comes first, and a line's lone surrogate is written as Python's
    stderr writes it (backslashreplace)."""
    read_fd, write_fd = os.pipe()
    with open(write_fd, "w", encoding="utf-8", errors="backslashreplace") as stream, \
            open(read_fd, "rb") as reader:
        handler = _BufferedStreamHandler(stream)
        stream.write("before\n")  # buffered in the text layer, not yet written
        handler.add(encode_line("caf\u00e9 \udce9"))
        handler.add(b"second")
        stream.close()
        assert reader.read() == b"before\ncaf\xc3\xa9 \\udce9\nsecond\n"


def test_a_descriptor_in_another_encoding_gets_its_bytes() -> None:
    """stderr with a file descriptor in another encoding (a Latin-1 locale) is written bytes in that encoding
    and with its error handler, straight to the descriptor as a UTF-8 one is."""
    read_fd, write_fd = os.pipe()
    with open(read_fd, "rb") as reader:
        with open(write_fd, "w", encoding="latin-1", errors="replace") as stream:
            handler = _BufferedStreamHandler(stream)
            stream.write("before\n")
            handler.add(encode_line("caf\u00e9 \u20ac"))
        assert reader.read() == b"before\ncaf\xe9 ?\n"


def test_a_stream_in_another_encoding_gets_text() -> None:
    """A stream that is not UTF-8 is written text, which it encodes itself."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="latin-1", errors="replace")
    handler = _BufferedStreamHandler(stream)
    handler.add(encode_line("caf\u00e9 \u20ac"))
    assert raw.getvalue() == b"caf\xe9 ?\n"


def test_access_messages_kept_are_bounded() -> None:
    """The encoded messages kept by (method, host, status) start again past the bound (a client picks the host),
    and a part that can't be a key is still written."""
    formatter = _JsonFormatter()
    for i in range(3000):
        line = formatter.access_line(1764547200.0, "sigproxy.access", {"method": "GET", "host": f"h{i}", "status": 200})
        assert json.loads(line)["msg"] == f"GET h{i} 200"
        assert len(formatter.lines._messages) <= 1024
    line = formatter.access_line(1764547200.0, "sigproxy.access", {"method": "GET", "host": "h", "status": [1]})
    assert json.loads(line)["msg"] == "GET h [1]"


def test_access_line_milliseconds_are_rounded_as_round_does() -> None:
    """The access line's ``ms`` (access_millis): round(seconds * 1000, 2) for durations from microseconds to
    hours, without its decimal-string detour."""
    rng = random.Random(15)
    durations = [0.0, 1e-6, 0.000_004_99, 0.012_345, 0.999_995, 1.0, 59.123_456, 3600.0]
    durations += [rng.random() * rng.choice((1e-4, 1e-2, 1.0, 100.0, 10_000.0)) for _ in range(100_000)]
    for seconds in durations:
        assert access_millis(seconds) == round(seconds * 1000, 2), seconds
