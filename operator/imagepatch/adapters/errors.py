"""The errors every adapter raises: transient, configuration, conflict.

Adapters classify a failure once, where it happens (an HTTP status, a botocore
error code, a Kubernetes API status), and raise one of these. Nothing above
the adapters sees a raw httpx, botocore or kubernetes exception, and
reconcile maps these three kinds to kopf in one place:

* ``TransientError``: try again later (429, 5xx, timeouts, connection
  errors). ``retry_after`` carries the server's hint, if any, in seconds.
  The adapter has already retried within its budget; the reconciler requeues
  instead of sleeping, and shows ``Ready=False`` with ``reason``.
* ``ConfigurationError``: a person must change something (credentials, a
  repository name, a reference, a permission). Retrying will not help until
  the spec, the Secret or IAM changes, so it ends ``Stalled``.
  ``NotFoundError`` is the subclass for what does not exist (repository,
  manifest, blob), because callers often treat "gone" on its own (a deleted
  base tag).
* ``ConflictError``: someone else changed the object (409, a failed
  resourceVersion precondition); re-read and re-plan.

Every error has ``reason``, a CamelCase string for conditions, Events and
metrics. Messages name hosts, repositories, references and status codes, but
never a credential or token: adapters build them from known-safe parts, and
never copy an auth server's response body or a request header into one.
"""

from __future__ import annotations

from typing import Any

from imagepatch.core.reasons import (
    BLOB_NOT_FOUND,
    DIGEST_MISMATCH,
    IMAGE_NOT_FOUND,
    INVALID_IMAGE_REFERENCE,
    INVALID_REGISTRY_RESPONSE,
    REGISTRY_ACCESS_DENIED,
    REGISTRY_ADDRESS_REFUSED,
    REGISTRY_AUTH_FAILED,
    REGISTRY_CIRCUIT_OPEN,
    REGISTRY_CONFLICT,
    REGISTRY_CREDENTIALS_UNAVAILABLE,
    REGISTRY_RATE_LIMITED,
    REGISTRY_REJECTED,
    REGISTRY_TIMEOUT,
    REGISTRY_UNAVAILABLE,
    REPOSITORY_NOT_FOUND,
)

__all__ = [
    "AdapterError",
    "ConfigurationError",
    "ConflictError",
    "NotFoundError",
    "TransientError",
    # Reasons.
    "BLOB_NOT_FOUND",
    "DIGEST_MISMATCH",
    "IMAGE_NOT_FOUND",
    "INVALID_IMAGE_REFERENCE",
    "INVALID_REGISTRY_RESPONSE",
    "REGISTRY_ACCESS_DENIED",
    "REGISTRY_ADDRESS_REFUSED",
    "REGISTRY_AUTH_FAILED",
    "REGISTRY_CIRCUIT_OPEN",
    "REGISTRY_CONFLICT",
    "REGISTRY_CREDENTIALS_UNAVAILABLE",
    "REGISTRY_RATE_LIMITED",
    "REGISTRY_REJECTED",
    "REGISTRY_TIMEOUT",
    "REGISTRY_UNAVAILABLE",
    "REPOSITORY_NOT_FOUND",
]

# The reasons above are defined in core/reasons.py and re-exported here, where
# the adapters have always found them.


class AdapterError(Exception):
    """Base of all classified adapter errors.

    ``reason`` is CamelCase; ``str(error)`` is the message, safe to show in a
    condition, an Event or a log line.
    """

    default_reason = "AdapterError"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep reason (and subclass fields) across pickling/copying.
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[AdapterError], state: dict[str, Any]) -> AdapterError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class TransientError(AdapterError):
    """Try again later. ``retry_after`` (seconds) is the server's hint, if any."""

    default_reason = REGISTRY_UNAVAILABLE

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class ConfigurationError(AdapterError):
    """A person must fix something (credentials, names, permissions) first."""

    default_reason = REGISTRY_REJECTED


class NotFoundError(ConfigurationError):
    """The repository, manifest (tag or digest) or blob does not exist."""

    default_reason = IMAGE_NOT_FOUND


class ConflictError(AdapterError):
    """The target changed under us (409, a failed precondition): re-read, re-plan."""

    default_reason = REGISTRY_CONFLICT
