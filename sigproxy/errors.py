"""The one exception tree of sigproxy; each request-time error knows its HTTP status and code.

::

    SigproxyError                      status  code (X-Sigproxy-Error)    AWS code                     retried
    │                                   500    internal_error              SigproxyInternalError        yes
    │                                          (itself: a bug, any exception no code path answers)
    ├── BadRequest                      400    bad_request                 SigproxyBadRequest           no
    │   ├── UnresolvableTarget          400    unresolvable_target         SigproxyUnresolvableTarget   no
    │   └── UnsupportedRequest          400    unsupported_request         SigproxyUnsupportedRequest   no
    ├── Forbidden                       403    forbidden                   SigproxyForbidden            no
    │   ├── HostNotAllowed              403    host_not_allowed            SigproxyHostNotAllowed       no
    │   ├── PolicyRefused               403    policy_refused              SigproxyPolicyRefused        no
    │   ├── AddressNotAllowed           403    address_not_allowed         SigproxyAddressNotAllowed    no
    │   │                                      (SSRF guard: private/loopback target)
    │   ├── ClientNotAllowed            403    client_not_allowed          SigproxyClientNotAllowed     no
    │   │                                      (client address outside `clients`)
    │   └── ClientSignatureInvalid      403    client_signature_invalid    SigproxyClientSignatureInvalid no
    ├── ProxyAuthRequired               407    no_connection               SigproxyNoConnection         no
    │   └── BadProxyToken               407    bad_proxy_token             SigproxyBadProxyToken        no
    ├── BodyTimeout                     408    body_timeout                SigproxyBodyTimeout          no
    │                                          (the client went silent mid-body)
    ├── BodyTooLarge                    413    body_too_large              SigproxyBodyTooLarge         no
    ├── TooManyAuthFailures             429    too_many_auth_failures      SigproxyTooManyAuthFailures  legacy mode
    ├── TransferCodingNotImplemented    501    unsupported_transfer_coding SigproxyUnsupportedTransferCoding no
    ├── ClientAborted (ConnectionError) 499    client_aborted              SigproxyClientAborted        -
    │                                          (logged only: nobody is left to answer)
    ├── CredentialsUnavailable          403    credentials_unavailable     SigproxyCredentialsUnavailable no
    │   │                                      (a permanent cause: none in the chain, STS AccessDenied...)
    │   └── CredentialsTemporarilyUnavailable
    │                                   503    credentials_unavailable     SigproxyCredentialsTemporarilyUnavailable yes
    │                                          (STS or the credential source unreachable, throttling, 5xx)
    ├── TooManyConnections              503    too_many_connections        SigproxyTooManyConnections   yes
    │                                          (at accept: a connection limit; answered before any request)
    └── UpstreamError (ConnectionError) 502    upstream_error              SigproxyUpstreamError        yes
        ├── UpstreamClosed              502    upstream_error              SigproxyUpstreamError        yes
        │                                      (closed or reset before a byte of the response: the one
        │                                      failure sigproxy itself may send a request again after)
        └── UpstreamTimeout (TimeoutError) 504 upstream_timeout            SigproxyUpstreamTimeout      yes

    The AWS code (``aws_code``) is what an SDK or the AWS CLI shows (``An error occurred
    (SigproxyHostNotAllowed) when calling the ListBuckets operation: ...``) when the error is answered in the
    request's AWS protocol (:mod:`sigproxy.awserrors`); codes are a fixed interface, never renamed. "retried":
    whether botocore retries the status, in both its retry modes unless said (``botocore/data/_retry.json``
    for ``legacy``, the default of the AWS CLI v1 and boto3: 429, 500, 502, 503, 504, 509; ``standard``
    (``botocore/retries/standard.py``): 500, 502, 503, 504 and throttling codes). 400, 403, 407, 408, 413
    and 501 are retried by neither: a retry cannot fix them.

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
    "CredentialsTemporarilyUnavailable",
    "TransferCodingNotImplemented",
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
    "UpstreamClosed",
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
    """An error the proxy answers itself, with an ``X-Sigproxy-Error: <code>`` header; the body is in the
    request's AWS protocol with ``aws_code`` as its error code, or sigproxy's JSON when no protocol is known."""

    status: int = 500
    code: str = "internal_error"
    aws_code: str = "SigproxyInternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(SigproxyError):
    status = 400
    code = "bad_request"
    aws_code = "SigproxyBadRequest"


class UnresolvableTarget(BadRequest):
    """The service or region to sign for could not be worked out."""

    code = "unresolvable_target"
    aws_code = "SigproxyUnresolvableTarget"


class UnsupportedRequest(BadRequest):
    """A request shape sigproxy does not sign (yet); refused rather than forwarded unsigned."""

    code = "unsupported_request"
    aws_code = "SigproxyUnsupportedRequest"


class Forbidden(SigproxyError):
    status = 403
    code = "forbidden"
    aws_code = "SigproxyForbidden"


class HostNotAllowed(Forbidden):
    """The target is not in the selected connection's ``hosts``."""

    code = "host_not_allowed"
    aws_code = "SigproxyHostNotAllowed"


class PolicyRefused(Forbidden):
    """The connection's policy (services, regions, methods, x-amz headers) does not allow the request."""

    code = "policy_refused"
    aws_code = "SigproxyPolicyRefused"


class AddressNotAllowed(Forbidden):
    """The target is, or resolves to, a loopback/link-local/private/unspecified address nobody named."""

    code = "address_not_allowed"
    aws_code = "SigproxyAddressNotAllowed"


class ClientNotAllowed(Forbidden):
    """The client's address is outside the listener's ``clients`` networks."""

    code = "client_not_allowed"
    aws_code = "SigproxyClientNotAllowed"


class ClientSignatureInvalid(Forbidden):
    """The client's own SigV4 signature (made with a connection's ``client_secret``) does not verify."""

    code = "client_signature_invalid"
    aws_code = "SigproxyClientSignatureInvalid"


class ProxyAuthRequired(SigproxyError):
    """No connection could be selected for the request."""

    status = 407
    code = "no_connection"
    aws_code = "SigproxyNoConnection"


class BadProxyToken(ProxyAuthRequired):
    """The connection requires a token and the request's was missing or wrong."""

    code = "bad_proxy_token"
    aws_code = "SigproxyBadProxyToken"


class BodyTimeout(SigproxyError):
    """The client sent nothing for ``body_timeout`` seconds while its request body was read; the request is
    abandoned (nothing half-sent is forwarded as if complete) and the connection closed."""

    status = 408
    code = "body_timeout"
    aws_code = "SigproxyBodyTimeout"


class BodyTooLarge(SigproxyError):
    status = 413
    code = "body_too_large"
    aws_code = "SigproxyBodyTooLarge"


class TooManyAuthFailures(SigproxyError):
    """This client address failed authentication too often; it must wait for the window to pass."""

    status = 429
    code = "too_many_auth_failures"
    aws_code = "SigproxyTooManyAuthFailures"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransferCodingNotImplemented(SigproxyError):
    """A request's Transfer-Encoding names a coding besides chunked, which sigproxy does not decode
    (RFC 9112 6.1: 501)."""

    status = 501
    code = "unsupported_transfer_coding"
    aws_code = "SigproxyUnsupportedTransferCoding"


class ClientAborted(SigproxyError, ConnectionError):
    """The client went away mid-upload; the upstream request is abandoned and nothing can be answered."""

    status = 499
    code = "client_aborted"
    aws_code = "SigproxyClientAborted"


# STS error codes a later attempt can get past (throttling, STS's own failures): botocore's throttling and
# transient codes (botocore/retries/standard.py) and STS's documented 5xx and IdP errors (AssumeRole* API
# references). Any other STS code (AccessDenied, InvalidClientTokenId, ValidationError, ...) is permanent.
_TRANSIENT_STS_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "RequestTimeout", "RequestTimeoutException", "InternalFailure", "InternalError", "InternalServerError",
    "ServiceUnavailable", "ServiceUnavailableException", "IDPCommunicationError",
})


class CredentialsUnavailable(SigproxyError):
    """The connection's credentials could not be obtained for a reason a retry does not fix (none in the
    chain, STS refused: ``AccessDenied``, ``InvalidClientTokenId``, a malformed role ARN...). ``sts_code`` is
    STS's error code, if it gave one. :meth:`from_sts` picks this class or the transient one by the code."""

    status = 403
    code = "credentials_unavailable"
    aws_code = "SigproxyCredentialsUnavailable"
    transient = False

    def __init__(self, message: str, *, sts_code: str | None = None, sts_message: str | None = None) -> None:
        super().__init__(message)
        self.sts_code = sts_code
        self.sts_message = sts_message

    @staticmethod
    def from_sts(message: str, *, sts_code: str | None, sts_message: str | None = None,
                 transient: bool | None = None) -> CredentialsUnavailable:
        """The error for an STS (or credential source) failure: :class:`CredentialsTemporarilyUnavailable`
        when ``transient`` says so, or (``transient`` is ``None``) when ``sts_code`` is a throttling or
        service-side code; else :class:`CredentialsUnavailable`."""
        if transient is None:
            transient = sts_code in _TRANSIENT_STS_CODES
        cls = CredentialsTemporarilyUnavailable if transient else CredentialsUnavailable
        return cls(message, sts_code=sts_code, sts_message=sts_message)


class CredentialsTemporarilyUnavailable(CredentialsUnavailable):
    """The credentials could not be obtained for now: STS or the credential source is unreachable, timed
    out, throttled or failed on its side. 503, so SDKs retry; the snake code stays ``credentials_unavailable``."""

    status = 503
    aws_code = "SigproxyCredentialsTemporarilyUnavailable"
    transient = True


class TooManyConnections(SigproxyError):
    """``max_connections`` or ``max_connections_per_client`` is reached; the new connection is refused."""

    status = 503
    code = "too_many_connections"
    aws_code = "SigproxyTooManyConnections"


class UpstreamError(SigproxyError, ConnectionError):
    """The upstream could not be reached or broke the exchange."""

    status = 502
    code = "upstream_error"
    aws_code = "SigproxyUpstreamError"


class UpstreamClosed(UpstreamError):
    """The upstream closed or reset the connection before a byte of the response came. On a kept-alive
    connection this is the race RFC 9112 9.3.1 lets a client recover from (the upstream closed the idle
    connection as the request went out): an idempotent request (RFC 9110 9.2.2: sending it twice has the effect
    of sending it once) whose body can be sent again goes once more, on a new connection
    (:mod:`sigproxy.forwarding`). Any other failure -- a timeout (the upstream may still be acting on the
    request), a malformed, partial or interim response, a body that failed -- is never retried."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    status = 504
    code = "upstream_timeout"
    aws_code = "SigproxyUpstreamTimeout"


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
