#!/usr/bin/env bash
# Build Flux's source-controller and kustomize-controller from their Go
# modules, for the GitOps tests (a GitRepository + Kustomization delivering an
# app from a local Git server into the test cluster).
#
# Flux v1.10.x needs Go 1.27; v1.9.6 is the newest that builds with the local
# Go (GOTOOLCHAIN=local). Upstream's go.mod files carry a `./api` replace, so
# `go install …@version` refuses them: the wrapper modules under
# tests/cluster/go/flux/ copy upstream's go.mod (same dependency versions and
# replaces) without it. The module proxy does not serve
# github.com/fluxcd/pkg/artifact v0.18.3 (source-controller's pin): its wrapper
# replaces it with v0.18.0, the version source-controller v1.9.0 pinned.
#
# Both binaries and the controllers' CRDs (config/crd/bases in each module)
# land in $IMAGEPATCH_CACHE/bin/flux-<version>/, built only if missing, with
# the Go caches build.sh uses ($IMAGEPATCH_CACHE/go). The operator never runs
# Flux; only tests do.
#
# Usage: build-flux.sh            build if needed, print the directory
#        build-flux.sh --print    print the directory without building
set -euo pipefail

flux_version=v1.9.6
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOTOOLCHAIN=local CGO_ENABLED=0
unset GOFLAGS

out="$cache/bin/flux-$flux_version"
if [[ "${1:-}" == "--print" ]]; then echo "$out"; exit 0; fi
if [[ -f "$out/.complete" ]]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "build-flux.sh: Go is required to build Flux" >&2; exit 1; }

mkdir -p "$cache/bin"
# Two test sessions may start at once: one builds, the other waits for it.
exec 9>"$cache/bin/.flux-$flux_version.lock"
flock 9
if [[ -f "$out/.complete" ]]; then echo "$out"; exit 0; fi
tmp="$out.tmp.$$"
mkdir -p "$tmp/crds"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
for c in source-controller kustomize-controller; do
  echo "[build-flux.sh] building $c $flux_version" >&2
  (cd "$here/go/flux/$c" && go build -trimpath -ldflags "-s -w" -o "$tmp/$c" "github.com/fluxcd/$c") >&2
  dir="$(cd "$here/go/flux/$c" && go list -m -f '{{.Dir}}' "github.com/fluxcd/$c")"
  cp "$dir"/config/crd/bases/*.yaml "$tmp/crds/"
done
chmod -R u+w "$tmp"
touch "$tmp/.complete"
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "[build-flux.sh] done in $(( $(date +%s) - start ))s: $out" >&2
echo "$out"
