# syntax=docker/dockerfile:1
#
# The imagepatch operator image.
#
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/imagepatch/imagepatch:0.1.0 .
#   buildah bud --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/imagepatch/imagepatch:0.1.0 .
#
# The base is pinned by digest: the multi-platform index of
# python:3.11-slim-bookworm (Debian 12). The same name and digest go into the
# org.opencontainers.image.base.* labels, so imagepatch can tell when its own
# base has moved on and patch itself. To update the base, resolve the current
# digest and change BASE_DIGEST (both stages use it):
#   docker buildx imagetools inspect docker.io/library/python:3.11-slim-bookworm
#   skopeo inspect --format '{{.Digest}}' docker://docker.io/library/python:3.11-slim-bookworm
#
# checkov (`make lint`) findings accepted here, each with its reason:
# checkov:skip=CKV_DOCKER_7: FROM is ${BASE_NAME}@${BASE_DIGEST}, a digest-pinned 3.11-slim-bookworm; checkov does not expand build args
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK, Kubernetes ignores it; the liveness and readiness probes call kopf's /healthz, on a port set per install
ARG BASE_NAME=docker.io/library/python:3.11-slim-bookworm
ARG BASE_DIGEST=sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# ---- builder: build the wheel, install it and its dependencies into /opt/venv
FROM ${BASE_NAME}@${BASE_DIGEST} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# The venv gets no pip of its own: the builder's pip installs into it. Its
# .pyc files are compiled here, since the root filesystem is read-only at run time.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install /wheels/imagepatch-*.whl

# ---- final: the base plus the venv, nothing from the build
FROM ${BASE_NAME}@${BASE_DIGEST}
ARG BASE_NAME
ARG BASE_DIGEST
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="imagepatch" \
      org.opencontainers.image.description="Kubernetes operator that keeps container images patched" \
      org.opencontainers.image.source="https://github.com/imagepatch/imagepatch" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_NAME}" \
      org.opencontainers.image.base.digest="${BASE_DIGEST}"
# A non-root user (uid/gid 65532, as the chart and deploy/ expect), and no
# packaging tools left in the base's Python.
RUN groupadd --system --gid 65532 imagepatch \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin imagepatch \
 && python -m pip uninstall --yes --quiet pip setuptools wheel \
 && rm -rf /root/.cache
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["imagepatch"]
CMD ["run"]
