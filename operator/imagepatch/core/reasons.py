"""The CamelCase reasons used in conditions, Events and metrics, in one place.

Reports, Events and status conditions all take their reasons from here, so a
user who greps for a reason finds it everywhere it can appear.
"""

from __future__ import annotations

# Condition types (kstatus: Ready, plus the abnormal-true Reconciling/Stalled).
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
# Whether the vulnerability findings the policy asks for can be read; detection
# records status.findings, and the policy's status turns it into this condition.
FINDINGS_READABLE = "FindingsReadable"

# Notifications (adapters/notify/): the policy's condition while a sink's last
# delivery failed, and why one failed.
NOTIFICATIONS_DEGRADED = "NotificationsDegraded"
NOTIFICATIONS_DELIVERED = "NotificationsDelivered"
NOTIFICATION_FAILED = "NotificationFailed"
NOTIFICATION_SECRET_UNUSABLE = "NotificationSecretUnusable"  # missing Secret or key, bad URL
NOTIFICATION_REJECTED = "NotificationRejected"  # the receiver answered 4xx
NOTIFICATION_UNAVAILABLE = "NotificationUnavailable"  # 5xx, 429, timeouts, connection errors

# Opening a pull (merge) request for a write-back branch (adapters/forge.py).
GIT_FORGE_AUTH_FAILED = "GitForgeAuthFailed"  # 401, an empty token
GIT_FORGE_ACCESS_DENIED = "GitForgeAccessDenied"  # 403 that is not a rate limit
GIT_FORGE_NOT_FOUND = "GitForgeNotFound"  # 404: no such repository, or not visible
GIT_FORGE_REJECTED = "GitForgeRejected"  # 422/409 validation, other 4xx, not the API
GIT_FORGE_UNAVAILABLE = "GitForgeUnavailable"  # 5xx, 429, timeouts, connection errors

# Policy reasons.
RECONCILED = "Reconciled"
SUSPENDED = "Suspended"
INVALID_SPEC = "InvalidSpec"
PROGRESSING = "Progressing"
FINDINGS_READ = "FindingsRead"
FINDINGS_UNAVAILABLE = "FindingsUnavailable"

# Registry reads and writes (adapters/registry/ classifies them).
REGISTRY_UNAVAILABLE = "RegistryUnavailable"  # 5xx, connection errors, retries exhausted
REGISTRY_RATE_LIMITED = "RegistryRateLimited"  # 429
REGISTRY_TIMEOUT = "RegistryTimeout"  # connect/read timeout
DIGEST_MISMATCH = "DigestMismatch"  # body does not hash to the digest the registry claims
REGISTRY_AUTH_FAILED = "RegistryAuthFailed"  # 401 after presenting credentials/token
REGISTRY_ACCESS_DENIED = "RegistryAccessDenied"  # 403
REGISTRY_CREDENTIALS_UNAVAILABLE = "RegistryCredentialsUnavailable"  # e.g. ECR token call denied
REPOSITORY_NOT_FOUND = "RepositoryNotFound"  # NAME_UNKNOWN
IMAGE_NOT_FOUND = "ImageNotFound"  # MANIFEST_UNKNOWN, deleted tag
BLOB_NOT_FOUND = "BlobNotFound"  # BLOB_UNKNOWN
INVALID_IMAGE_REFERENCE = "InvalidImageReference"  # malformed reference, NAME/TAG_INVALID
# A body, header or redirect no registry should send: not JSON, not an object,
# a digest that is not one, too large, a redirect loop or to a refused address.
INVALID_REGISTRY_RESPONSE = "InvalidRegistryResponse"
REGISTRY_REJECTED = "RegistryRejected"  # other 4xx: the request itself is wrong
# The registry's host resolves to an address the operator does not reach:
# loopback, link-local (cloud metadata), private… unless the admin allowed it.
REGISTRY_ADDRESS_REFUSED = "RegistryAddressRefused"
REGISTRY_CONFLICT = "RegistryConflict"  # 409
# The host failed several operations in a row: its circuit breaker is open and
# calls to it fail fast for a cool-down (adapters/registry/gate.py).
REGISTRY_CIRCUIT_OPEN = "RegistryCircuitOpen"

# AWS API failures (adapters/aws.py classifies them).
AWS_ACCESS_DENIED = "AwsAccessDenied"
AWS_CREDENTIALS_INVALID = "AwsCredentialsInvalid"
AWS_CREDENTIALS_EXPIRED = "AwsCredentialsExpired"
AWS_REQUEST_REJECTED = "AwsRequestRejected"
AWS_THROTTLED = "AwsThrottled"
AWS_UNAVAILABLE = "AwsUnavailable"

# The event source: a queue URL that names no queue (a typo, another region
# or account).
EVENT_QUEUE_NOT_FOUND = "EventQueueNotFound"

# Security Hub export.
SECURITY_HUB_NOT_ENABLED = "SecurityHubNotEnabled"

# Kubernetes writes: a write that is not digest-pinned was refused (a planner
# bug, never a user's).
UNPINNED_IMAGE = "UnpinnedImage"

# Builds: every builder may report these.
BUILD_FAILED = "BuildFailed"
BUILD_TIMED_OUT = "BuildTimedOut"
BUILD_LOST = "BuildLost"  # the builder no longer knows the build
NOTHING_PUSHED = "NothingPushed"  # the build finished but the tag did not move
NO_FREE_TAG = "NoFreeTag"  # every tag spec.rebuild.tagTemplate makes today exists already
# The recorded build was made for another key or pushes elsewhere (a v0.2 patch
# that adopted another tag's build): its result is never rolled out.
BUILD_MISMATCH = "BuildMismatch"

# Builds: the CodeBuild builder.
CODEBUILD_PROJECT_NOT_FOUND = "CodeBuildProjectNotFound"
CODEBUILD_PROJECT_NOT_SET = "CodeBuildProjectNotSet"

# Builds: the Job builder.
JOB_TEMPLATE_NOT_FOUND = "JobTemplateNotFound"
JOB_TEMPLATE_INVALID = "JobTemplateInvalid"
JOB_NAME_TAKEN = "JobNameTaken"

# Builds: the rebase builder.
REBASE_REFUSED = "RebaseRefused"  # BuildStatus.reason of every refusal but the next
OLD_BASE_NOT_FOUND = "OldBaseNotFound"
NEW_BASE_NOT_FOUND = "NewBaseNotFound"
BASE_UNKNOWN = "BaseUnknown"  # the image records no base, and the request names none
LAYER_NOT_FOUND = "LayerNotFound"
TAG_MOVED = "TagMoved"

# Rebase refusals (core/rebase.py decides them).
MEDIA_TYPE_MISMATCH = "MediaTypeMismatch"
INCONSISTENT_IMAGE = "InconsistentImage"
BASE_LAYERS_MISMATCH = "BaseLayersMismatch"
HISTORY_MISMATCH = "HistoryMismatch"
PLATFORM_MISMATCH = "PlatformMismatch"
INDEX_MISMATCH = "IndexMismatch"
UNSUPPORTED_LAYER = "UnsupportedLayer"
LAYER_CONTENT_MISMATCH = "LayerContentMismatch"

# Vulnerability scans and findings.
SCAN_COMPLETE = "ScanComplete"
SCAN_IN_PROGRESS = "ScanInProgress"
SCAN_FAILED = "ScanFailed"
SCAN_UNSUPPORTED = "ScanUnsupported"
SCAN_ELIGIBILITY_EXPIRED = "ScanEligibilityExpired"
SCAN_LIMIT_EXCEEDED = "ScanLimitExceeded"
SCAN_IMAGE_ARCHIVED = "ScanImageArchived"
SCAN_IMAGE_TOO_LARGE = "ScanImageTooLarge"
NO_SCAN = "NoScan"
SCAN_STATUS_UNKNOWN = "ScanStatusUnknown"

# Workload states that are not compliance states, and detection's refusals.
NOT_ADMITTED = "NotAdmitted"  # its namespace is outside the policy's namespaceSelector
POLICY_NOT_FOUND = "PolicyNotFound"  # it names a policy that does not exist
# A workload needs a patch but its imagepatch.dev/rebuild asks for a rebuild
# outside the policy's spec.rebuild.allowed: no build is started for it
# (counted by its compliance state, which it still has).
REBUILD_NOT_ALLOWED = "RebuildNotAllowed"
# A workload whose owner put a hold on it (imagepatch.dev/hold, core/hold.py):
# no patch is proposed for it, and a rollout skips it, until the hold ends.
HELD = "Held"
# A Warning Event: a workload's imagepatch.dev/hold cannot be read (or asks for
# too much) and is ignored; posted once per distinct annotation value.
HOLD_IGNORED = "HoldIgnored"
# A workload needs a patch but the policy does not patch it (spec.rollout.mode,
# core/gitops.py): GitOpsManaged when a GitOps tool delivers it (the message
# names the Kustomization, HelmRelease or Application), RolloutSkipped when the
# policy skips every workload. Counted by its compliance state, like the above.
GITOPS_MANAGED = "GitOpsManaged"
ROLLOUT_SKIPPED = "RolloutSkipped"
# rollout.mode GitWriteBack (core/rollout/writeback.py): the commit could not be
# made (the reconciler's reason says why: no file declares the image, Flux's image
# automation owns the line, the Git server refused), or was not applied in time.
GIT_WRITE_BACK_FAILED = "GitWriteBackFailed"
GIT_IMAGE_NOT_DECLARED = "GitImageNotDeclared"
GIT_FLUX_IMAGE_AUTOMATION = "FluxImageAutomation"
GIT_APPLY_TIMEOUT = "GitApplyTimeout"
# gitWriteBack.pullRequest: the request waits for review (Reconciling, not
# bounded by applyTimeout), or was closed without a merge (the target fails;
# nothing was applied, so nothing is rolled back).
PULL_REQUEST_OPEN = "PullRequestOpen"
PULL_REQUEST_CLOSED = "PullRequestClosed"
# gitWriteBack.argoCD on a policy whose workload Flux delivers: the override
# file would be one Flux never reads.
GIT_ARGOCD_ON_FLUX = "ArgoCDSettingsOnFluxWorkload"
# The policy's pass ran out of its time budget (--policy-pass-budget) before
# this container was evaluated: Unknown, naming the registry host that was slow.
PASS_BUDGET_EXCEEDED = "PassBudgetExceeded"
# Why a workload's base is untrusted or unknown, and why it is outdated.
BASE_IMAGE_OUTDATED = "BaseImageOutdated"
UNTRUSTED_BASE = "UntrustedBase"
NO_BASE_RECORDED = "NoBaseRecorded"
# baseImages.approveAfter: a new base digest published too recently is not
# adopted yet; the message says when it becomes eligible (core/approval.py).
BASE_NOT_YET_APPROVED = "BaseNotYetApproved"

# The report and Security Hub: a workload detection has not evaluated (yet,
# or any more).
NOT_EVALUATED = "NotEvaluated"
NO_LONGER_EVALUATED = "NoLongerEvaluated"
# Security Hub: the workload's owner removed imagepatch.dev/policy (not a fix).
OPTED_OUT = "OptedOut"

# Detection.
REBUILD_FAILED_BEFORE = "RebuildFailedBefore"
INVALID_ANNOTATION = "InvalidAnnotation"
# An Argo Rollout's spec.workloadRef that imagepatch cannot follow (issue 23).
WORKLOAD_REF_UNRESOLVED = "WorkloadRefUnresolved"
EVALUATION_FAILED = "EvaluationFailed"
PATCH_REJECTED = "ImagePatchRejected"

# Reconcile errors.
RECONCILE_ERROR = "ReconcileError"

# Kubernetes API refusals (adapters/kube.py classifies them).
FORBIDDEN = "Forbidden"
REJECTED = "Rejected"
NO_CRDS = "NoCRDs"

# Rebuilds (core/rebuild.py, reconcile/rebuilds.py, reconcile/rollouts.py).
REBUILD_NOT_CONFIGURED = "RebuildNotConfigured"
REBUILD_STRATEGY_UNAVAILABLE = "RebuildStrategyUnavailable"
REBUILD_UNAVAILABLE = "RebuildUnavailable"
SOURCE_NOT_PINNED = "SourceNotPinned"  # Event: a build of the branch, not of the running revision
VERIFICATION_FAILED = "VerificationFailed"
# spec.verification.signatures (core/signatures.py): no signature of the digest
# by the policy's keys; signatures found, none valid; no key that can verify.
SIGNATURE_MISSING = "SignatureMissing"
SIGNATURE_INVALID = "SignatureInvalid"
SIGNATURE_UNVERIFIABLE = "SignatureUnverifiable"
SIGNING_FAILED = "SigningFailed"  # the rebase could not sign what it pushed
# spec.verification.provenance (core/provenance.py).
PROVENANCE_MISSING = "ProvenanceMissing"
PROVENANCE_INVALID = "ProvenanceInvalid"

# The rollout planner (core/rollout/): why a patch stalls, and why a target
# was skipped, stopped, rolled back or failed.
NO_LONGER_NEEDED = "NoLongerNeeded"
POLICY_DELETED = "PolicyDeleted"
NO_MAINTENANCE_WINDOW = "NoMaintenanceWindow"
WORKLOAD_DELETED = "WorkloadDeleted"
CONTAINER_NOT_FOUND = "ContainerNotFound"
ALREADY_UP_TO_DATE = "AlreadyUpToDate"
IMAGE_CHANGED = "ImageChanged"
DIGEST_FAILED_BEFORE = "DigestFailedBefore"
# A StatefulSet or DaemonSet with updateStrategy OnDelete (core/kinds/shared.py).
ON_DELETE_STRATEGY = "OnDeleteStrategy"
# The primary Deployment a Flagger Canary controls: Flagger's to write (core.flagger).
FLAGGER_PRIMARY = "FlaggerPrimary"
EXTERNAL_CHANGE = "ExternalChange"
EARLIER_TARGET_FAILED = "EarlierTargetFailed"
# The new image failed its health gate in an earlier wave (rollout.onTargetFailure
# Continue): later waves do not start, whatever their namespace.
EARLIER_WAVE_FAILED = "EarlierWaveFailed"
# A CronJob (no trial run) whose next scheduled run is not due within
# rollout.cronJobRunWithin: not patched, since no run would verify it in time.
CRONJOB_RUN_TOO_FAR = "CronJobRunTooFar"
ROLLBACK_DISABLED = "RollbackDisabled"
HEALTH_GATE_FAILED = "HealthGateFailed"
ROLLING_BACK = "RollingBack"
ROLLED_BACK = "RolledBack"
ROLLBACK_FAILED = "RollbackFailed"
# An OrderedReady StatefulSet's pods of the bad revision deleted after the
# revert (Kubernetes' "forced rollback"; core/kinds/statefulset.py).
FORCED_ROLLBACK = "ForcedRollback"
