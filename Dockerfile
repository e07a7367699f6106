# syntax=docker/dockerfile:1
# sigproxy's container image.
#
#   docker build -t sigproxy:0.1.0 .
#   docker run --rm -v "$PWD/sigproxy.toml:/etc/sigproxy/config.toml:ro" -p 127.0.0.1:8080:8080 sigproxy:0.1.0
#
# The config is a mounted file (/etc/sigproxy/config.toml); nothing is baked in. Published ports only work
# when the config listens on 0.0.0.0 (the default listen address is loopback, which is what a Kubernetes
# sidecar wants: containers in a Pod share one network namespace). The CA for HTTPS interception is created
# on first start in $STATE_DIRECTORY=/var/lib/sigproxy, a volume; `sigproxy ca --bundle PATH` writes the trust
# bundle for clients. Example Pod: deploy/kubernetes/. Lint (no Docker engine needed): scripts/lint-deploy.sh.
#
# The base image is pinned by tag only: it was written where no container registry was reachable, so no
# digest could be looked up. For reproducible builds pin it by digest as well, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- builder: wheels for sigproxy and its deps
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# A C compiler for sigproxy's compiled modules (setup.py builds them with mypyc; the image has Python's headers).
# Only this stage has it: the final one gets the wheels. Not pinned: Debian stable's gcc, whichever point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY sigproxy ./sigproxy
# Every dependency ships binary wheels for CPython 3.11 on amd64 and arm64: only sigproxy's own are compiled.
RUN pip wheel --wheel-dir /wheels .

# ---------------------------------------------------------------- final: the wheels installed, nothing else
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sigproxy" \
      org.opencontainers.image.description="An async SigV4 signing proxy" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STATE_DIRECTORY=/var/lib/sigproxy

# pipefail: the check that the compiled modules were built reads `sigproxy version` through a pipe.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The wheels are bind-mounted from the builder, so they never become a layer of this image. pip compiles the
# installed modules once here; at run time nothing is written to the (possibly read-only) root filesystem.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/sigproxy-*.whl \
 && groupadd --system --gid 10001 sigproxy \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sigproxy --no-create-home \
            --shell /usr/sbin/nologin sigproxy \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/sigproxy \
 && install -d -m 0755 /etc/sigproxy \
 && sigproxy version | grep -F "compiled (mypyc"

# The CA (ca-cert.pem, ca-key.pem 0600) and spooled request bodies live here.
VOLUME ["/var/lib/sigproxy"]
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# 8080: the forward proxy ([proxy] listen); 9901: the admin listener ([proxy] admin_listen) with /healthz,
# /readyz, /health/connections and /metrics.
EXPOSE 8080 9901

# No curl in a slim image: Python's urllib, with proxies from the environment ignored. It assumes the admin
# listener is reachable on 127.0.0.1:9901 (the default, or 0.0.0.0:9901). Kubernetes ignores HEALTHCHECK: the
# example manifest has its own probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:9901/healthz', timeout=4)"]

# SIGTERM (the default stop signal) drains requests in flight for up to [proxy] drain_seconds: give
# `docker stop --time` / terminationGracePeriodSeconds more than that.
ENTRYPOINT ["sigproxy"]
CMD ["run", "-c", "/etc/sigproxy/config.toml"]
