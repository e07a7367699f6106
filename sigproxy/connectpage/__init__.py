"""The customer's connect page (issue 14): the page a platform sends each end customer to, served on the admin
listener under ``/connect``. It shows the ExternalId and trust policy of a connect session, how to create the
role (CloudFormation quick-create, the template, AWS CLI commands), and takes the role ARN and region; submit
validates through :class:`sigproxy.sessions.ConnectSessions` (AssumeRole with the ExternalId, then
GetCallerIdentity).

::

    browser ─► admin listener ─► /connect sub-app (views.py) ─► ConnectSessions (sigproxy/sessions.py) ─► store, STS
                                      │
                                      └─ security.py: CSP and friends on every response, CSRF, Origin

Server-rendered with Jinja2 (autoescape on) through aiohttp-jinja2; ``static/`` holds the hand-written CSS
and the copy buttons' few lines of JavaScript; nothing comes from another origin.

Must not: log a session token, put any secret on the page beyond the token already in the URL, or serve
anything under ``/v1``.
"""

from __future__ import annotations

from .views import MAX_FORM, add_connect_page

__all__ = ["MAX_FORM", "add_connect_page"]
