# syntax=docker/dockerfile:1
# One image for both planes (docs/helm.md, "The image"):
#   data plane:    ENTRYPOINT is `sftpd`; the operator's District pods pass only its arguments
#                  (`serve --root /data`, `process-epochs ...`, `retention ...`, `backup ...`).
#   control plane: the chart's Deployment sets `command: [district-operator]`, args `[run]`.
# Build: docker build -t district-sftp:0.1.0 .
# tests/test_dockerfile.py checks every path, entry point, user and version named here.

ARG PYTHON_IMAGE=python:3.11-slim-trixie

# ---- builder: the project as a wheel, installed with its dependencies into a venv -----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract/ contract/
COPY operator/ operator/
COPY sftpd/ sftpd/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/district-sftp \
 && /opt/district-sftp/bin/pip install /wheels/*.whl

# ---- runtime -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# pg_dump/pg_restore for the backup job, side by side under /usr/lib/postgresql/<major>/bin;
# the job picks the oldest client at least as new as the server (sftpd/backup/pgclient.py).
# Debian 13 ships major 17, which dumps servers 9.2 to 17. For newer servers add that
# major's client package from the PostgreSQL project's own Debian repository and list it here.
ARG POSTGRESQL_CLIENT_PACKAGES="postgresql-client-17"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ${POSTGRESQL_CLIENT_PACKAGES} libpq5 \
 && rm -rf /var/lib/apt/lists/*
# uid/gid 10001: the pods' runAsUser (operator/district_operator/names.py RUN_AS_USER).
RUN groupadd --system --gid 10001 district-sftp \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin district-sftp
COPY --from=builder /opt/district-sftp /opt/district-sftp
ENV PATH=/opt/district-sftp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
# Exec form: no shell is started, now or at run time (pg_dump and friends are run directly).
ENTRYPOINT ["sftpd"]
CMD ["--help"]
