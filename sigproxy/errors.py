"""The one exception tree of sigproxy; each request-time error knows its HTTP status and code.

::

    SigproxyError                      status  code
    ├── BadRequest                      400    bad_request
    │   ├── UnresolvableTarget          400    unresolvable_target
    │   └── UnsupportedRequest          400    unsupported_request
    ├── Forbidden                       403    forbidden
    │   ├── HostNotAllowed              403    host_not_allowed
    │   ├── PolicyRefused               403    policy_refused
    │   ├── AddressNotAllowed           403    address_not_allowed   (SSRF guard: private/loopback target)
    │   ├── ClientNotAllowed            403    client_not_allowed    (client address outside `clients`)
    │   └── ClientSignatureInvalid      403    client_signature_invalid
    ├── ProxyAuthRequired               407    no_connection
    │   └── BadProxyToken               407    bad_proxy_token
    ├── BodyTimeout                     408    body_timeout     (the client went silent mid-body)
    ├── BodyTooLarge                    413    body_too_large
    ├── TooManyAuthFailures             429    too_many_auth_failures
    ├── ClientAborted (ConnectionError) 499    client_aborted   (logged only: nobody is left to answer)
    ├── CredentialsUnavailable          502    credentials_unavailable
    ├── TooManyConnections              503    too_many_connections   (at accept: a connection limit)
    └── UpstreamError (ConnectionError) 502    upstream_error
        └── UpstreamTimeout (TimeoutError) 504 upstream_timeout

    ConfigError (ValueError)   a bad configuration: names the key path; `sigproxy` exits 2.
    ListenError (OSError)      a listener cannot bind: names the listener and the key to change; exits 2.
    WorkerFailed (RuntimeError) a worker of ``workers = N`` did not start (later deaths are restarted); exits 1.

    ApiError                   an admin-API answer (``/v1``): ``{"error": {"code", "message", "field"}}``
    ├── InvalidField            422    invalid_field   (``field``: the JSON path at fault, ``credentials.role_arn``)
    ├── BadJson                 400    bad_json        (not JSON, or not an object)
    ├── Unauthorized            401    unauthorized    (missing or wrong admin token)
    ├── ApiForbidden            403    api_off         (no [admin] token and a non-loopback admin listener)
    ├── NotFound                404    not_found
    ├── MethodNotAllowed        405    method_not_allowed
    ├── Conflict                409    conflict        (the name exists in the file or the store; a stale write)
    ├── PayloadTooLarge         413    body_too_large
    ├── UnsupportedMediaType    415    unsupported_media_type
    ├── ValidationFailed        422    (STS's code)    (onboarding: AssumeRole/GetCallerIdentity refused)
    ├── SessionGone             410    session_STATE   (connect page: token unknown, expired, completed, revoked)
    └── TooManyAttempts         429    too_many_attempts (connect page: [connect] max_attempts submits used)

Messages say what to change. They never contain a secret: callers pass names, never values.
Must not: import other sigproxy modules.
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "SigproxyError",
    "BadRequest",
    "UnresolvableTarget",
    "UnsupportedRequest",
    "Forbidden",
    "HostNotAllowed",
    "PolicyRefused",
    "AddressNotAllowed",
    "ClientNotAllowed",
    "ClientSignatureInvalid",
    "TooManyAuthFailures",
    "ProxyAuthRequired",
    "BadProxyToken",
    "BodyTimeout",
    "BodyTooLarge",
    "ClientAborted",
    "CredentialsUnavailable",
    "TooManyConnections",
    "UpstreamError",
    "UpstreamTimeout",
    "ConfigError",
    "ListenError",
    "WorkerFailed",
    "ApiError",
    "InvalidField",
    "BadJson",
    "Unauthorized",
    "ApiForbidden",
    "NotFound",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "Conflict",
    "ValidationFailed",
    "SessionGone",
    "TooManyAttempts",
]


class SigproxyError(Exception):
    """An error the proxy answers itself, as JSON with an ``X-Sigproxy-Error`` header."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(SigproxyError):
    status = 400
    code = "bad_request"


class UnresolvableTarget(BadRequest):
    """The service or region to sign for could not be worked out."""

    code = "unresolvable_target"


class UnsupportedRequest(BadRequest):
    """A request shape sigproxy does not sign (yet); refused rather than forwarded unsigned."""

    code = "unsupported_request"


class Forbidden(SigproxyError):
    status = 403
    code = "forbidden"


class HostNotAllowed(Forbidden):
    """The target is not in the selected connection's ``hosts``."""

    code = "host_not_allowed"


class PolicyRefused(Forbidden):
    """The connection's policy (services, regions, methods, x-amz headers) does not allow the request."""

    code = "policy_refused"


class AddressNotAllowed(Forbidden):
    """The target is, or resolves to, a loopback/link-local/private/unspecified address nobody named."""

    code = "address_not_allowed"


class ClientNotAllowed(Forbidden):
    """The client's address is outside the listener's ``clients`` networks."""

    code = "client_not_allowed"


class ClientSignatureInvalid(Forbidden):
    """The client's own SigV4 signature (made with a connection's ``client_secret``) does not verify."""

    code = "client_signature_invalid"


class ProxyAuthRequired(SigproxyError):
    """No connection could be selected for the request."""

    status = 407
    code = "no_connection"


class BadProxyToken(ProxyAuthRequired):
    """The connection requires a token and the request's was missing or wrong."""

    code = "bad_proxy_token"


class BodyTimeout(SigproxyError):
    """The client sent nothing for ``body_timeout`` seconds while its request body was read; the request is
    abandoned (nothing half-sent is forwarded as if complete) and the connection closed."""

    status = 408
    code = "body_timeout"


class BodyTooLarge(SigproxyError):
    status = 413
    code = "body_too_large"


class TooManyAuthFailures(SigproxyError):
    """This client address failed authentication too often; it must wait for the window to pass."""

    status = 429
    code = "too_many_auth_failures"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransferCodingNotImplemented(SigproxyError):
    """A request's Transfer-Encoding names a coding besides chunked, which sigproxy does not decode
    (RFC 9112 6.1: 501)."""

    status = 501
    code = "unsupported_transfer_coding"


class ClientAborted(SigproxyError, ConnectionError):
    """The client went away mid-upload; the upstream request is abandoned and nothing can be answered."""

    status = 499
    code = "client_aborted"


class CredentialsUnavailable(SigproxyError):
    """The connection's credentials could not be obtained; ``sts_code`` is STS's error code, if it gave one."""

    status = 502
    code = "credentials_unavailable"

    def __init__(self, message: str, *, sts_code: str | None = None, sts_message: str | None = None) -> None:
        super().__init__(message)
        self.sts_code = sts_code
        self.sts_message = sts_message


class TooManyConnections(SigproxyError):
    """``max_connections`` or ``max_connections_per_client`` is reached; the new connection is refused."""

    status = 503
    code = "too_many_connections"


class UpstreamError(SigproxyError, ConnectionError):
    """The upstream could not be reached or broke the exchange."""

    status = 502
    code = "upstream_error"


class UpstreamTimeout(UpstreamError, TimeoutError):
    status = 504
    code = "upstream_timeout"


class ConfigError(ValueError):
    """A configuration problem; ``path`` is the TOML key path (``connections.main.hosts[0]``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class ListenError(OSError):
    """A listener could not bind its address. The message names the listener, the address and the key that
    sets it, e.g. ``cannot listen on 127.0.0.1:9901 for the admin listener: Address already in use ...``.

    ``errno`` is the bind's; ``listener`` (``forward proxy``, ``reverse listener for URL``, ``admin
    listener``) and ``key`` (``[proxy] listen``, ...) are kept for callers.
    """

    def __init__(self, listener: str, key: str, address: str, cause: OSError, *, off: str = "") -> None:
        """``off``: how to turn the listener off instead, when it can be (appended to the advice)."""
        # asyncio's strerror repeats the address ("error while attempting to bind on address ..."): the
        # errno's own text is enough next to ours.
        reason = os.strerror(cause.errno) if cause.errno else (cause.strerror or str(cause))
        if cause.errno == errno.EADDRINUSE:
            reason += " (another process, perhaps another sigproxy, holds it)"
        message = f"cannot listen on {address} for the {listener}: {reason}; change {key}{off}"
        super().__init__(cause.errno, message)
        self.listener = listener
        self.key = key


class ApiError(Exception):
    """An admin-API error: HTTP ``status``, a stable ``code``, a ``message`` saying what to change, and the
    ``field`` (JSON path such as ``credentials.role_arn``, or a query parameter) at fault, if one is."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def body(self) -> dict[str, dict[str, str | None]]:
        """The JSON answer: ``{"error": {"code", "message", "field"}}``."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class InvalidField(ApiError):
    status = 422
    code = "invalid_field"


class BadJson(ApiError):
    status = 400
    code = "bad_json"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class ApiForbidden(ApiError):
    status = 403
    code = "api_off"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ApiError):
    status = 413
    code = "body_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class ValidationFailed(ApiError):
    """Onboarding validation failed at AWS: ``code`` is STS's error code (``AccessDenied``), ``message`` one a
    customer can act on."""

    status = 422
    code = "validation_failed"


class SessionGone(ApiError):
    """A connect-session token that no longer opens the page: ``state`` is ``"expired"``, ``"completed"``,
    ``"revoked"`` or ``"unknown"`` (never issued, or its connection is gone). The message is safe to show the
    customer (it says what to do: ask the platform for a new link)."""

    status = 410

    _MESSAGES = {  # noqa: RUF012 - read-only
        "expired": "This link has expired. Ask for a new one.",
        "completed": "This link was already used: the account is connected. Ask for a new link to change it.",
        "revoked": "This link was cancelled. Ask for a new one.",
        "unknown": "This link is not valid. Check that it was copied whole, or ask for a new one.",
    }

    def __init__(self, state: str, message: str | None = None) -> None:
        super().__init__(message or self._MESSAGES.get(state, self._MESSAGES["unknown"]), code=f"session_{state}")
        self.state = state


class TooManyAttempts(ApiError):
    """A connect session's submits reached ``[connect] max_attempts``; the message is safe to show."""

    status = 429
    code = "too_many_attempts"


class WorkerFailed(RuntimeError):
    """A worker of ``workers = N`` did not start serving (at start only: a worker that dies later is restarted)."""
