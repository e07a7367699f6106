"""The README's commands and config snippets are real: every `sigproxy ...` command line parses with the
CLI, every TOML block loads, and the quick start is the two make targets CI runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import trustme

from sigproxy.cli import _parser
from sigproxy.config import loads

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)
STUBS = {
    name: f'\n[connections.{name}]\nhosts = ["*.amazonaws.com"]\n[connections.{name}.credentials]\nsource = "chain"\n'
    for name in ("main", "search", "metrics")
}


def commands() -> list[str]:
    found = []
    for lang, body in BLOCKS:
        if lang != "sh":
            continue
        text = body.replace("\\\n", " ")
        for raw in text.splitlines():
            found += re.findall(r"\$\((sigproxy [^)]*)\)", raw)
            line = re.sub(r"#.*$", "", raw).strip()
            if line.startswith("sigproxy "):
                found.append(line)
    return found


def test_quick_start_is_two_make_commands() -> None:
    """The quick start block is exactly `make run` and `make test`, and .ci/run calls `make test`."""
    quick = README.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in quick.strip().splitlines()] == ["make run", "make test"]
    ci = (Path(__file__).resolve().parents[2] / ".ci/run").read_text()
    assert "make test" in ci


@pytest.mark.parametrize("command", commands())
def test_readme_commands_parse(command: str) -> None:
    """Each `sigproxy ...` command shown in the README is accepted by the command line parser."""
    argv = shlex.split(command)[1:]
    _parser().parse_args(argv)


def test_there_are_commands() -> None:
    """The README shows the CLI in use."""
    assert len(commands()) >= 3


@pytest.mark.parametrize("block", [b for lang, b in BLOCKS if lang == "toml"])
def test_readme_toml_loads(block: str, tmp_path: Path) -> None:
    """Each TOML snippet loads (with stand-in connections for the ones it only refers to, and a real file for
    the secret it reads)."""
    secret = tmp_path / "main_secret"
    secret.write_text("secret\n")
    text = block.replace("/run/secrets/main_secret", str(secret))
    if "tls_cert_file" in text:  # a listener's certificate and key are read at load: real ones, from trustme
        cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
        for path in set(re.findall(r'tls_(?:cert|key)_file = "(/etc/sigproxy/[^"]+)"', text)):
            local = tmp_path / Path(path).name
            (cert.private_key_pem if path.endswith(".key") else cert.cert_chain_pems[0]).write_to_path(str(local))
            text = text.replace(path, str(local))
    for name, stub in STUBS.items():
        if f"[connections.{name}]" not in text and f'"{name}"' in text:
            text += stub
    if "[connections." not in text:
        text += STUBS["main"]
    loads(text, env={"SIGPROXY_MAIN_TOKEN": "t", "MAIN_KEY_ID": "AKID", "MAIN_CLIENT_SECRET": "s", "HOME": "/tmp",
                      "SIGPROXY_ADMIN_TOKEN": "admin-token-0123456789"})
