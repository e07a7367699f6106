"""Every crash the fuzz targets (fuzz/) found, with its exact input: now a declared error, not a crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from fuzz import chunked, config_loader, routing_parsers
from sigproxy.config import loads
from sigproxy.errors import BadRequest, ConfigError, CredentialsUnavailable
from sigproxy.routing import parse_absolute_target
from sigproxy.stsendpoint import parse_sts_endpoint_answer

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "answer",
    [
        # fuzz/crashes/sts_answer-84961f9b2f.txt: ValueError (year 0 is out of range)
        {"accessKeyId": "accessKeyId-value", "secretAccessKey": "0", "expiresAt": -62135596801},
        # fuzz/crashes/sts_answer-633e9212d8.txt: OSError (Errno 75)
        {"accessKeyId": "accessKeyId-value", "secretAccessKey": "secretAccessKey-value",
         "expiresAt": 67768036191676800},
        # fuzz/crashes/sts_answer-29bfc65a9a.txt: OverflowError (timestamp out of range for platform time_t)
        {"accessKeyId": "accessKeyId-value", "secretAccessKey": "secretAccessKey-value",
         "expiresAt": 9223372036854775808},
        # The same code path, from JSON text an endpoint may send (json.loads takes NaN and Infinity).
        json.loads('{"accessKeyId": "a", "secretAccessKey": "s", "expiration": NaN}'),
        json.loads('{"accessKeyId": "a", "secretAccessKey": "s", "expiresAt": Infinity}'),
        json.loads('{"credentials": {"accessKeyId": "a", "secretAccessKey": "s", "expires_at": 1e300}}'),
    ],
)
def test_sts_answer_with_an_out_of_range_expiry_is_credentials_unavailable(answer: object) -> None:
    with pytest.raises(CredentialsUnavailable, match="is not a time"):
        parse_sts_endpoint_answer(answer, NOW, "fuzz")


def test_connect_with_a_4301_digit_port_is_a_bad_request() -> None:
    # fuzz/crashes/connect_head-8f7fc15cee.txt: ValueError (Exceeds the limit (4300 digits) for integer string
    # conversion), raised in the CONNECT task instead of a 400: the client was left hanging.
    head = b"CONNECT 127.0.0.1:" + b"9" * 4301 + b" HTTP/1.1"
    with pytest.raises(BadRequest, match="bad port"):
        routing_parsers.parse_connect(head)
    assert routing_parsers.check_connect(head).startswith("BadRequest")


@pytest.mark.parametrize("port", ["9" * 4301, "0" * 4299 + "80", "000080"])
def test_absolute_target_with_a_huge_port_is_a_bad_request(port: str) -> None:
    # The same int() as the CONNECT finding, in the absolute-form parser (a request line may be 8190 bytes).
    with pytest.raises(BadRequest, match="bad port"):
        parse_absolute_target(f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize(
    "text",
    [
        # fuzz/crashes/config-5602a735f7.txt: RuntimeError (Could not determine home directory)
        '"proxy" = {"admin_listen" = [], "auth_failure_window" = [], "auth_failures" = [], "body_timeout" = [], '
        '"clients" = [], "upstream_ca_file" = "~nosuchuser-fuzz/ca.pem", "" = false}\n"connections" = {}\n',
        # fuzz/crashes/config-816137ef1b.txt: OverflowError (cannot convert float infinity to integer)
        '"proxy" = {"admin_listen" = [], "auth_failure_window" = [], "clients" = [], "connect_ports" = [], '
        '"auth_failures" = [], "upstream_connections" = inf, "" = false}\n"connections" = {}\n',
        # Siblings of those two: NaN timeouts were accepted, ~user in state_dir, ${file:} paths that are not
        # readable as text, sizes and ports too long for int().
        "[proxy]\nupstream_connections = nan\n",
        "[proxy]\nread_timeout = nan\n",
        "[proxy]\nconnect_timeout = inf\n",
        '[proxy]\nstate_dir = "~nosuchuser-fuzz/state"\n',
        f'[proxy]\nmax_body = "{"9" * 4400}"\n',
        f'[proxy]\nlisten = "127.0.0.1:{"9" * 4400}"\n',
        '[connections.main]\nhosts = ["h"]\ntoken = "${file:~nosuchuser-fuzz/t}"\n'
        '[connections.main.credentials]\nsource = "chain"\n',
        '[connections.main]\nhosts = ["h"]\ntoken = "${file:/tmp/a\\u0000b}"\n'
        '[connections.main.credentials]\nsource = "chain"\n',
        f'[connections.main]\nhosts = ["h"]\ntoken = "${{file:{config_loader.SCRATCH}/latin1}}"\n'
        '[connections.main.credentials]\nsource = "chain"\n',
        '[connections.main]\nhosts = ["h"]\n[connections.main.credentials]\nsource = "assume_role"\n'
        f'role_arn = "arn:aws:iam::111122223333:role/r"\npolicy = "{"[" * 100_000}"\n',
    ],
)
def test_config_found_by_fuzzing_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        loads(text, env=config_loader.ENV)


def test_giant_chunk_size_line_is_refused_not_buffered() -> None:
    chunked.giant_size_line_is_refused(10 * 2**20)
