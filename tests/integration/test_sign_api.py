"""What ``sigproxy.signapi.sign`` and ``sigproxy sign --json`` return works when a program sends it itself: real
curl, no proxy, against verifiers that check signatures (moto with its IAM auth on, Ceph RGW), and a tampered
signature is refused by each, so these tests can fail."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from sigproxy.config import ConnectionConfig, loads
from sigproxy.signapi import parse_sign_input, sign
from sigproxy.signing import Credentials
from tests.conftest import ROOT, moto_config
from tests.integration.test_rgw import rgw_config
from tests.servers.moto_server import EXTERNAL_ID, Moto
from tests.servers.rgw import RGW

STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
BUCKET = "sigproxy-signapi"


def send(method: str, answer: dict[str, Any], body: bytes | None = None) -> tuple[int, str]:
    """Send ``{url, headers}`` with curl, directly (no proxy): (status, response body)."""
    args = ["curl", "-sS", "--noproxy", "*", "-X", method, "-w", "\n%{http_code}"]
    for name, value in answer["headers"].items():
        args += ["-H", f"{name}: {value}"]
    r = subprocess.run([*args, "--data-binary", "@-", answer["url"]] if body is not None else [*args, answer["url"]],
                       input=body, capture_output=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    text, _, status = r.stdout.decode(errors="replace").rpartition("\n")
    return int(status), text


def tampered(answer: dict[str, Any]) -> dict[str, Any]:
    """The same answer with the signature's last hex digit changed (header or query)."""
    headers = dict(answer["headers"])
    if "Authorization" in headers:
        auth = headers["Authorization"]
        headers["Authorization"] = auth[:-1] + ("0" if auth[-1] != "0" else "1")
        return {"url": answer["url"], "headers": headers}
    url = answer["url"]
    start = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    end = start + 64
    return {"url": url[:end - 1] + ("0" if url[end - 1] != "0" else "1") + url[end:], "headers": headers}


def connection(config_text: str, name: str) -> ConnectionConfig:
    return loads(config_text).connections[name]


# --- moto: STS with its signature checks on ------------------------------------------------------


def test_cli_json_signs_sts_for_curl(moto: Moto, tmp_path: Path) -> None:
    """`sigproxy sign --json` (a subprocess: the CLI path) for STS GetCallerIdentity: curl gets the IAM user's
    ARN from moto; the same answer with a tampered signature is refused (403 SignatureDoesNotMatch)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(moto_config(moto))
    r = subprocess.run([sys.executable, "-m", "sigproxy", "sign", "-c", str(cfg), "--connection", "main", "--json",
                        "--service", "sts", "-X", "POST", "-H", f"Content-Type: {FORM}", "--data", STS_BODY,
                        f"{moto.endpoint}/"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert set(answer) == {"url", "headers"}
    assert moto.secret_key not in r.stdout
    status, text = send("POST", answer, STS_BODY.encode())
    assert status == 200, text
    assert moto.user_arn in text
    status, text = send("POST", tampered(answer), STS_BODY.encode())
    assert status == 403 and "SignatureDoesNotMatch" in text, text
    status, text = send("POST", answer, b"Action=GetCallerIdentity&Version=2011-06-16")  # body changed
    assert status == 403, text


def test_session_token_and_host_form_for_curl(moto: Moto) -> None:
    """Temporary credentials (an assumed role in moto): the answer carries X-Amz-Security-Token, and curl's
    request is moto's assumed role; the JSON's host form with a port and a service override; tampered: 403."""
    sts = boto3.client("sts", endpoint_url=moto.endpoint, region_name=moto.region,
                       aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)
    assumed = sts.assume_role(RoleArn=moto.role_arn, RoleSessionName="signapi", ExternalId=EXTERNAL_ID)["Credentials"]
    creds = Credentials(assumed["AccessKeyId"], assumed["SecretAccessKey"], assumed["SessionToken"])
    host = moto.endpoint.removeprefix("http://")
    request = parse_sign_input({"connection": "main", "method": "POST", "host": host, "scheme": "http", "path": "/",
                                "service": "sts", "headers": {"Content-Type": FORM}, "payload": STS_BODY})
    answer = sign(connection(moto_config(moto), "main"), creds, request, now=datetime.now(UTC)).to_json()
    assert answer["headers"]["X-Amz-Security-Token"] == assumed["SessionToken"]
    assert assumed["SecretAccessKey"] not in json.dumps(answer)
    status, text = send("POST", answer, STS_BODY.encode())
    assert status == 200, text
    assert ":assumed-role/tenant/signapi" in text
    status, text = send("POST", tampered(answer), STS_BODY.encode())
    assert status == 403, text


# --- Ceph RGW: the body against its hash, presigned URLs ----------------------------------------


@pytest.fixture(scope="module")
def bucket(rgw: RGW) -> str:
    s3 = boto3.client("s3", endpoint_url=rgw.endpoint, region_name=rgw.region,
                      aws_access_key_id=rgw.access_key, aws_secret_access_key=rgw.secret_key)
    s3.create_bucket(Bucket=BUCKET)
    return BUCKET


def rgw_sign(rgw: RGW, doc: dict[str, Any]) -> dict[str, Any]:
    conn = connection(rgw_config(rgw), "ceph")
    request = parse_sign_input({"connection": "ceph", **doc})
    return sign(conn, Credentials(rgw.access_key, rgw.secret_key), request, now=datetime.now(UTC)).to_json()


@pytest.mark.rgw
def test_rgw_put_with_payload_then_get(rgw: RGW, bucket: str) -> None:
    """PUT signed with its payload, then GET: curl stores and reads the object back; tampered GET: 403."""
    body = "signed by /v1/sign \u00e9"
    url = f"{rgw.endpoint}/{bucket}/dir/with%20space.txt"
    put = rgw_sign(rgw, {"method": "PUT", "url": url, "payload": body, "headers": {"Content-Type": "text/plain"}})
    status, text = send("PUT", put, body.encode())
    assert status == 200, text
    get = rgw_sign(rgw, {"method": "GET", "host": rgw.endpoint.removeprefix("http://"), "scheme": "http",
                         "path": f"/{bucket}/dir/with%20space.txt"})
    status, text = send("GET", get)
    assert (status, text) == (200, body)
    status, text = send("GET", tampered(get))
    assert status == 403 and "SignatureDoesNotMatch" in text, text
    listing = rgw_sign(rgw, {"method": "GET", "host": rgw.endpoint.removeprefix("http://"), "scheme": "http",
                             "path": f"/{bucket}", "params": {"list-type": "2", "prefix": "dir/with "}})
    status, text = send("GET", listing)
    assert status == 200 and "<Key>dir/with space.txt</Key>" in text, text


@pytest.mark.rgw
def test_rgw_payload_sha256_is_checked(rgw: RGW, bucket: str) -> None:
    """payload_sha256: RGW accepts the body with that hash and refuses another body; UNSIGNED-PAYLOAD works too."""
    body = b"\x00binary\xffbody"
    url = f"{rgw.endpoint}/{bucket}/hashed.bin"
    put = rgw_sign(rgw, {"method": "PUT", "url": url, "payload_sha256": hashlib.sha256(body).hexdigest()})
    assert send("PUT", put, b"\x00binary\xffbodz")[0] == 400  # XAmzContentSHA256Mismatch
    status, text = send("PUT", put, body)
    assert status == 200, text
    unsigned = rgw_sign(rgw, {"method": "PUT", "url": url, "payload_sha256": "UNSIGNED-PAYLOAD"})
    assert send("PUT", unsigned, b"unsigned")[0] == 200
    assert send("PUT", tampered(unsigned), b"unsigned")[0] == 403


@pytest.mark.rgw
def test_rgw_presigned_get(rgw: RGW, bucket: str, tmp_path: Path) -> None:
    """presign: curl fetches the object with the URL and the headers given (Host); tampered URL: 403. The same
    through `sigproxy sign --presign --json`."""
    boto3.client("s3", endpoint_url=rgw.endpoint, region_name=rgw.region, aws_access_key_id=rgw.access_key,
                 aws_secret_access_key=rgw.secret_key).put_object(Bucket=bucket, Key="pre signed.txt", Body=b"pre!")
    url = f"{rgw.endpoint}/{bucket}/pre%20signed.txt"
    answer = rgw_sign(rgw, {"method": "GET", "url": url, "presign": 120})
    assert answer["headers"] == {"Host": rgw.endpoint.removeprefix("http://")}
    assert send("GET", answer) == (200, "pre!")
    assert send("GET", tampered(answer))[0] == 403
    cfg = tmp_path / "c.toml"
    cfg.write_text(rgw_config(rgw))
    r = subprocess.run([sys.executable, "-m", "sigproxy", "sign", "-c", str(cfg), "--connection", "ceph", "--json",
                        "--presign", "--expires", "60", url], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert send("GET", json.loads(r.stdout)) == (200, "pre!")
