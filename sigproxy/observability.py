"""Logging set-up: JSON lines when stderr is not a terminal, readable text on one.

Owns: :func:`setup_logging`, the only code that configures logging; the access-log format.
Must not: run at import time; log a secret (callers pass names, never values).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

__all__ = ["setup_logging"]


class _JsonFormatter(logging.Formatter):
    def __init__(self, fields: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self._fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self._fields,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_PLAIN = re.compile(r"[!#-<>-\[\]-~]*")  # printable ASCII but space, '"', '=' and '\\'


def _text_value(value: object) -> str:
    """An access-line value as ``key=value`` text: JSON-quoted unless plain, so a client-chosen value (an end
    user's id, a host) can't add fields (``alice status=200``) or lines (U+2028, escaped as ``\\u2028``)."""
    text = str(value)
    return text if text and _PLAIN.fullmatch(text) else json.dumps(text)


class _TextFormatter(logging.Formatter):
    def __init__(self, fmt: str, fields: Mapping[str, object] | None = None) -> None:
        super().__init__(fmt)
        self._fields = " ".join(f"{k}={_text_value(v)}" for k, v in (fields or {}).items())

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in access.items() if k not in ("method", "host"))
        if self._fields:
            line += " " + self._fields
        return line


def setup_logging(level: str = "info", fmt: Literal["json", "text", "auto"] = "auto",
                  fields: Mapping[str, object] | None = None) -> None:
    """Configure the root logger once, writing to stderr. ``fields`` go into every line (a worker of
    ``workers = N`` adds ``worker``: its number, 0 to N-1)."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter(fields or {}) if fmt == "json"
        else _TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", fields or {})
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that could echo request details stays at WARNING.
    for name in ("botocore", "aiobotocore", "urllib3", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
