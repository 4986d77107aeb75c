#!/usr/bin/env bash
# Build helm from its Go module, for the packaging tests (helm lint/template).
#
# The binary lands in $IMAGEPATCH_CACHE/bin/helm-<version>/helm and is built
# only if missing. Go's caches are the ones build.sh uses
# ($IMAGEPATCH_CACHE/go), so the Kubernetes modules helm shares with the test
# control plane are downloaded and compiled once.
#
# The ldflags are the ones helm's own Makefile sets: the version `helm version`
# prints, and the Kubernetes version that `helm template`/`helm lint` assume
# without a cluster (the minor of helm's client-go, plus one major, as upstream
# does), so deprecation checks judge against a current Kubernetes rather than
# the 1.20 compiled in by default.
#
# Usage: build-helm.sh            build if needed, print the path of the binary
#        build-helm.sh --print    print the path without building
set -euo pipefail

helm_version=v3.22.0
# k8s.io/client-go v0.37.x in helm v3.22.0's go.mod -> Kubernetes 1.37.
k8s_major=1
k8s_minor=37

cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOTOOLCHAIN=local CGO_ENABLED=0
# `go install pkg@version` builds outside any module; -mod must not be set.
unset GOFLAGS

out="$cache/bin/helm-$helm_version"
if [[ "${1:-}" == "--print" ]]; then echo "$out/helm"; exit 0; fi
if [[ -x "$out/helm" ]]; then echo "$out/helm"; exit 0; fi

command -v go >/dev/null || { echo "build-helm.sh: Go is required to build helm" >&2; exit 1; }

ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
done

mkdir -p "$cache/bin"
# Two test sessions may start at once: one builds, the other waits for it.
exec 9>"$cache/bin/.helm-$helm_version.lock"
flock 9
if [[ -x "$out/helm" ]]; then echo "$out/helm"; exit 0; fi
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "[build-helm.sh] building helm $helm_version" >&2
GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$helm_version" >&2
"$tmp/helm" version --short >&2
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "[build-helm.sh] done in $(( $(date +%s) - start ))s: $out/helm" >&2
echo "$out/helm"
