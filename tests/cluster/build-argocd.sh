#!/usr/bin/env bash
# Build Argo CD's application-controller and repo-server from its Go module, for
# the GitOps e2e tests (tests/support/argocd.py runs them against the test
# cluster; tests/e2e/test_gitops_argocd.py tests Git write-back with them).
# .ci/setup runs it; a cold build takes about 17 min of wall time on 2 shared
# cores (docs/benchmarks.md, "Argo CD in the GitOps tests?").
#
# Argo CD ships one binary, `argocd`, that takes its role from the name it is run
# as; argocd-application-controller and argocd-repo-server are symlinks to it
# (as in Argo CD's own image), and so is the repo-server's git credential helper
# (GIT_ASKPASS=argocd). The repo-server runs git-verify-wrapper.sh for every
# revision it renders (v3.6 does so even with GPG off; upstream's image has it
# on the PATH), so it is copied from the module source next to the binary.
# The helm and kustomize it execs to render charts and kustomizations are
# build-helm.sh's and build-kustomize.sh's (cached on their own versions).
#
# The wrapper module tests/cluster/argocd/ pins github.com/argoproj/argo-cd/v3
# v3.6.2 (the workplace's package list marks gitops-engine/v3 v3.6.0 and v3.6.1
# as failing; v3.6.2 is served), takes gitops-engine/v3 from the proxy instead of
# upstream's ./gitops-engine replace, and copies upstream's other replace
# directives; its go.mod and go.sum are what the first build resolved
# (GOFLAGS=-mod=mod). It lives outside tests/cluster/go/, whose go.mod files key
# the control plane's cache. Argo CD v3.6 names go 1.27.0. How the build runs
# and is cached: argo-build-common.sh, shared with build-argo-rollouts.sh.
#
# The folder, $IMAGEPATCH_CACHE/bin/argocd-<version>/: argocd, the role symlinks,
# git-verify-wrapper.sh, crds/ (Application, AppProject, ApplicationSet).
#
# Usage: build-argocd.sh            build if needed, print the directory
#        build-argocd.sh --print    print the directory without building
set -euo pipefail

name=argocd version=v3.6.2 title="Argo CD" wrapper=argocd
module=github.com/argoproj/argo-cd/v3 built=git-verify-wrapper.sh
# shellcheck source=argo-build-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/argo-build-common.sh"

build_into() {
  go build -trimpath -ldflags "-s -w -X $module/common.version=${version#v}" \
    -o "$1/argocd" "$module/cmd"
  local role
  for role in argocd-application-controller argocd-repo-server; do
    ln -s argocd "$1/$role"
  done
  local src
  src="$(go list -m -f '{{.Dir}}' "$module")"
  install -m 0755 "$src/hack/git-verify-wrapper.sh" "$1/"
}

argo_build "$@"
