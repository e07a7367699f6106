"""Where uvloop can't be imported (no wheels on Windows, other Pythons), ``sigproxy run`` serves on asyncio's
default loop and says so in its log; where it can, it says uvloop (sigproxy.eventloop decides)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Proxy, moto_config
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto


def _loop_line(proxy: Proxy) -> str:
    """The ``event loop: ...`` message the process logged (its log is JSON lines)."""
    out = proxy.written('"msg":"event loop: ')
    return next(str(json.loads(line)["msg"]) for line in out.splitlines() if '"msg":"event loop: ' in line)


@pytest.mark.parametrize("uvloop_importable", [False, True], ids=["without-uvloop", "with-uvloop"])
def test_serves_on_the_loop_it_names(uvloop_importable: bool, tmp_path: Path, moto: Moto,
                                     sigproxy_factory: Callable[..., Proxy]) -> None:
    env: dict[str, str] = {}
    if not uvloop_importable:
        # A `uvloop` first on the path that fails to import, as an install without uvloop's wheels would.
        (tmp_path / "hide").mkdir()
        (tmp_path / "hide" / "uvloop.py").write_text('raise ImportError("no uvloop on this platform (test)")\n')
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path / "hide"), os.environ.get("PYTHONPATH")]))
    proxy = sigproxy_factory(moto_config(moto), env=env)

    result = curl(proxy, "-H", "X-Sigproxy-Service: s3", f"{moto.endpoint}/{moto.bucket}")
    assert status_of(result) == 200, result.stdout + result.stderr
    assert "<ListBucketResult" in result.stdout

    line = _loop_line(proxy)
    if uvloop_importable:
        assert "event loop: uvloop" in line
    else:
        assert "event loop: asyncio's default loop (uvloop not importable: no uvloop on this platform (test))" \
            in line
