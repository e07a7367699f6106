"""``sigproxy connections list|show|add|update|rm|check``: the admin API (``/v1``) from the command line.

The URL comes from ``--url``, else ``$SIGPROXY_ADMIN_URL``, else ``http://127.0.0.1:9901``; the token from
``--token``, ``--token-file``, else ``$SIGPROXY_ADMIN_TOKEN``. Output is a table or ``key: value`` lines, or the
API's JSON with ``--json``. An API error prints its code, message and field and exits 1; a usage error exits 2.

Examples::

    sigproxy connections add acme --region eu-west-1 --host '*.amazonaws.com'      # pending: mints an ExternalId
    sigproxy connections update acme --data '{"credentials": {"role_arn": "arn:aws:iam::111122223333:role/x"}}'
    sigproxy connections list --state pending --all --json

Must not: print a token; speak anything but the API (no config file, no store).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["add_parser", "run"]

DEFAULT_URL = "http://127.0.0.1:9901"
EXIT_OK, EXIT_API, EXIT_USAGE = 0, 1, 2
_TIMEOUT = 60.0  # a PATCH with a role ARN calls STS twice


class UsageError(Exception):
    pass


class ApiFailure(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def add_parser(sub: Any) -> None:
    """Register ``connections`` on the top-level subparsers ``sub``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"admin listener URL (default $SIGPROXY_ADMIN_URL or {DEFAULT_URL})")
    common.add_argument("--token", help="admin API token (default $SIGPROXY_ADMIN_TOKEN)")
    common.add_argument("--token-file", type=Path, help="read the admin API token from this file")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    p = sub.add_parser("connections", help="manage connections through the admin API (/v1)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = verbs.add_parser("list", parents=[common], help="list connections")
    ls.add_argument("--prefix")
    ls.add_argument("--state", choices=("active", "pending"))
    ls.add_argument("--limit", type=int)
    ls.add_argument("--all", action="store_true", help="follow next_cursor to the last page")
    for verb, text in (("show", "show one connection"), ("rm", "delete a store connection"),
                       ("check", "resolve credentials and call STS GetCallerIdentity")):
        verbs.add_parser(verb, parents=[common], help=text).add_argument("name")
    add = verbs.add_parser("add", parents=[common], help="create a store connection (assume_role without a role: "
                           "pending, with a minted ExternalId)")
    update = verbs.add_parser("update", parents=[common], help="change a connection (JSON merge patch)")
    for q in (add, update):
        q.add_argument("name")
        q.add_argument("--data", help="the connection's JSON (add) or a merge patch (update): JSON or @FILE")
        q.add_argument("--region")
        q.add_argument("--host", dest="hosts", action="append", help="a host glob it may sign for (repeatable)")
        q.add_argument("--role-arn")
        q.add_argument("--external-id")
        q.add_argument("--source", choices=("assume_role", "static", "sts_endpoint"))


def _data(args: argparse.Namespace) -> dict[str, Any]:
    """``--data`` merged with the flags (flags win)."""
    raw = args.data
    body: Any = {}
    if raw is not None:
        try:
            text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
            body = json.loads(text)
        except OSError as exc:
            raise UsageError(f"--data: cannot read {raw[1:]}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"--data: not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise UsageError("--data: expected a JSON object")
    if args.region is not None:
        body["region"] = args.region
    if args.hosts:
        body["hosts"] = args.hosts
    creds = {k: v for k, v in (("source", args.source), ("role_arn", args.role_arn),
                               ("external_id", args.external_id)) if v is not None}
    if creds:
        if not isinstance(body.get("credentials"), dict):
            body["credentials"] = {}
        body["credentials"].update(creds)
    out: dict[str, Any] = body
    return out


class Client:
    """The admin API over :mod:`urllib` (one request at a time; the CLI needs no more)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: object = None) -> Any:
        import urllib.error  # noqa: PLC0415 - urllib.request (http.client, email): only for a call, not at every CLI start
        import urllib.request  # noqa: PLC0415

        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/merge-patch+json" if method == "PATCH" else "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310 (the operator's URL)
                text = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)["error"]
                raise ApiFailure(exc.code, err["code"], err["message"], err.get("field")) from None
            except (ValueError, KeyError, TypeError):
                raise ApiFailure(exc.code, "http_error", f"HTTP {exc.code} {exc.reason}", None) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiFailure(0, "unreachable", f"cannot reach the admin API at {self.url}: {reason}", None) from None
        return json.loads(text) if text else None


def _pages(client: Client, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    query: dict[str, str] = {k: str(v) for k, v in (("prefix", args.prefix), ("state", args.state),
                                                    ("limit", args.limit)) if v is not None}
    while True:
        page = client.call("GET", "/v1/connections" + (f"?{urlencode(query)}" if query else ""))
        yield page
        if not args.all or not page.get("next_cursor"):
            return
        query["cursor"] = page["next_cursor"]


def _flat(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _flat(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list):
        yield prefix, ", ".join(str(v) for v in obj)
    else:
        yield prefix, "" if obj is None else str(obj).lower() if isinstance(obj, bool) else str(obj)


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ("name", "state", "origin", "source", "region", "role_arn")
    cells = [[str(r.get(c) or r.get("credentials", {}).get(c) or "-") for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    if args.token_file is not None:
        try:
            return args.token_file.read_text().strip() or None
        except OSError as exc:
            raise UsageError(f"--token-file: cannot read {args.token_file}: {exc.strerror}") from None
    return os.environ.get("SIGPROXY_ADMIN_TOKEN") or None


def _print(args: argparse.Namespace, obj: Any) -> None:
    if args.json:
        print(json.dumps(obj, indent=2))
    else:
        width = max((len(k) for k, _ in _flat(obj)), default=0)
        for key, value in _flat(obj):
            print(f"{key + ':':<{width + 1}} {value}")


def run(args: argparse.Namespace) -> int:
    """Run ``sigproxy connections VERB``; the exit status."""
    try:
        client = Client(args.url or os.environ.get("SIGPROXY_ADMIN_URL") or DEFAULT_URL, _token(args))
        path = f"/v1/connections/{quote(args.name, safe='')}" if hasattr(args, "name") else ""
        if args.verb == "list":
            rows: list[dict[str, Any]] = []
            pages = list(_pages(client, args))
            for page in pages:
                rows += page["connections"]
            if args.json:
                last = pages[-1].get("next_cursor") if pages else None
                print(json.dumps({"connections": rows, "next_cursor": last}, indent=2))
            else:
                print(_table(rows))
        elif args.verb == "show":
            _print(args, client.call("GET", path))
        elif args.verb == "add":
            _print(args, client.call("POST", "/v1/connections", {**_data(args), "name": args.name}))
        elif args.verb == "update":
            body = _data(args)
            if not body:
                raise UsageError("update: nothing to change: give --data or a flag")
            _print(args, client.call("PATCH", path, body))
        elif args.verb == "rm":
            client.call("DELETE", path)
            if not args.json:
                print(f"deleted {args.name}")
        else:
            result = client.call("POST", path + "/check")
            if args.json:
                print(json.dumps(result, indent=2))
            elif result["ok"]:
                print(f"{args.name}  OK  {result['arn']}")
            else:
                print(f"{args.name}  FAIL  {result['code']}: {result['message']}")
                return EXIT_API
    except UsageError as exc:
        print(f"sigproxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiFailure as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        print(f"sigproxy: {exc.code}: {exc.message}{where}", file=sys.stderr)
        return EXIT_API
    return EXIT_OK
