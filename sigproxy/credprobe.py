"""At start-up, say once which connections can get no credentials from the AWS chain, and what to do.

Without it, a first-time user with no AWS credentials sees the proxy start and then a 502 on every request.
Only the chain is probed: static keys are resolved when the config is loaded (a missing ``${env:...}`` or
``${file:...}`` stops ``sigproxy run`` with exit code 2), and the STS-based sources' own calls need their base
(``base = "chain"``: the default chain, probed here) plus a role that only a real call can prove.

The probe runs after the listeners are up, as a task of the server: the chain may try IMDS, which takes
seconds where there is no instance metadata service. It shares nothing with the proxy's credential cache
(a failure here never delays a later fetch) and never logs a credential, only whether one was found.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .connection import ConnectionConfig
from .credentials import _Chain  # the chain the proxy signs with: the same lookup, not a second one
from .errors import CredentialsUnavailable

__all__ = ["ADVICE", "chain_profiles", "warn_missing_credentials"]

logger = logging.getLogger(__name__)

ADVICE = ('set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, in sigproxy\'s environment '
          '(README "Credentials"), or try `make demo` for a local demo that needs no AWS account')
"""What the warning tells the operator to do."""

_NAMED = 5  # connections named in one warning; more are counted ("and 3 more"): a store may hold thousands


def chain_profiles(connections: Mapping[str, ConnectionConfig]) -> dict[str | None, list[str]]:
    """Which connections rest on which AWS chain: ``{profile or None (the default chain): [connection names]}``.

    ``source = "chain"`` uses its ``profile``; ``assume_role`` with ``base = "chain"`` and ``web_identity``
    never (web identity reads its token file) -- only the former rests on the default chain. Pure.
    """
    profiles: dict[str | None, list[str]] = {}
    for conn in connections.values():
        c = conn.credentials
        if c.source == "chain":
            profiles.setdefault(c.profile, []).append(conn.name)
        elif c.source == "assume_role" and c.base == "chain":
            profiles.setdefault(None, []).append(conn.name)
    return profiles


async def warn_missing_credentials(connections: Mapping[str, ConnectionConfig]) -> int:
    """Resolve each AWS chain the connections use (once per profile) and log one warning for each chain that
    finds no credentials, naming its connections and :data:`ADVICE`. Returns the number of warnings.

    Never raises (a failed probe is logged at debug level): the server's task group must not stop for it.
    Cancellable (the server cancels it when it stops).
    """
    warnings = 0
    for profile, names in chain_profiles(connections).items():
        try:
            await _Chain(names[0], profile).fetch()
        except CredentialsUnavailable as exc:
            reason = exc.message.split(": ", 1)[1] if exc.message.startswith("connection ") else exc.message
            reason = reason.split("; ", 1)[0]  # the error's own advice: ADVICE below says it, and more
            shown = ", ".join(repr(n) for n in names[:_NAMED])
            more = f" (and {len(names) - _NAMED} more)" if len(names) > _NAMED else ""
            which = "connection" if len(names) == 1 else "connections"
            chain = f"profile {profile!r}" if profile else "the default AWS chain"
            logger.warning("%s %s%s: no credentials at start-up: %s (%s); requests through it fail until there "
                           "are some: %s", which, shown, more, reason, chain, ADVICE)
            warnings += 1
        except Exception:  # a probe must never stop the server
            logger.debug("credential probe for %s failed", names, exc_info=True)
    return warnings
