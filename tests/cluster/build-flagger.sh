#!/usr/bin/env bash
# Build Flagger's controller from its Go module, for the Flagger e2e tests.
#
# The binary and the CRDs of the same module version land in
# $IMAGEPATCH_CACHE/bin/flagger-<version>/ (flagger, crds/crd.yaml) and are
# built only if missing. Go's caches are the ones build.sh uses
# ($IMAGEPATCH_CACHE/go), so the Kubernetes modules Flagger shares with the
# test control plane are downloaded once.
#
# Flagger v1.36.1's go.mod has no replace directives and names go 1.21, so a
# plain `go install pkg@version` builds it with this machine's Go (no wrapper
# module, no other toolchain). Measured cold on 2 shared cores: about 3 min
# wall, 2.4 min CPU (see the closing note of issue 23).
#
# Usage: build-flagger.sh            build if needed, print the directory
#        build-flagger.sh --print    print the directory without building
set -euo pipefail

version=v1.36.1
module=github.com/fluxcd/flagger
cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOTOOLCHAIN=local CGO_ENABLED=0
unset GOFLAGS

out="$cache/bin/flagger-$version"
if [[ "${1:-}" == "--print" ]]; then echo "$out"; exit 0; fi
if [[ -x "$out/flagger" ]]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "build-flagger.sh: Go is required" >&2; exit 1; }

mkdir -p "$cache/bin"
# Two test sessions may start at once: one builds, the other waits for it.
exec 9>"$cache/bin/.flagger-$version.lock"
flock 9
if [[ -x "$out/flagger" ]]; then echo "$out"; exit 0; fi
tmp="$out.tmp.$$"
mkdir -p "$tmp/crds"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "[build-flagger.sh] building Flagger $version" >&2
(cd "$tmp" && GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "$module/cmd/flagger@$version") >&2
# The CRDs of the same version, from the module source (Canary, MetricTemplate, AlertProvider).
cp "$GOMODCACHE/$module@$version/artifacts/flagger/crd.yaml" "$tmp/crds/"
chmod -R u+w "$tmp"
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "[build-flagger.sh] done in $(( $(date +%s) - start ))s: $out" >&2
echo "$out"
