"""The test harness's own promises (tests/conftest.py): a proxy started without its admin listener fails the
test that reads ``proxy.admin``; a reload's text keeps the store off as the first start had it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import cast

import pytest

from tests.conftest import _STORE_TABLE, Proxy

STORE_OFF = '\n[store]\nurl = ""\n'


def _proxy(config: Path, *, admin_url: str | None = None, store_off: str = "") -> Proxy:
    return Proxy(cast("subprocess.Popen[str]", None), "http://127.0.0.1:1", [], config, admin_url=admin_url,
                 store_off=store_off)


def test_admin_without_the_listener_fails_the_test(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"sigproxy_factory\(\.\.\., admin=True\)"):
        _ = _proxy(tmp_path / "c.toml").admin
    assert _proxy(tmp_path / "c.toml", admin_url="http://127.0.0.1:2").admin == "http://127.0.0.1:2"


def test_rewrite_keeps_the_store_off(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    _proxy(config, store_off=STORE_OFF).rewrite("[proxy]\n")
    assert config.read_text() == "[proxy]\n" + STORE_OFF
    _proxy(config, store_off=STORE_OFF).rewrite('[store]\nurl = "sqlite:///x"\n')  # the text's own table
    assert config.read_text() == '[store]\nurl = "sqlite:///x"\n'
    _proxy(config).rewrite("[proxy]\n")  # started with the store: written as given
    assert config.read_text() == "[proxy]\n"


@pytest.mark.parametrize(("text", "found"), [
    ("[store]\n", True), ("  [ store ]  # c\n", True), ("[proxy]\nx = 1\n[store]\nurl = 'y'\n", True),
    ("[store.extra]\n", False), ("[stores]\n", False), ("# [store]\n", False), ("[proxy]\nstore = 1\n", False),
])
def test_store_table_is_found(text: str, found: bool) -> None:
    assert bool(_STORE_TABLE.search(text)) is found
