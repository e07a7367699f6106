"""deploy/grafana/sigproxy-dashboard.json: importable (Grafana's classic dashboard JSON model: uid, title, panels
with unique ids, every datasource through the declared ``DS_PROMETHEUS`` input, every ``$variable`` declared),
and every PromQL query in it names metrics and labels that a real ``sigproxy run`` exports on ``/metrics``.

The queries are parsed with promql-parser (a PromQL parser, Rust bindings; Prometheus 2.45 grammar); the
exported names come from the process's own ``/metrics`` after a served request, a refused one and a credential
fetch, parsed with prometheus_client's exposition parser -- no list of names is written down here.
"""

from __future__ import annotations

import copy
import json
import os
import re
import urllib.request
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, Proxy, _start_proxy, moto_config
from tests.integration.test_credentials import tenant
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto

DASHBOARD = ROOT / "deploy/grafana/sigproxy-dashboard.json"
# Labels Prometheus itself attaches to every scraped series (its target labels), not sigproxy.
TARGET_LABELS = frozenset({"instance", "job"})
# Variables Grafana defines on every dashboard (https://grafana.com/docs/grafana/latest/dashboards/variables/
# add-template-variables/#global-variables).
GRAFANA_GLOBALS = frozenset({"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s",
                             "__range_ms", "__dashboard", "__from", "__to", "__org", "__user", "timeFilter"})
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.*),\s*)?(\w+)\)$")

Exported = dict[str, frozenset[str]]
"""Sample name (``..._total``, ``..._bucket`` included) -> the label names seen on it."""


def exported_metrics(text: str) -> Exported:
    """Every sample name in an exposition text with the union of its label names."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(names) for name, names in labels.items()}


@pytest.fixture(scope="module")
def exported(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """What a real sigproxy exports after a served request (a credential fetch first), and a refused one."""
    tmp = tmp_path_factory.mktemp("dashboard")
    config = tmp / "sigproxy.toml"
    # main: static keys (default); tenant: AssumeRole from main (a credential fetch); broken: a refused one.
    config.write_text(moto_config(moto) + tenant(moto, base="main")
                      + tenant(moto, name="broken", base="main", external_id="wrong"))
    proxy: Proxy = _start_proxy(config, {**os.environ, "STATE_DIRECTORY": str(tmp / "state")},
                                ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--workers", "1"])
    try:
        served = curl(proxy, "-H", "X-Sigproxy-Service: s3", f"{moto.endpoint}/{moto.bucket}")
        assert status_of(served) == 200, served.stdout
        put = curl(proxy, "-H", "X-Sigproxy-Service: s3", "-X", "PUT", "--data-binary", "dashboard bytes",
                   f"{moto.endpoint}/{moto.bucket}/dashboard.txt")  # bytes up
        assert status_of(put) == 200, put.stdout
        refused = curl(proxy, f"{moto.endpoint}/{moto.bucket}")  # no service to sign for: sigproxy's own 400
        assert status_of(refused) == 400, refused.stdout
        assumed = curl(proxy, "-H", "X-Sigproxy-Connection: tenant", "-H", "X-Sigproxy-Service: s3",
                       f"{moto.endpoint}/")
        assert status_of(assumed) == 200, assumed.stdout
        failed = curl(proxy, "-H", "X-Sigproxy-Connection: broken", "-H", "X-Sigproxy-Service: s3",
                      f"{moto.endpoint}/")
        assert status_of(failed) == 403 and "SigproxyCredentialsUnavailable" in failed.stdout, failed.stdout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{proxy.admin}/metrics", timeout=15) as resp:
            text = resp.read().decode()
    finally:
        proxy.stop()
    metrics = exported_metrics(text)
    # The scrape saw what the dashboard is about (else the checks below would pass on too little).
    assert "sigproxy_requests_total" in metrics and "sigproxy_request_duration_seconds_bucket" in metrics
    assert 'status="400"' in text and 'status="200"' in text
    assert re.search(r'^sigproxy_errors_total\{connection="broken",code="credentials_unavailable"\} 1$', text,
                     re.M), text
    assert re.search(r"^sigproxy_credential_fetches_total [1-9]", text, re.M), text
    assert re.search(r"^sigproxy_credential_failures_total [1-9]", text, re.M), text
    assert 'sigproxy_connection_up{connection="broken"} 0' in text, text
    assert "sigproxy_credential_fetch_duration_seconds_bucket" in metrics
    return metrics


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Panels, those inside (collapsed) rows included."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, PromQL)`` for every panel target and every query variable's selector."""
    out = [(f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}", t["expr"])
           for p in all_panels(dashboard) for t in p.get("targets", []) if "expr" in t]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = _LABEL_VALUES.match(query.strip())
        assert m is not None, f"variable {var['name']}: only label_values(SELECTOR, LABEL) is checked: {query}"
        selector, label = m.group(1), m.group(2)
        assert selector, f"variable {var['name']}: label_values without a metric selector scans every series"
        out.append((f"variable {var['name']}", f"count by ({label}) ({selector})"))
    return out


def problems_in(expr: str, exported: Exported) -> list[str]:
    """What in one PromQL expression sigproxy does not export: metric names, and label names used in selectors,
    ``by``/``without``, ``on``/``ignoring`` and ``group_left``/``group_right``. Raises ValueError when the
    expression does not parse."""
    found: list[str] = []
    ast = promql_parser.parse(expr)

    def metrics_below(node: Any) -> list[str]:
        names: list[str] = []

        def visit(n: Any) -> None:
            if isinstance(n, promql_parser.VectorSelector) and n.name:
                names.append(n.name)

        promql_parser.walk(node, visit)
        return names

    def labels_of(names: list[str]) -> frozenset[str]:
        return frozenset().union(*(exported.get(n, frozenset()) for n in names)) | TARGET_LABELS

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name is None:
                found.append("a selector without a metric name")
                return
            if node.name not in exported:
                found.append(f"metric {node.name} is not exported")
                return
            for matcher in node.matchers.matchers:
                if matcher.name not in labels_of([node.name]) | {"__name__"}:
                    found.append(f"{node.name} has no label {matcher.name}")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            have = labels_of(metrics_below(node.expr))
            found.extend(f"{node.op} by/without ({label}): no metric below has it"
                         for label in node.modifier.labels if label not in have)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            have = labels_of(metrics_below(node))
            wanted = [*(node.modifier.matching.labels if node.modifier.matching else []),
                      *(node.modifier.group_labels or [])]
            found.extend(f"on/ignoring/group ({label}): no metric has it" for label in wanted if label not in have)

    promql_parser.walk(ast, visit)
    return found


def test_every_query_names_what_sigproxy_exports(exported: Exported) -> None:
    all_queries = queries(load_dashboard())
    assert len(all_queries) >= 20
    problems = []
    used: set[str] = set()
    for where, expr in all_queries:
        try:
            problems += [f"{where}: {p}" for p in problems_in(expr, exported)]
        except ValueError as exc:
            problems.append(f"{where}: does not parse: {exc}")
        used.update(n for n in re.findall(r"sigproxy_\w+", expr))
    assert not problems, "\n".join(problems)
    # Every family sigproxy exports is on the dashboard (a histogram through its _bucket series).
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
    missing = {f for f in families if f not in used and f + "_bucket" not in used}
    assert not missing, f"exported but on no panel: {sorted(missing)}"


@pytest.mark.parametrize(("wrong", "expected"), [
    ("sigproxy_requests_total{", "does not parse"),
    ("rate(sigproxy_request_total[5m])", "metric sigproxy_request_total is not exported"),
    ('sigproxy_requests_total{code="500"}', "sigproxy_requests_total has no label code"),
    ("sum by (error) (rate(sigproxy_requests_total[5m]))", "by/without (error): no metric below has it"),
    ("histogram_quantile(0.5, sum by (le) (rate(sigproxy_request_duration_seconds[5m])))",
     "metric sigproxy_request_duration_seconds is not exported"),
])
def test_the_check_finds_a_wrong_query(exported: Exported, tmp_path: Path, wrong: str, expected: str) -> None:
    """The same check on a copy of the dashboard with one query broken reports it."""
    dashboard = load_dashboard()
    broken = copy.deepcopy(dashboard)
    panel = next(p for p in all_panels(broken) if p.get("targets"))
    panel["targets"][0]["expr"] = wrong
    problems = []
    for where, expr in queries(broken):
        try:
            problems += [f"{where}: {p}" for p in problems_in(expr, exported)]
        except ValueError as exc:
            problems.append(f"{where}: does not parse: {exc}")
    where = f"panel {panel['id']} {panel['title']!r} target {panel['targets'][0]['refId']}: "
    assert problems and all(p.startswith(where) for p in problems), problems
    assert any(expected in p for p in problems), problems


def structure_problems(dashboard: dict[str, Any]) -> list[str]:
    """What would stop Grafana importing the dashboard through its Import page, or leave a panel unbound."""
    found = []
    for key in ("uid", "title"):
        if not isinstance(dashboard.get(key), str) or not dashboard[key].strip():
            found.append(f"no {key}")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", str(dashboard.get("uid", ""))):
        found.append("uid must be 1-40 letters, digits, - or _")
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        found.append("schemaVersion is missing or older than Grafana 9")
    inputs = {i.get("name"): i for i in dashboard.get("__inputs", [])}
    if inputs.get("DS_PROMETHEUS", {}).get("pluginId") != "prometheus" or \
            inputs["DS_PROMETHEUS"].get("type") != "datasource":
        found.append("no __inputs DS_PROMETHEUS of type datasource for prometheus")
    panels = all_panels(dashboard)
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)) or not all(isinstance(i, int) for i in ids):
        found.append(f"panel ids must be unique integers: {ids}")
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    for panel in panels:
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")) or grid["x"] + grid["w"] > 24:
            found.append(f"{where}: gridPos x/y/w/h must be integers within 24 columns")
        if panel.get("type") == "row":
            continue
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if not refs or len(refs) != len(set(refs)):
            found.append(f"{where}: targets need unique refIds")
        for holder in (panel, *panel.get("targets", [])):
            ds = holder.get("datasource")
            if ds != {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}:
                found.append(f"{where}: datasource {ds!r} is not the DS_PROMETHEUS input")
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query" and var.get("datasource") != {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}:
            found.append(f"variable {var['name']}: datasource is not the DS_PROMETHEUS input")
    # Every ${NAME} / $name anywhere is an input, a variable or one of Grafana's own.
    for text in re.findall(r'"((?:[^"\\]|\\.)*)"', json.dumps(dashboard)):
        for m in _VARIABLE.finditer(text):
            name = m.group(1) or m.group(2)
            if name not in inputs and name not in variables and name not in GRAFANA_GLOBALS:
                found.append(f"${name} (in {text[:60]!r}) is neither an input nor a variable")
    return found


def test_the_dashboard_is_importable() -> None:
    dashboard = load_dashboard()
    assert structure_problems(dashboard) == []
    assert {"instance", "connection"} <= {v["name"] for v in dashboard["templating"]["list"]}


@pytest.mark.parametrize("breakage", ["duplicate id", "own datasource", "unknown variable", "no uid"])
def test_the_structure_check_finds_breakage(breakage: str) -> None:
    dashboard = load_dashboard()
    panels = [p for p in dashboard["panels"] if p.get("targets")]
    if breakage == "duplicate id":
        panels[1]["id"] = panels[0]["id"]
    elif breakage == "own datasource":
        panels[0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    elif breakage == "unknown variable":
        panels[0]["targets"][0]["expr"] = 'sigproxy_open_tunnels{instance=~"$host"}'
    else:
        del dashboard["uid"]
    assert structure_problems(dashboard), breakage


def test_the_readme_says_where_it_is() -> None:
    operations = (ROOT / "README.md").read_text().split("## Operations", 1)[1].split("\n## ", 1)[0]
    assert "deploy/grafana/sigproxy-dashboard.json" in operations

