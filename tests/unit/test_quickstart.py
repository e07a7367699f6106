"""The pure parts of the quick start: which connections the start-up probe covers, and the demo's config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sigproxy.config import loads
from sigproxy.credprobe import chain_profiles

ROOT = Path(__file__).resolve().parents[2]


def _conn(name: str, credentials: str) -> str:
    return f'[connections.{name}]\nhosts = ["*.amazonaws.com"]\n[connections.{name}.credentials]\n{credentials}\n'


def test_chain_profiles_groups_connections_by_chain() -> None:
    """Chain connections by profile, assume_role on the default chain with them; static and chained roles not."""
    config = loads("\n".join([
        _conn("a", 'source = "chain"'),
        _conn("b", 'source = "chain"\nprofile = "dev"'),
        _conn("c", 'source = "assume_role"\nrole_arn = "arn:aws:iam::123456789012:role/r"'),
        _conn("d", 'source = "assume_role"\nrole_arn = "arn:aws:iam::123456789012:role/r"\nbase = "c"'),
        _conn("e", 'source = "static"\naccess_key_id = "AKID"\nsecret_access_key = "s"'),
        _conn("f", 'source = "chain"\nprofile = "dev"'),
    ]))
    assert chain_profiles(config.connections) == {None: ["a", "c"], "dev": ["b", "f"]}


def _demo() -> object:
    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts/demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_config_references_keys_and_signs_only_for_the_emulator(tmp_path: Path) -> None:
    """The demo's config loads; its keys come from files (not in the text); it signs for the emulator only."""
    demo = _demo()
    (tmp_path / "access_key_id").write_text("AKIADEMO")
    (tmp_path / "secret_access_key").write_text("demo-secret")
    text = demo._config(tmp_path, "127.0.0.1:0", moto_endpoint="http://127.0.0.1:4566",  # type: ignore[attr-defined]
                        moto_tls_endpoint="https://127.0.0.1:4567", moto_ca_file="/tmp/moto-ca.pem", region="us-east-1")
    assert "AKIADEMO" not in text and "demo-secret" not in text
    config = loads(text)
    conn = config.connections["demo"]
    assert conn.credentials.access_key_id == "AKIADEMO"
    assert conn.credentials.secret_access_key is not None
    assert conn.credentials.secret_access_key.reveal() == "demo-secret"
    assert conn.hosts == ("127.0.0.1:4566", "127.0.0.1:4567")
    assert config.proxy.connect_ports == (4567,)
    assert config.proxy.default_connection == "demo"
    assert config.proxy.admin_listen is None


def test_demo_paste_lines() -> None:
    """Three lines: placeholder keys selecting the demo connection, S3 make-bucket and list, STS."""
    lines = _demo().paste_lines("http://127.0.0.1:8080", "http://127.0.0.1:4566",  # type: ignore[attr-defined]
                                "https://127.0.0.1:4567", "/tmp/d/ca-bundle.pem", "us-east-1")
    assert len(lines) == 3
    assert ("export HTTP_PROXY=http://127.0.0.1:8080 HTTPS_PROXY=http://127.0.0.1:8080 "
            "AWS_CA_BUNDLE=/tmp/d/ca-bundle.pem AWS_ACCESS_KEY_ID=demo") in lines[0]
    assert lines[1].startswith("aws --endpoint-url http://127.0.0.1:4566 s3 mb ")
    assert lines[2] == "aws --endpoint-url https://127.0.0.1:4567 sts get-caller-identity"
