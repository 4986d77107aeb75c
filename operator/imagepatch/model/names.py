"""The names imagepatch shares with the cluster: API group, version, plurals, keys.

Every ``imagepatch.dev/*`` annotation and label key lives here, once, so a
reader who greps for a key finds its one definition and every user of it.
Detection, the planner, the builders, the report and the CLI import these
names; none of them spells a key itself.
"""

from __future__ import annotations

# The CRDs' API group and served version (crds/, charts/imagepatch/crds/).
GROUP = "imagepatch.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
POLICIES = "imagepatchpolicies"
IMAGEPATCHES = "imagepatches"

# Every key the operator owns starts with this prefix (the health gate ignores
# changes under it when deciding whether someone else edited a workload).
PREFIX = f"{GROUP}/"

# On workloads and namespaces: the policy that governs them (annotation), and
# the label detection puts on the ImagePatches it opens for a policy.
POLICY_ANNOTATION = f"{PREFIX}policy"
POLICY_LABEL = f"{PREFIX}policy"
# On workloads: the base image a workload declares it was built on.
BASE_ANNOTATION = f"{PREFIX}base-image"
# On workloads: the rebuild a workload asks for (a spec.rebuild.allowed entry).
REBUILD_ANNOTATION = f"{PREFIX}rebuild"
# On workloads: the owner's hold, "propose and roll out no patch until then"
# (a small JSON object, written by `kubectl imagepatch hold`; core/hold.py).
HOLD_ANNOTATION = f"{PREFIX}hold"
# On workloads: detection's record of the workload's compliance state.
STATE_ANNOTATION = f"{PREFIX}state"
# On workloads: the digests that failed their health gate there, bounded.
FAILED_DIGESTS_ANNOTATION = f"{PREFIX}failed-digests"
# On a Deployment an opted-in Argo Rollout references through spec.workloadRef:
# the Rollout's name, the Deployment owner's consent that imagepatch writes the
# image into this Deployment's template for that Rollout (the admission policy
# allows that write only with it).
ROLLOUT_REF_ANNOTATION = f"{PREFIX}rollout"

# On ImagePatchPolicies: `kubectl annotate ipp NAME imagepatch.dev/requestedAt=...`
# asks for a detection pass now.
REQUESTED_AT_ANNOTATION = f"{PREFIX}requestedAt"
# kopf's record of the last handled spec, under our own prefix (handlers.py).
LAST_HANDLED_KEY = "last-handled-configuration"
LAST_HANDLED_ANNOTATION = f"{PREFIX}{LAST_HANDLED_KEY}"

# On ImagePatches: detection's identity of the patch it created (see
# core.compliance.patch_key), and its request to close one no longer needed.
KEY_ANNOTATION = f"{PREFIX}key"
CLOSE_ANNOTATION = f"{PREFIX}close"

# On build Jobs: the build's idempotency key, and its hash as a label value
# (labels are limited to 63 characters; the key is not).
BUILD_KEY_ANNOTATION = f"{PREFIX}build-key"
BUILD_KEY_HASH_LABEL = f"{PREFIX}build-key-hash"
# ...and what it was made for besides: the tag it rebuilds and where it pushes
# (``image:tag``). A Job is adopted only when key, tag and target all match.
BUILD_TAG_ANNOTATION = f"{PREFIX}build-tag"
BUILD_TARGET_ANNOTATION = f"{PREFIX}build-target"
