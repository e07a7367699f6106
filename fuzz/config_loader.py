"""The config loader (:func:`sigproxy.config.loads`): TOML text -> :class:`~sigproxy.config.Config`.

Inputs: structured documents (the real keys, each with a plausible, an odd or a wrong-typed value, serialized
to TOML) and raw text. Property: a Config or :class:`~sigproxy.errors.ConfigError`; never another exception.
``${env:...}`` resolves against a fixed environment and ``${file:...}`` against a scratch directory (plus a
few odd paths); paths under /dev, /proc and /sys are skipped (reading /dev/zero would not end).
"""

# ruff: noqa: PT018
# (properties are plain asserts that name the broken invariant; they run outside pytest too)

from __future__ import annotations

import math
import tempfile
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fuzz.engine import Target
from sigproxy.config import Config, loads
from sigproxy.errors import ConfigError

SCRATCH = Path(tempfile.mkdtemp(prefix="sigproxy-fuzz-config-"))
(SCRATCH / "secret").write_text("s3cret\n")
(SCRATCH / "latin1").write_bytes(b"\xff\xfe\x00")
(SCRATCH / "dir").mkdir(exist_ok=True)
ENV = {"HOME": str(SCRATCH), "STATE_DIRECTORY": str(SCRATCH / "state"), "KEY": "AKIA", "EMPTY": "",
       "SECRET_DIR": str(SCRATCH)}


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        out = []
        for ch in v:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04x}")
            elif 0xD800 <= ord(ch) <= 0xDFFF:
                out.append("?")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any]) -> str:
    return "\n".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in doc.items()) + "\n"


_scalar = st.one_of(
    st.booleans(), st.integers(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=20),
    st.datetimes().map(lambda d: d), st.dates(), st.times(),
)
_any = st.recursive(_scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=6)
_refs = st.sampled_from([
    "${env:KEY}", "${env:MISSING}", "${env:EMPTY}", "${env:}", "${env:${env:KEY}}", f"${{file:{SCRATCH}/secret}}",
    "${file:${SECRET_DIR}/secret}", "${file:${NOPE}/x}", f"${{file:{SCRATCH}/latin1}}", f"${{file:{SCRATCH}/dir}}",
    f"${{file:{SCRATCH}/missing}}", "${file:~/secret}", "${file:~nosuchuser-fuzz/x}", "${file:}",
    f"${{file:{SCRATCH}/se\x00cret}}", "${file:" + "a" * 5000 + "}", "${", "${env:KEY", "$${env:KEY}",
])
_sizes = st.one_of(st.sampled_from(["8MiB", "1 GiB", "0", "1TB", " 5 KB ", "-1", "1.5MiB", "8mib", "", "1e3",
                                    "\u0661\u0662", "8MiB\n"]),
                   st.integers(1, 6000).map(lambda n: "9" * n), st.integers(-(2**63), 2**63 - 1))
_addresses = st.one_of(st.sampled_from(["127.0.0.1:0", "[::1]:8080", "::1:80", ":80", "h:", "h:65536",
                                        "h:\u0661", "", "0.0.0.0:8080", "[::1]", "a:b:c"]),
                       st.integers(1, 6000).map(lambda n: "h:" + "9" * n))
_hosts = st.lists(st.one_of(st.sampled_from(["*.amazonaws.com", "127.0.0.1:*", "[::1]:443", "*", "*:*", "[", "a[b]",
                                             "]a[", "[::1", "a:b:c", "host:99999999999999", "x:[]", "[!]", "?"]),
                            st.text(max_size=10)), max_size=3)
_urls = st.one_of(st.sampled_from(["https://sts.example.com", "http://[::1", "http://[::1]:99999", "http://a:b@c/",
                                   "https://", "ftp://x", "http://[v1.x]/", "http://[abc]/", "https://h:-1/",
                                   "http://\u2100/", "http://x:65536/"]), st.text(max_size=20))
_networks = st.lists(st.one_of(st.sampled_from(["10.0.0.0/8", "::1", "1.2.3.4/33", "1.2.3.4/-1", "fe80::1%eth0",
                                                "0.0.0.0/0", "1.2.3.4/255.0.0.0", " 10.0.0.1 "]),
                               st.text(max_size=12)), max_size=3)
_numbers = st.one_of(st.floats(), st.integers(), st.sampled_from([0, -1, 1e308, float("inf"), float("nan"), 2**63 - 1]))
_json_texts = st.one_of(st.sampled_from(['{"Version": "2012-10-17"}', "[" * 100_000, "{", "1e999999", "NaN"]),
                        st.text(max_size=20))

# Key -> a strategy of plausible and odd values for it.
PROXY_KEYS: dict[str, Any] = {
    "listen": _addresses, "admin_listen": _addresses, "default_connection": st.sampled_from(["main", "nope", ""]),
    "connect_timeout": _numbers, "read_timeout": _numbers, "upstream_connections": _numbers,
    "drain_seconds": _numbers, "header_timeout": _numbers, "idle_timeout": _numbers, "body_timeout": _numbers,
    "auth_failure_window": _numbers, "state_dir": st.sampled_from([str(SCRATCH / "state"), "", "~nosuchuser-fuzz/x",
                                                                   "~/s", "a\x00b"]),
    "upstream_ca_file": st.sampled_from(["", "~nosuchuser-fuzz/ca.pem", "/nonexistent", "a\x00b"]),
    "passthrough": _hosts, "connect_ports": st.lists(st.one_of(st.integers(), st.booleans(), st.text(max_size=3)),
                                                     max_size=3),
    "clients": _networks, "max_buffered_body": _sizes, "max_body": _sizes, "chunk_size": _sizes,
    **{k: st.one_of(st.integers(), st.booleans()) for k in ("max_connections", "max_connections_per_client",
                                                            "max_request_line", "max_header_size", "max_headers",
                                                            "auth_failures")},
}
CONNECTION_KEYS: dict[str, Any] = {
    "region": st.sampled_from(["us-east-1", "", "cn-north-1"]), "service": st.sampled_from(["s3", "", "execute-api"]),
    "hosts": _hosts, "token": st.one_of(_refs, st.text(max_size=5)), "sts_endpoint_url": _urls,
    "upstream_scheme": st.sampled_from(["http", "https", "ftp"]), "verify_tls": st.booleans(),
    "s3_payload": st.sampled_from(["signed", "unsigned", "x"]), "client_secret": st.one_of(_refs, st.text(max_size=5)),
    "allowed_services": st.lists(st.text(max_size=5), max_size=2),
    "allowed_regions": st.lists(st.text(max_size=5), max_size=2),
    "allowed_methods": st.lists(st.sampled_from(["GET", "get", "PUT", "BREW", "\u0131"]), max_size=3),
    "read_only": st.booleans(), "deny_amz_headers": st.lists(st.sampled_from(["x-amz-acl", "x-amz-*", "x", "[", ""]),
                                                             max_size=2),
    "presigned": st.sampled_from(["refuse", "passthrough", ""]), "user_header": st.booleans(),
    "require_role_path": st.sampled_from(["/sigproxy/", "/", "x", "/a//b/"]),
}
CREDENTIAL_KEYS: dict[str, Any] = {
    "source": st.sampled_from(["static", "chain", "assume_role", "web_identity", "sts_endpoint", "nope"]),
    "access_key_id": st.one_of(_refs, st.text(max_size=5)), "secret_access_key": st.one_of(_refs, st.text(max_size=5)),
    "session_token": _refs, "profile": st.text(max_size=5),
    "role_arn": st.sampled_from(["arn:aws:iam::111122223333:role/r", "arn:aws:iam::111122223333:role/sigproxy/r",
                                 "arn:aws:iam::1:role/r", "arn:aws:iam::111122223333:role/r\n", ""]),
    "external_id": st.text(max_size=5), "session_name": st.sampled_from(["s1", "x", "${sigproxy:user}", "a" * 65,
                                                                         "${sigproxy:other}", "é" * 3]),
    "source_identity": st.sampled_from(["s1", "${sigproxy:user}", "x"]), "duration_seconds": st.integers(),
    "policy": _json_texts, "policy_arns": st.lists(st.text(max_size=5), max_size=2),
    "tags": st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), _refs), max_size=2),
    "transitive_tag_keys": st.lists(st.text(max_size=5), max_size=2), "base": st.sampled_from(["chain", "main", "b",
                                                                                             "nope"]),
    "token_file": st.sampled_from([str(SCRATCH / "secret"), "", "~nosuchuser-fuzz/t"]), "url": _urls,
    "auth": st.sampled_from(["api_key", "basic", "x"]), "api_key_header": st.text(max_size=5), "api_key": _refs,
    "username": st.text(max_size=5), "password": _refs,
}


@st.composite
def _table(draw: Any, keys: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(sorted(keys)), unique=True, max_size=6))
    out: dict[str, Any] = {}
    for key in (*required, *chosen):
        odd = draw(st.integers(0, 9)) == 0
        out[key] = draw(_any) if odd else draw(keys[key])
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.text(max_size=6))] = draw(_any)
    return out


@st.composite
def documents(draw: Any) -> str:
    kind = draw(st.sampled_from(["structured", "structured", "structured", "raw", "mutated"]))
    if kind == "raw":
        return draw(st.text(max_size=200))
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["proxy"] = draw(_table(PROXY_KEYS))
    conns = {}
    for name in draw(st.lists(st.sampled_from(["main", "b", "x y", "", "a" * 70, "\u0661"]), unique=True,
                              min_size=draw(st.integers(0, 1)), max_size=2)):
        conn = draw(_table(CONNECTION_KEYS, ("hosts",)))
        conn["credentials"] = draw(_table(CREDENTIAL_KEYS, ("source",)))
        conns[name] = conn
    doc["connections"] = conns
    if draw(st.booleans()):
        doc["routes"] = draw(st.lists(st.fixed_dictionaries({"host": _hosts.map(lambda h: h[0] if h else "*"),
                                                             "connection": st.sampled_from(["main", "b", "z"])}),
                                      max_size=2))
    if draw(st.booleans()):
        doc["reverse"] = draw(st.lists(st.fixed_dictionaries({"listen": _addresses, "upstream": _urls},
                                                             optional={"connection": st.sampled_from(["main", "z"]),
                                                                       "clients": _networks}), max_size=2))
    text = to_toml(doc)
    if kind == "mutated" and text:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", "[", "]", "\n", '"', "{", "=", "[[a]]\n", "\x00"])) + text[at:]
    return text


def check(text: str) -> str:
    if any(p in text for p in ("/dev", "/proc", "/sys")):
        return "skipped"
    try:
        config = loads(text, env=ENV)
    except ConfigError as exc:
        return "ConfigError: " + (exc.path.split(".")[-1].split("[")[0] or exc.problem.split(":")[0][:30])
    assert isinstance(config, Config)
    assert config.connections or config.store.enabled
    for timeout in ("connect_timeout", "read_timeout", "drain_seconds"):
        value = getattr(config.proxy, timeout)
        assert math.isfinite(value) and value > 0, f"proxy.{timeout} = {value!r} accepted"
    return "Config"


TARGETS = [Target("config", documents(), check, describe=lambda text: text.encode("utf-8", "surrogateescape"))]
