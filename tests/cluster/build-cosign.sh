#!/usr/bin/env bash
# Build cosign from its Go module, for the signature tests.
#
# cosign is used only by tests: to make key pairs, sign images and attach
# attestations the way a user's CI would, so that the operator's own Python
# verifier is checked against the real tool's output (and the operator's own
# signatures are checked by `cosign verify`). The operator never runs it.
#
# The binary lands in $IMAGEPATCH_CACHE/bin/cosign-<version>/cosign and is
# built only if missing, with the Go caches build.sh uses ($IMAGEPATCH_CACHE/go).
#
# Usage: build-cosign.sh            build if needed, print the path of the binary
#        build-cosign.sh --print    print the path without building
set -euo pipefail

cosign_version=v2.6.5

cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOTOOLCHAIN=local CGO_ENABLED=0
# `go install pkg@version` builds outside any module; -mod must not be set.
unset GOFLAGS

out="$cache/bin/cosign-$cosign_version"
if [[ "${1:-}" == "--print" ]]; then echo "$out/cosign"; exit 0; fi
if [[ -x "$out/cosign" ]]; then echo "$out/cosign"; exit 0; fi

command -v go >/dev/null || { echo "build-cosign.sh: Go is required to build cosign" >&2; exit 1; }

# The version `cosign version` prints, as cosign's own Makefile sets it.
ldflags="-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$cosign_version"
ldflags+=" -X sigs.k8s.io/release-utils/version.gitTreeState=clean"

mkdir -p "$cache/bin"
# Two test sessions may start at once: one builds, the other waits for it.
exec 9>"$cache/bin/.cosign-$cosign_version.lock"
flock 9
if [[ -x "$out/cosign" ]]; then echo "$out/cosign"; exit 0; fi
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "[build-cosign.sh] building cosign $cosign_version" >&2
GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "github.com/sigstore/cosign/v2/cmd/cosign@$cosign_version" >&2
"$tmp/cosign" version >&2
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "[build-cosign.sh] done in $(( $(date +%s) - start ))s: $out/cosign" >&2
echo "$out/cosign"
