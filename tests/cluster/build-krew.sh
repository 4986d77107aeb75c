#!/usr/bin/env bash
# Build krew, the kubectl plugin manager, from its Go module, for the test that
# installs the plugin's release archive with it (tests/integration/test_krew_install.py).
#
# The binary lands in $IMAGEPATCH_CACHE/bin/krew-<version>/krew and is built
# only if missing. Go's caches are the ones build.sh uses ($IMAGEPATCH_CACHE/go).
# krew v0.4.3's go.mod has no replace directives, so a plain
# `go install pkg@version` builds it with this machine's Go. The ldflags are
# the ones krew's hack/make-binaries.sh sets: the tag `krew version` prints
# (a tagged build, as a user's krew is).
#
# Usage: build-krew.sh            build if needed, print the path of the binary
#        build-krew.sh --print    print the path without building
set -euo pipefail

version=v0.4.3
module=sigs.k8s.io/krew
cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOTOOLCHAIN=local CGO_ENABLED=0
# `go install pkg@version` builds outside any module; -mod must not be set.
unset GOFLAGS

out="$cache/bin/krew-$version"
if [[ "${1:-}" == "--print" ]]; then echo "$out/krew"; exit 0; fi
if [[ -f "$out/.complete" ]]; then echo "$out/krew"; exit 0; fi

command -v go >/dev/null || { echo "build-krew.sh: Go is required to build krew" >&2; exit 1; }

mkdir -p "$cache/bin"
# Two test sessions may start at once: one builds, the other waits for it.
exec 9>"$cache/bin/.krew-$version.lock"
flock 9
if [[ -f "$out/.complete" ]]; then echo "$out/krew"; exit 0; fi
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "[build-krew.sh] building krew $version" >&2
ldflags="-s -w -X $module/internal/version.gitTag=$version -X $module/internal/version.gitCommit=$version"
(cd "$tmp" && GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "$module/cmd/krew@$version") >&2
# Its own KREW_ROOT: `krew version` creates one, never in the builder's home.
KREW_ROOT="$tmp/root" KREW_NO_UPGRADE_CHECK=1 "$tmp/krew" version >&2
rm -rf "$tmp/root"
touch "$tmp/.complete"
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "[build-krew.sh] done in $(( $(date +%s) - start ))s: $out/krew" >&2
echo "$out/krew"
