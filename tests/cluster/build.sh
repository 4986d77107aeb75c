#!/usr/bin/env bash
# Build the local test control plane from Go modules: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl and kwok.
#
# The binaries land in $IMAGEPATCH_CACHE/bin/<key>, where <key> hashes every
# input (the wrapper go.mod/go.sum files, `go version` and the ldflags). A
# second run with the same inputs does nothing. Go's own caches live under
# $IMAGEPATCH_CACHE/go so that a fresh clone on the same machine reuses them.
#
# Usage: build.sh            build if needed, print the binary directory
#        build.sh --print    print the binary directory without building
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

k8s_version=v1.34.4
k8s_minor=34
# A fixed build date keeps the cache key stable; it only feeds `version`.
build_date=2026-01-01T00:00:00Z
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  ldflags+=" -X $pkg.gitCommit=imagepatch-local -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
ldflags="-s -w$ldflags"

key="$( { cat "$here"/go/*/go.mod "$here"/go/*/go.sum "$here"/go/etcd/main.go; go version; echo "$ldflags"; } | sha256sum | cut -c1-16)"
out="$cache/bin/$key"
if [[ "${1:-}" == "--print" ]]; then echo "$out"; exit 0; fi

binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
complete=1
for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || complete=0; done
if [[ $complete == 1 ]]; then echo "$out"; exit 0; fi

avail_kb=$(df -Pk "$cache" 2>/dev/null | awk 'NR==2{print $4}' || echo 0)
if [[ -z "$avail_kb" ]] || (( avail_kb < 8*1024*1024 )); then
  mkdir -p "$cache"; avail_kb=$(df -Pk "$cache" | awk 'NR==2{print $4}')
  if (( avail_kb < 8*1024*1024 )); then
    echo "build.sh: need ~8 GiB free under $cache, have $((avail_kb/1024)) MiB" >&2; exit 1
  fi
fi

tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
log() { echo "[build.sh $(( $(date +%s) - start ))s] $*" >&2; }

log "building Kubernetes $k8s_version (apiserver, controller-manager, scheduler, kubectl)"
(cd "$here/go/k8s" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl) >&2
log "building etcd"
(cd "$here/go/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .) >&2
log "building kwok"
(cd "$here/go/kwok" && go build -trimpath -ldflags "-s -w" -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok) >&2
# kwok's default stages live in its module source; keep a copy beside the binary.
kwok_dir="$(cd "$here/go/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
mkdir -p "$tmp/kwok-stages"
# The same set as kwok's own "fast" kustomization.
for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
         pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  cp "$kwok_dir/kustomize/stage/$f.yaml" "$tmp/kwok-stages/"
done
chmod -R u+w "$tmp"
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
log "done: $out"
echo "$out"
