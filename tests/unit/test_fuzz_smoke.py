"""A short bounded run of every pure fuzz target (fuzz/): the same strategies and properties as
``make fuzz``, a few hundred examples each."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz import authorization, chunked, config_loader, routing_parsers, sts_answer, upstream_response
from fuzz.engine import Target, fuzz

TARGETS = {t.name: t for t in [*chunked.TARGETS, *config_loader.TARGETS, *sts_answer.TARGETS,
                               *routing_parsers.TARGETS, *authorization.TARGETS, *upstream_response.TARGETS]}
EXAMPLES = {"config": 200, "inbound_request": 200, "authorization": 300, "upstream_response": 150}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_smoke(name: str) -> None:
    target = TARGETS[name]
    assert target.check is not None

    @settings(max_examples=EXAMPLES.get(name, 300), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def run(value: Any) -> None:
        target.check(value)  # type: ignore[misc]

    run()


def test_engine_reports_and_saves_a_finding(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hypothesis import strategies as st

    from fuzz import engine

    monkeypatch.setattr(engine, "CRASH_DIR", tmp_path)

    def check(n: int) -> str:
        if n > 5:
            raise KeyError(n)
        return "small"

    stats = fuzz(Target("demo", st.integers(0, 100), check), 2.0, batch=200, log=lambda _: None)
    assert stats.executions > 0
    [finding] = stats.findings.values()
    assert finding.signature.startswith("KeyError@")
    assert finding.input == 6  # shrunk
    assert finding.path is not None and finding.path.exists()
