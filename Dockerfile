# syntax=docker/dockerfile:1
# One image for every Litho service: `python -m services.<name>` (the Helm
# chart in deploy/helm/litho runs each component with its own argument).
#
#   docker build -t registry.example.com/litho:0.1.0 .
#   docker run --rm registry.example.com/litho:0.1.0 services.gateway
#
# Stages: `python-deps` (the runtime dependencies in a virtualenv and the
# generated gRPC code; no compilers, buf or dev tools reach the runtime),
# `web-deps` (the browser libraries the gateway serves, from npm with the
# lockfile), `runtime` (Debian's Chromium and fonts, non-root uid 10001).
# Nothing secret is baked in: every setting comes from the environment.

ARG PYTHON_IMAGE=python:3.11-slim-trixie
ARG NODE_IMAGE=node:22-trixie-slim

FROM ${PYTHON_IMAGE} AS python-deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The [project] dependencies alone (not the dev extras), in their own layer:
# it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY proto ./proto
COPY litho ./litho
COPY services ./services
# `make proto`, less the type stubs (mypy's plugins are dev tools).
RUN find proto -name '*.proto' -print0 \
  | xargs -0 python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=.

FROM ${NODE_IMAGE} AS web-deps
WORKDIR /web
COPY package.json package-lock.json ./
# Only the libraries served under /assets/vendor/ (buf is a devDependency);
# no install scripts run.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${PYTHON_IMAGE} AS runtime
# Chromium and a font for every script the renderer checks at start-up
# (services/renderer/_fonts_check.py), from Debian; tini reaps Chromium's
# orphaned processes and forwards SIGTERM. Not pinned: Debian's security
# updates (Chromium's above all) must reach each rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      chromium fontconfig fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji tini \
 && rm -rf /var/lib/apt/lists/* \
 && fc-cache -f \
 && groupadd --system --gid 10001 litho \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin litho \
 && mkdir -p /data && chown 10001:10001 /data
COPY --from=python-deps /opt/venv /opt/venv
COPY --from=python-deps /src/litho /app/litho
COPY --from=python-deps /src/services /app/services
COPY web /app/web
COPY --from=web-deps /web/node_modules/grapesjs/dist /app/node_modules/grapesjs/dist
COPY --from=web-deps /web/node_modules/swagger-ui-dist /app/node_modules/swagger-ui-dist
# Bytecode compiled now (pip compiled the dependencies): the root filesystem
# is read-only in the cluster.
RUN /opt/venv/bin/python -m compileall -q -j 0 /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LITHO_DATA_DIR=/data \
    LITHO_CHROMIUM_PATH=/usr/bin/chromium \
    LITHO_GATEWAY_WEB_DIR=/app/web \
    LITHO_GATEWAY_NODE_MODULES_DIR=/app/node_modules
WORKDIR /app
USER 10001:10001
EXPOSE 8080 50051 50052 50053 50054 50055
ENTRYPOINT ["/usr/bin/tini", "--", "python", "-m"]
CMD ["services.gateway"]
