# syntax=docker/dockerfile:1
#
# The imagepatch operator image. `make image` builds it with buildah (see
# docs/releasing.md); by hand:
#
#   buildah bud --build-arg VERSION=0.3.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/imagepatch/imagepatch:0.3.0 .
#
# Only locked, hashed dependencies go in: requirements/runtime.lock (the
# operator's) and requirements/build.lock (setuptools for the wheel, cyclonedx-bom
# for the SBOM), both installed with --require-hashes and wheels only; the
# operator's own wheel is built without build isolation (nothing unpinned is
# downloaded) and installed with --no-deps. `make lock` writes the locks.
#
# The base is pinned by digest: by default the multi-platform index of
# python:3.11-slim-bookworm (Debian 12). Where Docker Hub is out of reach,
# `make image BASE=debian` builds a Debian 12 base with mmdebstrap
# (release/debian-base.sh) and passes it as BASE_NAME/BASE_DIGEST. Either
# way the same name and digest go into the org.opencontainers.image.base.*
# labels, so imagepatch can tell when its own base has moved on and patch
# itself. To update the default base, resolve the current digest and change
# BASE_DIGEST (both stages use it):
#   skopeo inspect --format '{{.Digest}}' docker://docker.io/library/python:3.11-slim-bookworm
#
# checkov (`make lint`) findings accepted here, each with its reason:
# checkov:skip=CKV_DOCKER_7: FROM is ${BASE_NAME}@${BASE_DIGEST}, a digest-pinned 3.11-slim-bookworm; checkov does not expand build args
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK, Kubernetes ignores it; the liveness and readiness probes call kopf's /healthz, on a port set per install
ARG BASE_NAME=docker.io/library/python:3.11-slim-bookworm
ARG BASE_DIGEST=sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# ---- builder: build the wheel, install it and the locked dependencies into /opt/venv
FROM ${BASE_NAME}@${BASE_DIGEST} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Behind a TLS-intercepting proxy, pip needs its CA: `make image` mounts the host's
# bundle ($PIP_CERT or $SSL_CERT_FILE) read-only and names it here, in this stage only.
ARG PIP_CERT
WORKDIR /src
# The build tools get a venv of their own, left behind in this stage.
COPY requirements/runtime.lock requirements/build.lock requirements/
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --quiet --require-hashes --only-binary :all: -r requirements/build.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
# The operator's venv gets no pip of its own: the build venv's pip installs into
# it. Its .pyc files are compiled here, since the root filesystem is read-only
# at run time. The SBOM (CycloneDX) lists what the venv holds, as installed.
RUN /opt/build/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /wheels . \
 && python3 -m venv --without-pip /opt/venv \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --quiet \
      --require-hashes --only-binary :all: -r requirements/runtime.lock \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --quiet --no-deps /wheels/imagepatch-*.whl \
 && mkdir -p /opt/sbom \
 && /opt/build/bin/cyclonedx-py environment --pyproject pyproject.toml --mc-type application \
      --output-reproducible --of JSON -o /opt/sbom/imagepatch.cdx.json /opt/venv/bin/python

# ---- final: the base plus the venv and its SBOM, nothing from the build
FROM ${BASE_NAME}@${BASE_DIGEST}
ARG BASE_NAME
ARG BASE_DIGEST
# Equal to operator/imagepatch/__init__.py's __version__ (a test checks); `make image` passes it.
ARG VERSION=0.3.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="imagepatch" \
      org.opencontainers.image.description="Kubernetes operator that keeps container images patched" \
      org.opencontainers.image.source="https://github.com/imagepatch/imagepatch" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_NAME}" \
      org.opencontainers.image.base.digest="${BASE_DIGEST}" \
      dev.imagepatch.sbom="/usr/share/doc/imagepatch/sbom.cdx.json"
# git and openssh-client: Git write-back (rollout.mode GitWriteBack) runs the git
# binary, over HTTPS or SSH (docs/gitops.md). The Debian base
# (release/debian-base.sh) has them; nothing is installed in this final stage (the
# packaging test keeps it build-free), so on python:3.11-slim write-back reports
# GitUnavailable: build with BASE=debian to use it.
# A non-root user (uid/gid 65532, as the chart and deploy/ expect), and no
# packaging tools left in the base's Python (python:3.11-slim has them; a
# Debian base has none).
RUN groupadd --system --gid 65532 imagepatch \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin imagepatch \
 && if python3 -m pip --version >/dev/null 2>&1; then \
      python3 -m pip uninstall --yes --quiet pip setuptools wheel; fi \
 && rm -rf /root/.cache
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/sbom/imagepatch.cdx.json /usr/share/doc/imagepatch/sbom.cdx.json
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["imagepatch"]
CMD ["run"]
