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

# Policy reasons.
RECONCILED = "Reconciled"
SUSPENDED = "Suspended"
INVALID_SPEC = "InvalidSpec"
PROGRESSING = "Progressing"
FINDINGS_READ = "FindingsRead"
FINDINGS_UNAVAILABLE = "FindingsUnavailable"
