# Sourced by build-argo-rollouts.sh and build-argocd.sh (not run by itself): the
# shell both share. Both build an Argo project's binary from its Go module
# through a wrapper module (tests/cluster/<wrapper>/, which copies upstream's
# replace directives: `go install pkg@version` refuses them), with the approved
# toolchain go1.27.3 from the Go module proxy (both name a Go newer than this
# machine's 1.26.8; the binaries run anywhere, nothing else needs that Go), and
# copy the CRDs of the same module version (manifests/crds/*-crd.yaml).
#
# The caller sets:
#   name       the cache folder's prefix: $IMAGEPATCH_CACHE/bin/<name>-<version>/
#   version    the module version
#   title      what the build log calls it
#   wrapper    the wrapper module's folder, under tests/cluster/
#   module     the upstream module (its source holds manifests/crds/)
#   built      a file that exists in the folder once it is complete
# and defines build_into DIR (run in the wrapper module's folder: put the
# binaries into DIR), then calls `argo_build "$@"`. The folder is built only if
# missing, with the Go caches build.sh uses ($IMAGEPATCH_CACHE/go), so the
# Kubernetes modules the Argo projects share with the control plane are
# downloaded once.
#
# Usage of the callers: <script>            build if needed, print the folder
#                       <script> --print    print the folder without building

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${IMAGEPATCH_CACHE:-/var/cache/imagepatch}"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOTOOLCHAIN=go1.27.3 GOFLAGS=-mod=mod CGO_ENABLED=0

argo_build() {
  local script out tmp start src
  script="$(basename "$0")"
  out="$cache/bin/$name-$version"
  if [[ "${1:-}" == "--print" ]]; then echo "$out"; return 0; fi
  if [[ -e "$out/$built" ]]; then echo "$out"; return 0; fi

  command -v go >/dev/null || { echo "$script: Go is required" >&2; return 1; }

  mkdir -p "$cache/bin"
  # Two test sessions may start at once: one builds, the other waits for it.
  exec 9>"$cache/bin/.$name-$version.lock"
  flock 9
  if [[ -e "$out/$built" ]]; then echo "$out"; return 0; fi
  tmp="$out.tmp.$$"
  mkdir -p "$tmp/crds"
  # shellcheck disable=SC2064 # expand $tmp now: it is local to this function
  trap "rm -rf '$tmp'" EXIT
  start=$(date +%s)
  echo "[$script] building $title $version" >&2
  (cd "$here/$wrapper" && build_into "$tmp") >&2
  src="$(cd "$here/$wrapper" && go list -m -f '{{.Dir}}' "$module")"
  cp "$src"/manifests/crds/*-crd.yaml "$tmp/crds/"
  chmod -R u+w "$tmp"
  touch "$tmp/.complete"
  rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
  echo "[$script] done in $(( $(date +%s) - start ))s: $out" >&2
  echo "$out"
}
