#!/usr/bin/env bash
# Build kustomize from its Go module, for Argo CD's repo-server in the GitOps e2e
# tests (tests/support/argocd.py puts it on the repo-server's PATH): for a
# kustomize-type Application the repo-server execs `kustomize edit set image`
# with the Application's images override (what Git write-back commits in
# .argocd-source-<app>.yaml) and then `kustomize build`.
#
# Argo CD v3.6.2 ships v5.8.3 (KUSTOMIZE_VERSION in its hack/tool-versions.sh),
# but v5.8.3 needs a k8s.io/kube-openapi pseudo-version the Go module proxy
# refuses (403, "not available"), so this builds v5.8.2, the patch release
# before it: go 1.26.0 in its go.mod (this machine's Go builds it), no replace
# directives (a plain `go install pkg@version`), and the kube-openapi that
# Argo CD's own build already put in the module cache. The ldflags set the
# version `kustomize version` prints as upstream's releases do (Argo CD parses
# it to pick flags).
#
# The binary lands in $IMAGEPATCH_CACHE/bin/kustomize-<version>/kustomize and is
# built only if missing. Go's caches are the ones build.sh uses ($IMAGEPATCH_CACHE/go).
#
# Usage: build-kustomize.sh            build if needed, print the path of the binary
#        build-kustomize.sh --print    print the path without building
set -euo pipefail

version=v5.8.2
module=sigs.k8s.io/kustomize/kustomize/v5
cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOTOOLCHAIN=local CGO_ENABLED=0
# `go install pkg@version` builds outside any module; -mod must not be set.
unset GOFLAGS

out="$cache/bin/kustomize-$version"
if [[ "${1:-}" == "--print" ]]; then echo "$out/kustomize"; exit 0; fi
if [[ -f "$out/.complete" ]]; then echo "$out/kustomize"; exit 0; fi

command -v go >/dev/null || { echo "build-kustomize.sh: Go is required to build kustomize" >&2; exit 1; }

mkdir -p "$cache/bin"
# Two test sessions may start at once: one builds, the other waits for it.
exec 9>"$cache/bin/.kustomize-$version.lock"
flock 9
if [[ -f "$out/.complete" ]]; then echo "$out/kustomize"; exit 0; fi
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "[build-kustomize.sh] building kustomize $version" >&2
ldflags="-s -w -X sigs.k8s.io/kustomize/api/provenance.version=kustomize/$version"
(cd "$tmp" && GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "$module@$version") >&2
"$tmp/kustomize" version >&2
touch "$tmp/.complete"
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "[build-kustomize.sh] done in $(( $(date +%s) - start ))s: $out/kustomize" >&2
echo "$out/kustomize"
