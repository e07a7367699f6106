"""``workers = N``: one supervisor and N worker processes serving the same listeners.

* :mod:`~sigproxy.workers.supervisor` -- binds the listeners, runs and restarts the workers, holds the admin
  listener, the credential broker and systemd's notifications.
* :mod:`~sigproxy.workers.worker` -- one worker: :func:`sigproxy.intake.server.serve` on inherited sockets.
* :mod:`~sigproxy.workers.broker` and :mod:`~sigproxy.workers.client` -- one credential fetch for the group.
* :mod:`~sigproxy.workers.wire` -- the private channel between them.

Importing this package imports none of them (``python -m sigproxy.workers.worker`` runs a worker).
"""

__all__: list[str] = []
