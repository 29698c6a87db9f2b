# The HTTP gateway (FastAPI + uvicorn, Snowpark for the Snowflake store): CPU only, no torch, transformers,
# ctranslate2 or Ray, which live in docker/ray.Dockerfile.
#   docker build -f docker/gateway.Dockerfile -t spcs-whisper-gateway .      (context: the repo root)
# Every dependency ships as a manylinux wheel (PyAV bundles FFmpeg), so no compiler and no apt packages.
# The container starts as root only for docker/gateway-entrypoint.sh, which prepares /data and runs the gateway as
# uid/gid 1000 (see the end of this file).

# Same Python patch release as the Ray image (docker/ray.Dockerfile, PYTHON_VERSION); bookworm pins the distro.
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
# A venv, so the final stage copies one folder holding exactly what pip installed.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app

# Dependencies first, from the project's metadata alone: this layer survives code changes. The project's
# packages list matches nothing yet, so this installs an empty spcs-whisper, removed again right after.
COPY pyproject.toml README.md ./
COPY docker/constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt ".[snowflake]" \
    && pip uninstall --yes spcs-whisper \
    && rm -rf build

# Then the code, installed editable: service/storage/snowflake_ops.py finds sql/01_tables.sql relative to the
# source tree (../../sql), which a regular install into site-packages would break. Bytecode is compiled here
# because the runtime user cannot write to /app.
COPY service/ service/
COPY sql/ sql/
RUN pip install --no-cache-dir --no-deps -c /tmp/constraints.txt -e . \
    && python -m compileall -q service


FROM python:3.11.14-slim-bookworm

# Fixed UID/GID 1000, so SPCS stage volume mounts can grant it (uid/gid on the volume) and files keep one owner.
RUN groupadd --gid 1000 whisper \
    && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin whisper \
    && mkdir -p /data \
    && chown whisper:whisper /data

# The editable install points at /app, so both folders keep their build-stage paths.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY --chmod=0755 docker/gateway-entrypoint.sh /usr/local/bin/gateway-entrypoint

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SPCS_WHISPER_HOST=0.0.0.0 \
    SPCS_WHISPER_PORT=8080 \
    SPCS_WHISPER_DATA_DIR=/data
# /data holds the job queue (SQLite), uploaded audio and, with the Snowflake store, its export marks: the SPCS spec mounts
# a volume there (no VOLUME here: it would only leave anonymous volumes behind with `docker run`).
WORKDIR /app
EXPOSE 8080 8081
# No USER: SPCS mounts a block volume on /data whose root directory is typically owned by root, and a block volume
# takes no uid/gid in the service spec (stage volumes do). So the container starts as root, the entrypoint hands
# /data to 1000:1000 when uid 1000 cannot write it, then drops to uid/gid 1000 (setpriv) and execs CMD; started as
# another user (docker run --user 1000) it only checks /data and execs CMD. tests/unit/test_rule_image_user.py.
# No HEALTHCHECK: SPCS ignores it and uses the readinessProbe of the service spec instead.
ENTRYPOINT ["/usr/local/bin/gateway-entrypoint"]
CMD ["spcs-whisper", "gateway"]
