#!/usr/bin/env bash
# Build Argo Rollouts' controller from its Go module, for the Rollout e2e tests.
#
# The binary and the CRDs of the same module version land in
# $IMAGEPATCH_CACHE/bin/argo-rollouts-<version>/ (rollouts-controller, crds/*.yaml).
# The wrapper module is tests/cluster/argo-rollouts/; Argo Rollouts v1.10.2
# names go 1.26.10 in its go.mod. How the build runs and is cached:
# argo-build-common.sh, shared with build-argocd.sh.
#
# Usage: build-argo-rollouts.sh            build if needed, print the directory
#        build-argo-rollouts.sh --print    print the directory without building
set -euo pipefail

name=argo-rollouts version=v1.10.2 title="Argo Rollouts" wrapper=argo-rollouts
module=github.com/argoproj/argo-rollouts built=rollouts-controller
# shellcheck source=argo-build-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/argo-build-common.sh"

build_into() {
  go build -trimpath -ldflags "-s -w -X $module/utils/version.version=$version" \
    -o "$1/rollouts-controller" "$module/cmd/rollouts-controller"
}

argo_build "$@"
