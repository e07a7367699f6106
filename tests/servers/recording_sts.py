"""A stand-in STS (query protocol), in-process, that records each call: it shows what sigproxy sends where moto
ignores it (session policy, tags, source identity, which key signed). Not a verifier.

Each recorded call is the form parameters (``parse_qs``: lists of values) plus ``_headers`` (the header names,
lower-case) and ``_authorization`` (the ``Authorization`` value). AssumeRole hands out keys
``ASIA<session name>``; GetCallerIdentity answers the assumed-role ARN of the session whose key signed it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["start_recording_sts"]

_NS = 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"'


def _answer(params: dict[str, Any]) -> bytes:
    if params["Action"] == ["AssumeRole"]:
        session = params["RoleSessionName"][0]
        xml = (f"<AssumeRoleResponse {_NS}><AssumeRoleResult>"
               f"<Credentials><AccessKeyId>ASIA{session}</AccessKeyId>"
               "<SecretAccessKey>tempsecret</SecretAccessKey><SessionToken>temptoken</SessionToken>"
               "<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials><AssumedRoleUser>"
               f"<Arn>arn:aws:sts::111122223333:assumed-role/r/{session}</Arn>"
               f"<AssumedRoleId>AROA:{session}</AssumedRoleId></AssumedRoleUser></AssumeRoleResult>"
               "</AssumeRoleResponse>")
    else:
        key = params["_authorization"].split("Credential=", 1)[1].split("/", 1)[0]
        xml = (f"<GetCallerIdentityResponse {_NS}>"
               f"<GetCallerIdentityResult><Arn>arn:aws:sts::111122223333:assumed-role/r/{key[4:]}</Arn>"
               "<UserId>AROA:s</UserId><Account>111122223333</Account></GetCallerIdentityResult>"
               "</GetCallerIdentityResponse>")
    return xml.encode()


def start_recording_sts() -> tuple[str, list[dict[str, Any]], Callable[[], None]]:
    """``(url, calls, stop)``: the server listens on 127.0.0.1 (port 0) before this returns."""
    calls: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # TCP_NODELAY, as real servers: no 40 ms wait per response (Nagle)
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            params: dict[str, Any] = parse_qs(body, keep_blank_values=True)
            params["_headers"] = [name.lower() for name in self.headers]
            params["_authorization"] = self.headers.get("Authorization", "")
            calls.append(params)
            data = _answer(params)
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_address[1]}", calls, stop
