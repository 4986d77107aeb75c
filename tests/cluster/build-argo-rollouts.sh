#!/usr/bin/env bash
# Build Argo Rollouts' controller from its Go module, for the Rollout e2e tests.
#
# The binary and the CRDs of the same module version land in
# $IMAGEPATCH_CACHE/bin/argo-rollouts-<version>/ (rollouts-controller, crds/*.yaml)
# and are built only if missing. Go's caches are the ones build.sh uses
# ($IMAGEPATCH_CACHE/go), so the Kubernetes modules Argo shares with the test
# control plane are downloaded once.
#
# The wrapper module (tests/cluster/argo-rollouts/) copies Argo's replace
# directives, which `go install pkg@version` refuses. Argo Rollouts v1.10.2
# names go 1.26.10 in its go.mod, newer than this machine's Go 1.26.8, so this
# build alone takes the approved toolchain go1.27.3 from the Go module proxy
# (the binary it makes runs anywhere; nothing else in the project needs it).
#
# Usage: build-argo-rollouts.sh            build if needed, print the directory
#        build-argo-rollouts.sh --print    print the directory without building
set -euo pipefail

version=v1.10.2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOTOOLCHAIN=go1.27.3 GOFLAGS=-mod=mod CGO_ENABLED=0

out="$cache/bin/argo-rollouts-$version"
if [[ "${1:-}" == "--print" ]]; then echo "$out"; exit 0; fi
if [[ -x "$out/rollouts-controller" ]]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "build-argo-rollouts.sh: Go is required" >&2; exit 1; }

mkdir -p "$cache/bin"
# Two test sessions may start at once: one builds, the other waits for it.
exec 9>"$cache/bin/.argo-rollouts-$version.lock"
flock 9
if [[ -x "$out/rollouts-controller" ]]; then echo "$out"; exit 0; fi
tmp="$out.tmp.$$"
mkdir -p "$tmp/crds"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "[build-argo-rollouts.sh] building Argo Rollouts $version" >&2
ldflags="-s -w -X github.com/argoproj/argo-rollouts/utils/version.version=$version"
(cd "$here/argo-rollouts" && go build -trimpath -ldflags "$ldflags" -o "$tmp/rollouts-controller" \
  github.com/argoproj/argo-rollouts/cmd/rollouts-controller) >&2
# The CRDs of the same version, from the module source.
src="$(cd "$here/argo-rollouts" && go list -m -f '{{.Dir}}' github.com/argoproj/argo-rollouts)"
cp "$src"/manifests/crds/*-crd.yaml "$tmp/crds/"
chmod -R u+w "$tmp"
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "[build-argo-rollouts.sh] done in $(( $(date +%s) - start ))s: $out" >&2
echo "$out"
