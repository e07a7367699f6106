"""A moto server with IAM signature checks ON, in its own process, for tests.

Owns: starting moto's werkzeug app (one backend; a plain-HTTP port and, optionally, a TLS port
serving the same app object), seeding it while authentication is off (an IAM user with an
allow-all policy and an access key, an assumable role, a bucket, a table, a queue), switching
authentication on, and stopping the process.  The parent learns the ports and keys from one JSON
line the child prints once authentication is on.  Run as ``python -m tests.servers.moto_server
--serve [--tls-dir DIR]``; the child also exits when its stdin closes (its parent died).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
REGION = "us-east-1"
EXTERNAL_ID = "ext-123"


@dataclass(frozen=True)
class Moto:
    endpoint: str  # http://127.0.0.1:PORT; moto dispatches by the credential scope, not the Host
    tls_endpoint: str | None  # https://127.0.0.1:PORT2, same backend (cert: IP 127.0.0.1, DNS localhost)
    ca_file: str | None  # PEM of the CA that signed tls_endpoint's certificate
    access_key: str  # an IAM user's key (allow-all policy); signatures made with it are checked
    secret_key: str
    account_id: str
    user_arn: str  # what sts:GetCallerIdentity returns for access_key
    region: str
    bucket: str
    table: str  # hash key "id" (S)
    queue_url: str
    role_arn: str  # trusts the account on condition sts:ExternalId == "ext-123"


def start_moto(
    workdir: pathlib.Path, *, tls: bool = True, timeout: float = 30
) -> tuple[Moto, Callable[[], None]]:
    """Start the server; return its description and an idempotent stop()."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "moto.log"
    args = [sys.executable, "-m", "tests.servers.moto_server", "--serve"]
    if tls:
        args += ["--tls-dir", str(workdir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
        )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            chunk = os.read(proc.stdout.fileno(), 65536) if left > 0 and sel.select(left) else None
            if not chunk:
                stop()
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"moto did not start (rc={proc.returncode}); log {log_path}:\n{tail}")
            buf += chunk
    return Moto(**json.loads(buf.split(b"\n", 1)[0])), stop


def _seed(endpoint: str) -> dict[str, str]:
    import boto3  # type: ignore[import-untyped]

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                            aws_access_key_id="seed", aws_secret_access_key="seed")  # fmt: skip

    allow_all = json.dumps({"Version": "2012-10-17",
                            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})  # fmt: skip
    iam = client("iam")
    user = iam.create_user(UserName="sigproxy")["User"]
    iam.put_user_policy(UserName="sigproxy", PolicyName="allow-all", PolicyDocument=allow_all)
    key = iam.create_access_key(UserName="sigproxy")["AccessKey"]
    account_id = user["Arn"].split(":")[4]
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        # moto compares principals literally (the account's root ARN does not cover its users)
        "Principal": {"AWS": [f"arn:aws:iam::{account_id}:root", user["Arn"]]},
        "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}}]}  # fmt: skip
    role = iam.create_role(Path="/sigproxy-assumable/", RoleName="tenant",
                           AssumeRolePolicyDocument=json.dumps(trust))["Role"]  # fmt: skip
    iam.put_role_policy(RoleName="tenant", PolicyName="allow-all", PolicyDocument=allow_all)
    client("s3").create_bucket(Bucket="sigproxy-test")
    client("dynamodb").create_table(
        TableName="sigproxy-test", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])  # fmt: skip
    queue_url = client("sqs").create_queue(QueueName="sigproxy-test")["QueueUrl"]
    return {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"],
            "account_id": account_id, "user_arn": user["Arn"], "region": REGION,
            "bucket": "sigproxy-test", "table": "sigproxy-test", "queue_url": queue_url,
            "role_arn": role["Arn"]}  # fmt: skip


def _serve(tls_dir: pathlib.Path | None) -> None:
    out = os.fdopen(os.dup(1), "w")  # the JSON line goes here; moto's print()s go to the log
    os.dup2(2, 1)
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import BaseWSGIServer, make_server

    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # off while seeding
    app = DomainDispatcherApplication(create_backend_app)
    servers: list[BaseWSGIServer] = [make_server("127.0.0.1", 0, app, threaded=True)]
    tls_endpoint = ca_file = None
    if tls_dir is not None:
        import ssl

        import trustme

        ca = trustme.CA()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        ca_file = str(tls_dir / "moto-ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        servers.append(make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ctx))
        tls_endpoint = f"https://127.0.0.1:{servers[1].server_port}"
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{servers[0].server_port}"
    fields = _seed(endpoint)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # on: every request from now is checked
    ActionAuthenticatorMixin.request_count = 0
    moto = Moto(endpoint=endpoint, tls_endpoint=tls_endpoint, ca_file=ca_file, **fields)
    out.write(json.dumps(dataclasses.asdict(moto)) + "\n")
    out.flush()
    sys.stdin.buffer.read()  # until the parent closes our stdin (or SIGTERM ends us)
    os._exit(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true", required=True)
    parser.add_argument("--tls-dir", type=pathlib.Path)
    _serve(parser.parse_args().tls_dir)
