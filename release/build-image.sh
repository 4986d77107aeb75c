#!/usr/bin/env bash
# `make image`: build the operator image from the Dockerfile with buildah.
#
#   IMAGE        the image to build (default localhost/imagepatch/imagepatch:<version>)
#   PUSH=1       push IMAGE too, and print its digest (for image.digest)
#   BASE=debian  build the base from Debian packages (release/debian-base.sh) and
#                push it to BASE_REGISTRY, instead of the Dockerfile's default
#                (docker.io's python:3.11-slim-bookworm, pinned by digest)
#   BASE_NAME, BASE_DIGEST  another base, by name and digest
#   TLS_VERIFY=false        for plain-HTTP registries
#   COMPRESS=false          push layers uncompressed (to a registry on this machine)
#   PIP_CERT or SSL_CERT_FILE  a CA bundle for the build's pip (a TLS-intercepting proxy)
#
# The version comes from operator/imagepatch/__init__.py, the revision from git.
# --isolation chroot (override with BUILDAH_ISOLATION) needs no cgroups, so it
# builds inside a container or a CI job as well as on a workstation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# COMPRESS=false pushes layers uncompressed (a registry on this machine: no gzip time).
compression=(); [[ ${COMPRESS:-true} == false ]] && compression=(--disable-compression)
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' operator/imagepatch/__init__.py)
image=${IMAGE:-localhost/imagepatch/imagepatch:$version}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision")
if [[ ${BASE:-} == debian ]]; then
  base=$(bash release/debian-base.sh)
  BASE_NAME=${base%@*} BASE_DIGEST=${base#*@}
fi
if [[ -n ${BASE_NAME:-} ]]; then
  args+=(--build-arg "BASE_NAME=$BASE_NAME" --build-arg "BASE_DIGEST=${BASE_DIGEST:?BASE_NAME needs BASE_DIGEST}")
fi
# A host behind a TLS-intercepting proxy names its CA bundle in PIP_CERT or
# SSL_CERT_FILE: the builder stage's pip reads it from a read-only mount (the
# final image never holds it).
ca=${PIP_CERT:-${SSL_CERT_FILE:-}}
if [[ -n $ca && -f $ca ]]; then
  args+=(--volume "$ca:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
fi
started=$(date +%s)
buildah bud --quiet --isolation "${BUILDAH_ISOLATION:-chroot}" --tls-verify="${TLS_VERIFY:-true}" \
  "${args[@]}" -f Dockerfile -t "$image" . >&2
echo "image: built $image (version $version) in $(( $(date +%s) - started ))s" >&2
if [[ ${PUSH:-} == 1 ]]; then
  digestfile=$(mktemp); trap 'rm -f "$digestfile"' EXIT
  buildah push --quiet --tls-verify="${TLS_VERIFY:-true}" "${compression[@]}" --digestfile "$digestfile" "$image" "docker://$image"
  echo "image: pushed $image@$(cat "$digestfile")" >&2
  cat "$digestfile"; echo
fi
