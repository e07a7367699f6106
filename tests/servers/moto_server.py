"""A moto server with IAM signature checks ON, in its own process, for tests.

Owns: starting moto's werkzeug app (one backend; a plain-HTTP port and, optionally, a TLS port
serving the same app object), seeding it while authentication is off (an IAM user with an
allow-all policy and an access key, an assumable role, a role only that role's sessions may
assume, an OIDC provider and a role for its tokens, a bucket, a table, a queue), switching
authentication on, and stopping the process.  The parent learns the ports and keys from one JSON
line the child prints once authentication is on.  Run as ``python -m tests.servers.moto_server
--serve [--tls-dir DIR]``; the child also exits when its stdin closes (its parent died).

What moto 5.2.5 really checks for the roles (measured with auth on):

- AssumeRole: the caller's signature and session token, its identity policies (sts:AssumeRole),
  then the role's trust policy -- but only if the role exists (an unknown role ARN is assumed
  with no trust check).  Trust principals are compared literally, without wildcards: the only
  strings that match are ``"*"`` (as a plain string; ``["*"]`` matches nothing), an IAM user's
  ARN, and for a role session the exact session ARN
  ``arn:aws:sts::ACCOUNT:assumed-role/ROLE_NAME/SESSION_NAME``.  Neither the account root nor a
  role's ARN covers its users or sessions as on AWS.  A statement whose principal does not match
  *denies* (it is not merely skipped), so all principals must sit in one statement.
- ExternalId: the only condition moto evaluates is ``StringEquals`` (other operators pass), and
  the only request value it knows is ``sts:ExternalId``.  A wrong ExternalId is refused, a
  missing one accepted (the condition is skipped): ``role_arn`` is assumable without one.
  ``chain_role_arn`` has no condition; an ExternalId sent to it is ignored.  Session policies,
  tags, source identity and AWS's one-hour cap on chained sessions are ignored; the credentials
  live for DurationSeconds.
- Chaining: ``chain_role_arn`` trusts only the session named ``chain_session_name`` of
  ``role_arn``, so a test's first hop must use that RoleSessionName (sigproxy's default for a
  connection named ``base``); the IAM user and other sessions are refused.  Its trust policy also
  names ``role_arn`` itself, which is what AWS needs and moto ignores.
- AssumeRoleWithWebIdentity: unpatched, moto answers every unsigned request with a 500 once auth
  is on (it reads the Authorization header unconditionally), and it checks neither the token nor
  the trust policy.  This server takes over unsigned AssumeRoleWithWebIdentity calls
  (``_check_web_identity``): the token must be a JWT whose ``iss`` names an OIDC provider
  registered in IAM and whose ``aud`` is one of its client IDs (else 400 InvalidIdentityToken),
  with ``exp`` ahead (else 400 ExpiredTokenException); the role must exist and its trust policy
  allow sts:AssumeRoleWithWebIdentity to that provider as Federated principal, with its
  ``StringEquals`` conditions on ``ISSUER:aud`` / ``ISSUER:sub`` met (else 403 AccessDenied).
  The JWT signature is NOT checked; mint tokens with :func:`make_web_identity_token`.  moto then
  issues the credentials; GetCallerIdentity with them gives ``assumed-role/web-identity/SESSION``.
"""

from __future__ import annotations

import argparse
import base64
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
CHAIN_SESSION_NAME = "sigproxy-base"  # the first hop's RoleSessionName that chain_role_arn trusts
OIDC_ISSUER = "https://oidc.sigproxy.test"  # never contacted: the JWT signature is not checked
OIDC_AUDIENCE = "sigproxy"


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
    role_arn: str  # trusts the user on condition sts:ExternalId == "ext-123" (a missing one passes)
    # Added later, hence the defaults:
    chain_role_arn: str = ""  # assumable only by role_arn's session named chain_session_name
    chain_session_name: str = CHAIN_SESSION_NAME
    web_identity_role_arn: str = ""  # AssumeRoleWithWebIdentity with a token from OIDC_ISSUER for OIDC_AUDIENCE
    web_identity_token: str = ""  # such a token, valid for a day (mint others: make_web_identity_token)
    oidc_provider_arn: str = ""  # arn:aws:iam::ACCOUNT:oidc-provider/oidc.sigproxy.test


def make_web_identity_token(
    *, sub: str = "system:serviceaccount:default:sigproxy", aud: str | list[str] = OIDC_AUDIENCE,
    iss: str = OIDC_ISSUER, lifetime: float = 86400, now: float | None = None,
) -> str:  # fmt: skip
    """A JWT-shaped token the server accepts while ``now + lifetime`` is ahead (its signature is fake)."""

    def part(obj: object) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    issued = int(time.time() if now is None else now)
    header = {"alg": "RS256", "typ": "JWT", "kid": "sigproxy-test"}
    claims = {"iss": iss, "sub": sub, "aud": aud, "iat": issued, "exp": issued + int(lifetime)}
    return f"{part(header)}.{part(claims)}.bm90LWEtcmVhbC1zaWduYXR1cmU"


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
    # moto matches the exact session ARN only; role["Arn"] is what AWS would need (moto ignores it)
    session_arn = f"arn:aws:sts::{account_id}:assumed-role/tenant/{CHAIN_SESSION_NAME}"
    chain_trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"AWS": [session_arn, role["Arn"]]}}]}  # fmt: skip
    chained = iam.create_role(Path="/sigproxy-assumable/", RoleName="chained",
                              AssumeRolePolicyDocument=json.dumps(chain_trust))["Role"]  # fmt: skip
    iam.put_role_policy(RoleName="chained", PolicyName="allow-all", PolicyDocument=allow_all)
    provider_arn = iam.create_open_id_connect_provider(
        Url=OIDC_ISSUER, ClientIDList=[OIDC_AUDIENCE], ThumbprintList=["0" * 40]
    )["OpenIDConnectProviderArn"]
    issuer = OIDC_ISSUER.removeprefix("https://")
    web_trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
        "Principal": {"Federated": provider_arn},
        "Condition": {"StringEquals": {f"{issuer}:aud": OIDC_AUDIENCE}}}]}  # fmt: skip
    web = iam.create_role(Path="/sigproxy-assumable/", RoleName="web-identity",
                          AssumeRolePolicyDocument=json.dumps(web_trust))["Role"]  # fmt: skip
    iam.put_role_policy(RoleName="web-identity", PolicyName="allow-all", PolicyDocument=allow_all)
    client("s3").create_bucket(Bucket="sigproxy-test")
    client("dynamodb").create_table(
        TableName="sigproxy-test", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])  # fmt: skip
    queue_url = client("sqs").create_queue(QueueName="sigproxy-test")["QueueUrl"]
    return {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"],
            "account_id": account_id, "user_arn": user["Arn"], "region": REGION,
            "bucket": "sigproxy-test", "table": "sigproxy-test", "queue_url": queue_url,
            "role_arn": role["Arn"], "chain_role_arn": chained["Arn"],
            "chain_session_name": CHAIN_SESSION_NAME, "web_identity_role_arn": web["Arn"],
            "web_identity_token": make_web_identity_token(), "oidc_provider_arn": provider_arn}  # fmt: skip


def _check_web_identity(account_id: str, role_arn: str | None, token: str | None) -> None:
    """Refuse an AssumeRoleWithWebIdentity as STS would, minus the token's signature (see the docstring)."""
    from moto.iam.models import iam_backends
    from werkzeug.exceptions import HTTPException

    class StsError(HTTPException):
        def __init__(self, status: int, code: str, message: str) -> None:
            body = ('<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
                    f"<Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
                    "<RequestId>c2lncHJveHktdGVzdA</RequestId></ErrorResponse>")  # fmt: skip
            super().__init__(description=body)
            self.code = status

    try:
        payload = (token or "").split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert isinstance(claims, dict)
    except (IndexError, ValueError, AssertionError):
        raise StsError(400, "InvalidIdentityToken", "The web identity token is not a JWT") from None
    iam = iam_backends[account_id]["aws"]
    issuer = str(claims.get("iss", "")).removeprefix("https://")
    provider_arn = f"arn:aws:iam::{account_id}:oidc-provider/{issuer}"
    provider = iam.open_id_providers.get(provider_arn)
    if provider is None:
        raise StsError(400, "InvalidIdentityToken",
                       f"No OpenIDConnect provider found in your account for {claims.get('iss')}")  # fmt: skip
    aud = claims.get("aud")
    if not set(aud if isinstance(aud, list) else [aud]) & set(provider.client_id_list):
        raise StsError(400, "InvalidIdentityToken", "Incorrect token audience")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= time.time():
        raise StsError(400, "ExpiredTokenException", f"Token expired: exp {exp!r} is not ahead")
    denied = StsError(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
    try:
        role = iam.get_role_by_arn(role_arn or "")
    except Exception:
        raise denied from None
    statements = json.loads(role.assume_role_policy_document)["Statement"]
    for st in statements if isinstance(statements, list) else [statements]:
        actions = st.get("Action", [])
        federated = st.get("Principal", {}).get("Federated", []) if isinstance(st.get("Principal"), dict) else []
        conditions = st.get("Condition", {}).get("StringEquals", {})
        if (st.get("Effect") == "Allow"
                and "sts:AssumeRoleWithWebIdentity" in ([actions] if isinstance(actions, str) else actions)
                and provider_arn in ([federated] if isinstance(federated, str) else federated)
                and all(claims.get(key.rsplit(":", 1)[1]) in ([want] if isinstance(want, str) else want)
                        for key, want in conditions.items())):  # fmt: skip
            return
    raise denied


def _take_over_unsigned_web_identity() -> None:
    """Route unsigned AssumeRoleWithWebIdentity to ``_check_web_identity`` instead of moto's 500."""
    from moto.core.authorization import ActionAuthenticatorMixin

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authenticate(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        if "Authorization" not in self.headers and self._get_action() == "AssumeRoleWithWebIdentity":
            _check_web_identity(self.current_account, self._get_param("RoleArn"), self._get_param("WebIdentityToken"))
            return
        original(self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate  # type: ignore[method-assign]


def _serve(tls_dir: pathlib.Path | None) -> None:
    out = os.fdopen(os.dup(1), "w")  # the JSON line goes here; moto's print()s go to the log
    os.dup2(2, 1)
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import BaseWSGIServer, make_server

    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # off while seeding
    _take_over_unsigned_web_identity()
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
