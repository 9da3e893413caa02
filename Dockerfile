# syntax=docker/dockerfile:1
# A messenger node image. In containers PostgreSQL and Redis are separate services, so the image
# carries no embedded servers (no `embedded` extra) and the entrypoint refuses to start unless
# MESSENGER_DATABASE_URL and MESSENGER_REDIS_URL are both set. See docker-compose.cluster.yml.
#
#   docker build -t messenger-node .
#   docker run -e MESSENGER_DATABASE_URL=postgresql://... -e MESSENGER_REDIS_URL=redis://... \
#              -e MESSENGER_JWT_SECRET=... -p 8080:8080 messenger-node

# --- builder: a venv with the runtime dependencies ------------------------------------------------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
RUN python -m venv /opt/venv
# Only pyproject.toml first, so the dependency layer is rebuilt only when dependencies change.
# Every dependency ships manylinux wheels for 3.11; add build-essential here if one ever doesn't.
COPY pyproject.toml constraints.txt ./
# The project's base dependencies only (no extras), at the versions the lock pins. The project
# itself is not pip-installed: the final stage runs the source tree from /app (node/migrations
# there links to migrations/, copied beside it).
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && /opt/venv/bin/pip install -c constraints.txt -r requirements.txt

# --- final: the venv plus the source, run as a non-root user --------------------------------------
# Same base image as the builder, so the venv's interpreter symlinks stay valid.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MESSENGER_HOST=0.0.0.0 \
    MESSENGER_PORT=8080 \
    MESSENGER_DATA_DIR=/data
# /data holds media (and anything else the node keeps in its data dir); give it to the node's user
# so a named volume mounted there starts out writable.
RUN groupadd --system --gid 10001 messenger \
 && useradd --system --uid 10001 --gid messenger --no-create-home --home-dir /app \
            --shell /usr/sbin/nologin messenger \
 && mkdir -p /data \
 && chown messenger:messenger /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Code stays owned by root: the node's user can read it but not change it.
COPY node/ node/
COPY migrations/ migrations/
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/messenger-entrypoint
RUN python -m compileall -q node
USER messenger
EXPOSE 8080
# No curl in slim images: urllib raises (exit 1) on a refused connection or a non-2xx answer,
# and /healthz answers 503 when PostgreSQL or Redis is unreachable.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MESSENGER_PORT', '8080'), timeout=3)"]
ENTRYPOINT ["messenger-entrypoint"]
CMD ["serve"]
