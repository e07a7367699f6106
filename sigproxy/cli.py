"""Command line: ``sigproxy run | check | sign | version``. The only module that prints or exits.

Exit codes: 0 ok, 1 a check failed, 2 bad usage or bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from . import __version__, admincli, compiled, eventloop, signapi, storecli
from .config import Address, Config, ProxyConfig, default_state_dir, find_config, load, load_proxy
from .errors import (
    ApiError,
    BadRequest,
    ConfigError,
    CredentialsUnavailable,
    ListenError,
    SigproxyError,
    UpstreamError,
    WorkerFailed,
)
from .observability import setup_logging
from .onboarding import new_external_id, trust_policy
from .routing import check_host, closest_names, parse_absolute_target
from .sdnotify import Notifier
from .signing import Credentials, Signer
from .tls import CertStore, TlsError, write_bundle
from .workers.cpus import available_cpus

if TYPE_CHECKING:
    from .intake.server import Listening
    from .workers.supervisor import Supervisor

__all__ = ["main"]

# The proxy (aiohttp, the store's SQLAlchemy and Alembic) and the AWS SDK (credentials) are imported by the
# commands that use them, so that `version`, `ca`, `sign` with static keys and the others start in a fraction
# of the time.

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CHECK_ATTEMPTS = 2  # tries of each STS call in `sigproxy check` (botocore's standard retry mode)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"sigproxy: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
    return number


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sigproxy", description="An async SigV4 signing proxy.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", help="config file (default: $SIGPROXY_CONFIG, ./sigproxy.toml, "
                        "~/.config/sigproxy/config.toml, /etc/sigproxy/config.toml)")

    run = sub.add_parser("run", help="run the proxy")
    with_config(run)
    run.add_argument("--listen", metavar="HOST:PORT", help="override [proxy] listen")
    run.add_argument("--admin-listen", metavar="HOST:PORT", help="override [proxy] admin_listen ('' turns it off)")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.add_argument("--log-format", default="auto", choices=("auto", "json", "text"))
    run.add_argument("--workers", type=_positive, metavar="N",
                     help="override [proxy] workers: processes serving the listeners (1: a single process)")

    check = sub.add_parser("check", help="resolve credentials and call STS GetCallerIdentity")
    with_config(check)
    check.add_argument("names", nargs="*", metavar="NAME", help="connections to check (default: all)")
    check.add_argument("--timeout", type=_seconds, default=5.0, metavar="SECONDS",
                       help="give up on a connection after this long (default: 5); each STS call gets "
                       f"{CHECK_ATTEMPTS} tries")

    sign = sub.add_parser("sign", help="print a request's signed headers, or a presigned URL")
    with_config(sign)
    sign.add_argument("--connection", required=True)
    sign.add_argument("--service")
    sign.add_argument("--region")
    sign.add_argument("--date", help="signing time, YYYYMMDDTHHMMSSZ (default: now)")
    sign.add_argument("-X", "--request", dest="method", default="GET")
    sign.add_argument("-H", "--header", dest="headers", action="append", default=[], metavar="'Name: value'")
    sign.add_argument("--data", help="body: a string, or @FILE")
    sign.add_argument("--presign", action="store_true", help="print a presigned URL instead of headers")
    sign.add_argument("--expires", type=int, default=900, help="presigned URL lifetime in seconds")
    sign.add_argument("--sigv4a", action="store_true",
                      help="sign with SigV4A (AWS4-ECDSA-P256-SHA256) for the connection's sigv4a_signing_region_set")
    sign.add_argument("--region-set", metavar="REGIONS",
                      help="SigV4A for these regions: '*' or 'us-east-1,us-west-2' (implies --sigv4a)")
    sign.add_argument("--verbose", action="store_true",
                      help="also print the canonical request and string to sign (secrets redacted)")
    sign.add_argument("--show-token", action="store_true",
                      help="print the session token (temporary credentials) instead of '***'")
    sign.add_argument("--json", action="store_true",
                      help='print {"url": ..., "headers": {...}} as POST /v1/sign answers (with --presign: '
                      "the presigned URL and the headers to send with it)")
    sign.add_argument("url")

    ca = sub.add_parser("ca", help="sigproxy's CA for HTTPS interception: path, PEM, trust bundle, env lines")
    with_config(ca)
    what = ca.add_mutually_exclusive_group()
    what.add_argument("--pem", action="store_true", help="print the CA certificate (PEM)")
    what.add_argument("--bundle", metavar="PATH", help="write the system trust store plus our CA to PATH")
    what.add_argument("--env", action="store_true", help="print export lines for HTTPS_PROXY and CA bundles")

    sub.add_parser("external-id", help="print a fresh random ExternalId (UUID4) for a new customer")
    trust = sub.add_parser("trust-policy", help="print the trust policy a customer pastes into their IAM role")
    trust.add_argument("--principal", required=True, metavar="ARN|ACCOUNT_ID",
                       help="who may assume the role: sigproxy's account id or IAM ARN")
    trust.add_argument("--external-id", dest="external_ids", action="append", required=True, metavar="ID")
    trust.add_argument("--tags", action="store_true", help="also allow sts:TagSession (session tags)")
    trust.add_argument("--source-identity", action="store_true", help="also allow sts:SetSourceIdentity")

    storecli.add_parser(sub, with_config)
    admincli.add_parser(sub)

    sub.add_parser("version", help="print the version")
    return p


def _load(path: str | None) -> Config:
    return load(find_config(path))


def _run(args: argparse.Namespace) -> int:
    from .intake.server import serve  # noqa: PLC0415 - the proxy itself: only `run` needs it
    from .workers.supervisor import ConfigFile, Supervisor  # noqa: PLC0415 - likewise

    # The file as read now is the text every worker of a group parses (ConfigFile); SIGHUP reads it again.
    file = ConfigFile(str(find_config(args.config)), listen=args.listen, admin_listen=args.admin_listen,
                      workers=args.workers)
    config = file.load()
    workers = config.proxy.workers or available_cpus()
    setup_logging(args.log_level, args.log_format, shared=workers > 1)  # a group's processes share stderr
    supervisor: Supervisor | None = None
    if workers > 1:
        supervisor = Supervisor(config, workers, file, log_level=args.log_level, log_format=args.log_format)

    def ready(listeners: list[Listening]) -> None:
        for listening in listeners:
            print(listening.describe(), flush=True)

    async def main() -> None:
        stop, reload = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        notifier = Notifier.from_environ()
        try:
            await serve(config, stop, reload=reload, load=file.load, on_ready=ready, notifier=notifier,
                        group=supervisor)
        finally:
            notifier.close()

    try:
        if supervisor is not None:
            supervisor.bind()  # every worker's sockets, before any worker starts: a bad address fails once
        eventloop.run(main())
    except WorkerFailed as exc:
        print(f"sigproxy: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ListenError as exc:
        print(f"sigproxy: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"sigproxy: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    names = args.names or list(config.connections)
    unknown = [n for n in names if n not in config.connections]
    if unknown:
        raise ConfigError("", "unknown connection(s) in the config file: " + ", ".join(
            f"{n!r}{closest_names(n, config.connections)}" for n in unknown)
            + "; a connection in the store is checked through the admin API: sigproxy connections check NAME")
    width = max(len(n) for n in names)

    from .credcache import CredentialCache  # noqa: PLC0415 - only when needed
    from .credentials import Providers, StsLimits, caller_identity, sts_endpoint_for  # noqa: PLC0415 - aiobotocore

    limits = StsLimits(args.timeout, CHECK_ATTEMPTS)

    def tried(name: str, *, identity: bool) -> str:
        """What checking the connection called, in order (``identity``: it got as far as GetCallerIdentity):
        what a failure names."""
        conn = config.connections[name]
        c = conn.credentials
        sts = conn.sts_endpoint_url or sts_endpoint_for(conn.region or "us-east-1")
        first = {"chain": ["the AWS credential chain"], "assume_role": [f"AssumeRole at {sts}"],
                 "web_identity": [f"AssumeRoleWithWebIdentity at {sts}"], "sts_endpoint": [str(c.url)]}
        steps = first.get(c.source or "", [])
        if c.source == "assume_role":
            base = "the AWS credential chain" if c.base == "chain" else f"the credentials of connection {c.base!r}"
            steps = [base, *steps]
        return ", then ".join([*steps, f"GetCallerIdentity at {sts}"] if identity else steps)

    async def run() -> int:
        failed = 0
        # A private cache that logs nothing: a failure is this command's output, not a warning about back-off.
        async with Providers(config.connections, CredentialCache(log_failures=False), sts_limits=limits) as providers:
            for name in names:
                conn = config.connections[name]
                source = f"source={conn.credentials.source}"
                creds = None
                try:
                    async with asyncio.timeout(args.timeout):
                        creds, _ = await providers.get(name)
                        arn = await caller_identity(conn, creds, limits=limits)
                except (SigproxyError, TimeoutError) as exc:
                    failed += 1
                    why = exc.message if isinstance(exc, SigproxyError) else f"no answer within {args.timeout:g} s"
                    steps = tried(name, identity=creds is not None)
                    print(f"{name:<{width}}  FAIL  {why}  {source}\n{'':<{width}}  tried {steps} (up to "
                          f"{CHECK_ATTEMPTS} tries per call, {args.timeout:g} s in all: --timeout)", flush=True)
                else:
                    expiry = creds.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if creds.expires_at else "never"
                    print(f"{name:<{width}}  OK  {arn}  {source}  expires={expiry}", flush=True)
        return EXIT_FAILED if failed else EXIT_OK

    return asyncio.run(run())


async def _credentials(config: Config, name: str) -> Credentials:
    from .credcache import CredentialCache  # noqa: PLC0415 - only when needed
    from .credentials import Providers  # noqa: PLC0415 - aiobotocore: only when needed

    # A private cache that logs nothing: a failure is this command's error, not a warning about back-off.
    async with Providers(config.connections, CredentialCache(log_failures=False)) as providers:
        creds, _ = await providers.get(name)
        return creds


def _parse_date(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError("--date", f"expected YYYYMMDDTHHMMSSZ, got {value!r}") from None


_SCOPE_HEADERS = {"x-sigproxy-service": "service", "x-sigproxy-region": "region"}


def _sign_input(args: argparse.Namespace) -> signapi.SignInput:
    """The command line's request as a :class:`SignInput`: the same checks as ``POST /v1/sign``'s JSON.

    ``-H 'x-amz-content-sha256: V'`` is the body's hash (``payload_sha256``); ``-H 'X-Sigproxy-Service: S'`` and
    ``-H 'X-Sigproxy-Region: R'`` are ``--service``/``--region``, as the proxy takes them (neither sent nor
    signed; one that disagrees with its option is a :class:`ConfigError`); the other headers are sent and
    signed as given; ``--data`` is the payload (hashed, not needed later); ``--presign`` takes ``--expires``.
    """
    headers: list[tuple[str, str]] = []
    payload_sha256: str | None = None
    scope = {"service": args.service, "region": args.region}
    for h in args.headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise ConfigError("-H", f"expected 'Name: value', got {h!r}")
        low = name.strip().lower()
        if low == "x-amz-content-sha256":
            payload_sha256 = value.strip()
        elif low in _SCOPE_HEADERS:
            # As the proxy takes them (routing.resolve_service_region): the same as --service/--region.
            key = _SCOPE_HEADERS[low]
            if scope[key] is not None and scope[key] != value.strip():
                raise ConfigError(f"--{key}", f"--{key} {scope[key]!r} and -H '{name.strip()}: {value.strip()}' "
                                  "disagree: give one of them")
            scope[key] = value.strip()
        else:
            headers.append((name.strip(), value.strip()))
    body: bytes | None = None
    if args.data is not None:
        body = Path(args.data[1:]).read_bytes() if args.data.startswith("@") else args.data.encode()
    try:
        target = parse_absolute_target(args.url)
    except BadRequest as exc:
        raise ConfigError("URL", exc.message) from None
    return signapi.SignInput(method=args.method, target=target, headers=tuple(headers), payload=body,
                     payload_sha256=payload_sha256, service=scope["service"], region=scope["region"],
                     presign=args.expires if args.presign else None, region_set=args.region_set)


_CLI_OVERRIDES = ("pass --service NAME", "pass --region NAME")


def _sign(args: argparse.Namespace) -> int:
    """``sigproxy sign``: :func:`sigproxy.signapi.sign`, the function behind ``POST /v1/sign`` (and the proxy's
    signing code), printed as text (``Name: value`` lines or a URL) or, with ``--json``, as the API's JSON."""
    config = _load(args.config)
    if args.connection not in config.connections:
        raise ConfigError("--connection", f"unknown connection {args.connection!r}"
                          f"{closest_names(args.connection, config.connections)}")
    if args.json and args.verbose:
        raise ConfigError("--verbose", "prints text: leave it out with --json")
    conn = config.connections[args.connection]
    request = _sign_input(args)
    if args.sigv4a and request.region_set is None:
        request = dataclasses.replace(request, region_set=",".join(conn.sigv4a_signing_region_set))
    now = _parse_date(args.date)
    check_host(conn, request.target)  # before fetching credentials; signapi.sign checks it again
    creds = asyncio.run(_credentials(config, conn.name))
    token = creds.session_token
    if token and not args.show_token and (args.presign or args.json):
        option, holder = ("--json", "the JSON output (X-Amz-Security-Token)") if args.json else \
            ("--presign", "a presigned URL")
        raise ConfigError(option, f"these credentials carry a session token, which {holder} contains: add "
                          "--show-token to print it")
    out = signapi.sign(conn, creds, request, now=now, signer=Signer(), overrides=_CLI_OVERRIDES)
    if args.json:
        print(json.dumps(out.to_json(), indent=2))
    elif args.presign:
        print(out.url)
    else:
        for name, value in out.headers:
            shown = "***" if token and value == token and not args.show_token else value
            print(f"{name}: {shown}")
    if args.verbose:
        creq = out.signature.canonical_request
        if token:
            creq = creq.replace(token, "***").replace(quote(token, safe=""), "***")
        print("\n# canonical request\n" + creq)
        print("\n# string to sign\n" + out.signature.string_to_sign)
    return EXIT_OK


def _ca(args: argparse.Namespace) -> int:
    # Only [proxy] is read: the CA needs no connection, and a client's shell need not hold the proxy's secrets.
    try:
        path: Path | None = find_config(args.config)
    except ConfigError:
        path = None  # no config anywhere (and none named): the default state directory and listen address
    proxy = load_proxy(path) if path else ProxyConfig(state_dir=default_state_dir(os.environ))
    state_dir, listen = proxy.state_dir, proxy.listen
    store = CertStore.load_or_create(state_dir)
    try:
        if args.pem:
            sys.stdout.write(store.ca_pem.decode())
        elif args.bundle:
            if not write_bundle(store.ca_pem, Path(args.bundle)):
                print("sigproxy: no system trust store found: the bundle holds only sigproxy's CA",
                      file=sys.stderr)
            print(args.bundle)
        elif args.env:
            bundle = state_dir / "ca-bundle.pem"
            write_bundle(store.ca_pem, bundle)
            if listen.port == 0:
                raise ConfigError("proxy.listen", f"{listen}: port 0 is chosen anew at each start, so clients can't "
                                  "be told it; set a fixed port for `ca --env`")
            # A wildcard listen is reached, from this machine, at its loopback address.
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)  # noqa: S104 - compared
            # A TLS forward listener is an https:// proxy (its tls = "self" certificate is from the CA below).
            proxy_url = f"{'https' if proxy.tls is not None else 'http'}://{Address(host, listen.port)}"
            for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
                print(f"export {name}={shlex.quote(proxy_url)}")
            for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
                print(f"export {name}={shlex.quote(str(bundle))}")
            print(f"export NODE_EXTRA_CA_CERTS={shlex.quote(str(store.ca_cert_path))}")
        else:
            print(store.ca_cert_path)
    finally:
        store.close()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "version":
            print(f"sigproxy {__version__}, {compiled.describe()}")
            return EXIT_OK
        if args.command == "run":
            return _run(args)
        if args.command == "check":
            return _check(args)
        if args.command == "ca":
            return _ca(args)
        if args.command == "store":
            return storecli.run(args, lambda: _load(args.config))
        if args.command == "connections":
            return admincli.run(args)
        if args.command == "external-id":
            print(new_external_id())
            return EXIT_OK
        if args.command == "trust-policy":
            try:
                policy = trust_policy(args.principal, args.external_ids, tags=args.tags,
                                      source_identity=args.source_identity)
            except ValueError as exc:
                print(f"sigproxy: {exc}", file=sys.stderr)
                return EXIT_USAGE
            print(json.dumps(policy, indent=2))
            return EXIT_OK
        return _sign(args)
    except ConfigError as exc:
        return _failed(args, f"config error: {exc}")
    except SigproxyError as exc:
        # Credentials or an upstream that failed: the command's work failed (1); anything else was asked wrongly.
        failed = isinstance(exc, CredentialsUnavailable | UpstreamError)
        return _failed(args, f"{exc.code}: {exc.message}", status=EXIT_FAILED if failed else EXIT_USAGE)
    except ApiError as exc:
        return _failed(args, f"{exc.code} ({exc.field}): {exc.message}")
    except TlsError as exc:
        return _failed(args, f"CA error: {exc}")
    except OSError as exc:
        return _failed(args, f"{exc.strerror or exc}")


def _failed(args: argparse.Namespace, message: str, *, status: int = EXIT_USAGE) -> int:
    """Print ``sigproxy: MESSAGE`` to stderr; returns ``status`` (:data:`EXIT_USAGE` unless said).

    ``ca --env`` runs inside ``eval "$(sigproxy ca --env)"``, where its stderr scrolls by and its exit status is
    lost: it also prints, to the stdout that eval runs, a line that repeats the message on stderr and fails
    (``false``), so ``set -e`` stops and ``$?`` says so, and the next command does not run on a half-set
    environment."""
    print(f"sigproxy: {message}", file=sys.stderr)
    if args.command == "ca" and args.env:
        print(f"echo {shlex.quote(f'sigproxy ca --env failed: {message}')} >&2; false")
    return status
