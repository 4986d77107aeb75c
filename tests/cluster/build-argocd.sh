#!/usr/bin/env bash
# Build Argo CD's application-controller and repo-server from its Go module, to
# measure what adding Argo CD to the GitOps tests would cost (issue 22:
# "add Argo CD if it fits the CI budget, else give the measured build and start
# times"). Not wired into .ci/setup: docs/gitops.md has the figures.
#
# Argo CD ships one binary, `argocd`, that takes its role from the name it is run
# as; argocd-application-controller and argocd-repo-server are symlinks to it
# (as in Argo CD's own image). The wrapper module tests/cluster/argocd/ pins
# github.com/argoproj/argo-cd/v3 v3.6.2 (the workplace's package list marks
# gitops-engine/v3 v3.6.0 and v3.6.1 as failing; v3.6.2 is served), takes gitops-engine/v3 from the
# proxy instead of upstream's ./gitops-engine replace, and copies upstream's other
# replace directives. Argo CD v3.6 names go 1.27.0, newer than this machine's
# Go 1.26.8: like build-argo-rollouts.sh, this build alone takes the approved
# toolchain go1.27.3 from the Go module proxy.
#
# The binary lands in $IMAGEPATCH_CACHE/bin/argocd-<version>/, built only if
# missing, with the Go caches build.sh uses ($IMAGEPATCH_CACHE/go). The wrapper's
# go.mod and go.sum are what the first build resolved (GOFLAGS=-mod=mod). It lives
# outside tests/cluster/go/, whose go.mod files key the control plane's cache.
# Measured cost: docs/benchmarks.md, "Argo CD in the GitOps tests?".
#
# Usage: build-argocd.sh            build if needed, print the directory
#        build-argocd.sh --print    print the directory without building
set -euo pipefail

version=v3.6.2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOTOOLCHAIN=go1.27.3 GOFLAGS=-mod=mod CGO_ENABLED=0

out="$cache/bin/argocd-$version"
if [[ "${1:-}" == "--print" ]]; then echo "$out"; exit 0; fi
if [[ -f "$out/.complete" ]]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "build-argocd.sh: Go is required" >&2; exit 1; }

mkdir -p "$cache/bin"
# Two sessions may start at once: one builds, the other waits for it.
exec 9>"$cache/bin/.argocd-$version.lock"
flock 9
if [[ -f "$out/.complete" ]]; then echo "$out"; exit 0; fi
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "[build-argocd.sh] building Argo CD $version" >&2
ldflags="-s -w -X github.com/argoproj/argo-cd/v3/common.version=${version#v}"
(cd "$here/argocd" && go build -trimpath -ldflags "$ldflags" -o "$tmp/argocd" \
  github.com/argoproj/argo-cd/v3/cmd) >&2
for role in argocd-application-controller argocd-repo-server; do
  ln -s argocd "$tmp/$role"
done
# The CRDs of the same version (Application, AppProject, ApplicationSet).
src="$(cd "$here/argocd" && go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)"
mkdir -p "$tmp/crds"
cp "$src"/manifests/crds/*-crd.yaml "$tmp/crds/"
chmod -R u+w "$tmp"
touch "$tmp/.complete"
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "[build-argocd.sh] done in $(( $(date +%s) - start ))s: $out" >&2
echo "$out"
