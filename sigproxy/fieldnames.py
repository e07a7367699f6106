"""HTTP field names a request's headers are looked up by, as :class:`multidict.istr` constants.

Owns: the names sigproxy looks up in a client's headers (a :class:`multidict.CIMultiDict`) on every request.
Must not: hold anything else (a name looked up on errors only may stay a plain string where it is used).

Why ``istr``: a case-insensitive multidict looks a key up by its case-folded form, which it works out for a
plain ``str`` at every look-up and takes ready-made from an ``istr`` (multidict 6: 48 against 87 ns a ``get``
here, about fifteen look-ups a request; issue 15). aiohttp's ``hdrs`` module keeps its names so for the same
reason. An ``istr`` is a ``str``: equal to, hashed as and printed as the name as written here (RFC 9110 5.1:
field names are case-insensitive; these are spelled as the RFCs and AWS's documentation spell them).
"""

from __future__ import annotations

from typing import Final

from multidict import istr

__all__ = [
    "AUTHORIZATION", "CONTENT_LENGTH", "EXPECT", "HOST", "PROXY_AUTHORIZATION", "TRANSFER_ENCODING", "UPGRADE",
    "X_AMZ_CONTENT_SHA256", "X_AMZ_REGION_SET", "X_SIGPROXY_CONNECTION", "X_SIGPROXY_REGION", "X_SIGPROXY_SERVICE",
    "X_SIGPROXY_USER",
]

AUTHORIZATION: Final = istr("Authorization")
CONTENT_LENGTH: Final = istr("Content-Length")
EXPECT: Final = istr("Expect")
HOST: Final = istr("Host")
PROXY_AUTHORIZATION: Final = istr("Proxy-Authorization")
TRANSFER_ENCODING: Final = istr("Transfer-Encoding")
UPGRADE: Final = istr("Upgrade")
X_AMZ_CONTENT_SHA256: Final = istr("X-Amz-Content-SHA256")
X_AMZ_REGION_SET: Final = istr("X-Amz-Region-Set")
X_SIGPROXY_CONNECTION: Final = istr("X-Sigproxy-Connection")
X_SIGPROXY_REGION: Final = istr("X-Sigproxy-Region")
X_SIGPROXY_SERVICE: Final = istr("X-Sigproxy-Service")
X_SIGPROXY_USER: Final = istr("X-Sigproxy-User")
