#!/usr/bin/env bash
# Build the operator image's base from Debian packages, where Docker Hub's
# python:3.11-slim-bookworm is out of reach: Debian 12 (bookworm) with its
# Python 3.11, python3-venv (the image build makes its venvs with it),
# ca-certificates, and git and openssh-client (Git write-back runs the git
# binary, over HTTPS or SSH), made by mmdebstrap from Debian's package mirror. Push it to
# $BASE_REGISTRY (required) as imagepatch/debian-python:3.11-bookworm and print
# NAME@DIGEST, which `make image BASE=debian` passes to the Dockerfile as
# BASE_NAME/BASE_DIGEST (and so into the image's base labels).
#
# The root filesystem tarball is cached under
# $IMAGEPATCH_CACHE/base/debian-python-<key>.tar, the key hashing this file
# (suite, packages, mirrors, options): a warm run only imports and pushes it.
# BASE_REFRESH=1 builds it anew (for the mirror's newer packages).
#
# Uses buildah as configured by the environment (CONTAINERS_* variables,
# STORAGE_DRIVER); TLS_VERIFY=false for a plain-HTTP registry.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# COMPRESS=false pushes layers uncompressed (a registry on this machine: no gzip time).
compression=(); [[ ${COMPRESS:-true} == false ]] && compression=(--disable-compression)
registry=${BASE_REGISTRY:?set BASE_REGISTRY to the registry the base is pushed to, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com}
suite=bookworm
packages=python3,python3-venv,ca-certificates,git,openssh-client
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# No documentation, manual pages or translations; the copyright files stay.
dpkg_opts=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
           --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*')
# The build time of the packages' files: the same inputs give the same tarball.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}/base"
key=$(printf '%s\n' "$(cat "${BASH_SOURCE[0]}")" "$mirror" "$security" | sha256sum | cut -c1-16)
tarball="$cache/debian-python-$key.tar"
if [[ ! -s $tarball || ${BASE_REFRESH:-} == 1 ]]; then
  command -v mmdebstrap >/dev/null || { echo "debian-base: mmdebstrap is required (apt-get install mmdebstrap)" >&2; exit 1; }
  mkdir -p "$cache"
  started=$(date +%s)
  mmdebstrap --quiet --format=tar --variant=minbase --include="$packages" "${dpkg_opts[@]}" "$suite" "$tarball.tmp.$$" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main" >&2
  mv "$tarball.tmp.$$" "$tarball"
  echo "debian-base: built $tarball in $(( $(date +%s) - started ))s" >&2
fi

ref="$registry/imagepatch/debian-python:3.11-$suite"
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah add --quiet "$ctr" "$tarball" / >/dev/null
buildah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
  --cmd '["python3"]' \
  --label org.opencontainers.image.title="debian-python" \
  --label org.opencontainers.image.description="Debian $suite with python3, python3-venv, git and openssh-client, made by mmdebstrap" \
  --label dev.imagepatch.debian-base.key="$key" \
  "$ctr"
buildah commit --quiet --timestamp "$SOURCE_DATE_EPOCH" "$ctr" "$ref" >/dev/null
digestfile=$(mktemp); trap 'rm -f "$digestfile"; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah push --quiet --tls-verify="${TLS_VERIFY:-true}" "${compression[@]}" --digestfile "$digestfile" "$ref" "docker://$ref"
echo "$ref@$(cat "$digestfile")"
