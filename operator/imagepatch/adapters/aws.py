"""Classify botocore errors once for every AWS adapter, and configure their clients alike.

The AWS adapters (``findings.py`` for ECR and Inspector2, ``builders/codebuild.py``,
``events.py`` for SQS, ``securityhub.py``) wrap each boto3 call in
:func:`classified`, which turns whatever botocore raises into the errors of
``adapters/errors.py``: credentials, permissions and bad requests are
:class:`~imagepatch.adapters.errors.ConfigurationError`, throttling and
outages that outlast botocore's retries are
:class:`~imagepatch.adapters.errors.TransientError`. What is common lives
here: the reasons (``AWS_*``), the error codes of each class, the order in
which they are checked, and most of the wording. What is a service's own is
passed in as :class:`ErrorRules`: the codes that mean something particular to
it (a missing project or queue, a hub that is not enabled), extra codes for
the common classes, and the advice its messages give.

Messages are built from the action (``service:Operation``), the error code,
the request id and names the adapter chose. AWS's own message text is left
out, since it can quote principals, policies or request parameters, and so is
anything of the credentials.

Clients: :func:`client_config` gives botocore's *standard* retry mode
(jittered exponential backoff, ``total_max_attempts`` in all) and timeouts,
the same for every adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PaginationError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    TokenRetrievalError,
)

from imagepatch.adapters import metrics
from imagepatch.adapters.errors import AdapterError, ConfigurationError, TransientError
from imagepatch.core.reasons import (
    AWS_ACCESS_DENIED,
    AWS_CREDENTIALS_EXPIRED,
    AWS_CREDENTIALS_INVALID,
    AWS_REQUEST_REJECTED,
    AWS_THROTTLED,
    AWS_UNAVAILABLE,
)

__all__ = [
    "ACCESS_DENIED_CODES",
    "AWS_ACCESS_DENIED",
    "AWS_CREDENTIALS_EXPIRED",
    "AWS_CREDENTIALS_INVALID",
    "AWS_REQUEST_REJECTED",
    "AWS_THROTTLED",
    "AWS_UNAVAILABLE",
    "CONNECT_TIMEOUT",
    "DEFAULT_MAX_ATTEMPTS",
    "EXPIRED_CREDENTIAL_CODES",
    "INVALID_CREDENTIAL_CODES",
    "READ_TIMEOUT",
    "SERVER_CODES",
    "THROTTLING_CODES",
    "ClientFailure",
    "ErrorRules",
    "classified",
    "client_config",
    "error_code",
]


# Attempts in total, the first included. Five gives at most about 1+2+4+8 s
# of jittered backoff, enough to ride out a burst of throttling without holding
# a reconcile for long; the reconciler requeues after that. It is passed as
# botocore's ``total_max_attempts``: its ``max_attempts`` key counts retries
# only, so ``max_attempts: N`` would make N+1 attempts (measured in
# tests/integration/test_findings.py).
DEFAULT_MAX_ATTEMPTS = 5
# A hung connection must not hold a worker thread for botocore's 60 s default.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 30

ACCESS_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})
INVALID_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
EXPIRED_CREDENTIAL_CODES = frozenset(
    {"ExpiredTokenException", "ExpiredToken", "TokenRefreshRequired"}
)
# The codes botocore's standard mode retries as throttling (botocore.retries.standard).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
    }
)
# Failures on the AWS side whatever the HTTP status says (any 5xx is one too).
SERVER_CODES = frozenset({"ServerException", "InternalServerException"})

_CONNECTION_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)
_CREDENTIAL_ERRORS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    TokenRetrievalError,
)


def client_config(max_attempts: int, *, read_timeout: float = READ_TIMEOUT) -> Config:
    """A client's config: standard retry mode, ``max_attempts`` in all, and the timeouts."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
    )


def error_code(exc: ClientError) -> str:
    """The error code of ``exc`` (``""`` if AWS sent none)."""
    return str(exc.response.get("Error", {}).get("Code") or "")


@dataclass(frozen=True)
class ClientFailure:
    """A ``ClientError`` reduced to what a message may quote (never AWS's text)."""

    action: str  # service:Operation
    where: str  # what the call was about, as the adapter names it
    region: str | None
    code: str  # "" if AWS sent none
    status: int  # the HTTP status, 0 if unknown
    suffix: str  # " (request id …)", or "" (none, or the adapter quotes none)


@dataclass(frozen=True, kw_only=True)
class ErrorRules:
    """What one adapter adds to :func:`classified`; the defaults are the common case.

    ``service_codes`` maps error codes of the adapter's service to the error
    they mean; they are checked before any other. The code sets sort the
    remaining codes into the common classes; ``rejected_codes`` are bad
    requests worth their own wording. The ``*_advice`` strings follow the
    message of their class after a colon (``{action}`` is filled in; an
    empty one adds nothing), and ``otherwise`` is the verb for any other 4xx.
    The templates word failures that never reached an answer from AWS, with
    ``{action}``, ``{where}``, ``{region}``, ``{error}`` (the exception's
    class) and, for ``invalid_request`` only, ``{detail}`` (botocore's text,
    which names the parameter and can quote its value);
    ``repeated_page=None`` leaves a repeated page token to ``botocore_failed``.
    """

    service_codes: Mapping[str, Callable[[ClientFailure], AdapterError]] = field(
        default_factory=dict
    )
    access_denied_codes: frozenset[str] = ACCESS_DENIED_CODES
    invalid_credential_codes: frozenset[str] = INVALID_CREDENTIAL_CODES
    throttling_codes: frozenset[str] = THROTTLING_CODES
    server_codes: frozenset[str] = SERVER_CODES
    rejected_codes: frozenset[str] = frozenset()
    # SQS's JSON protocol keeps the older query protocol's code in QueryErrorCode.
    query_error_codes: bool = False
    request_ids: bool = True
    region_hint: str = "set AWS_REGION"
    access_advice: str = "allow {action} to the operator's IAM role (EKS Pod Identity or IRSA)"
    credentials_advice: str = (
        "check the IAM role associated with the operator's ServiceAccount "
        "(EKS Pod Identity or IRSA), not static keys"
    )
    expired_advice: str = (
        "check that the operator pod's web identity token is mounted and refreshed, "
        "and restart the pod after changing its role"
    )
    otherwise: str = "was rejected"
    invalid_request: str = "{action} for {where}: {detail}"
    unreachable: str = "{action} in {region} could not be reached ({error})"
    repeated_page: str | None = None
    botocore_failed: str = "{action} failed ({error})"


_COMMON = ErrorRules()


@contextlib.contextmanager
def classified(
    action: str, where: str, region: str | None, rules: ErrorRules = _COMMON
) -> Iterator[None]:
    """``_classify``, and each classified AWS failure counted in the metrics by reason."""
    try:
        with _classify(action, where, region, rules):
            yield
    except AdapterError as exc:
        if isinstance(exc.__context__, ClientError | BotoCoreError):
            metrics.AWS_ERRORS.labels(reason=exc.reason).inc()
        raise


@contextlib.contextmanager
def _classify(action: str, where: str, region: str | None, rules: ErrorRules) -> Iterator[None]:
    """Turn botocore's exceptions into adapter errors, with safe, actionable messages.

    ``action`` is ``service:Operation``; ``where`` names what the call was
    about (``repository 'app'``, ``queue 'events'``). Adapter errors raised
    inside pass unchanged.
    """

    def words(template: str, exc: Exception) -> str:
        return template.format(
            action=action,
            where=where,
            region=region or "the default region",
            error=type(exc).__name__,
            detail=exc,
        )

    try:
        yield
    except AdapterError:
        raise
    except ClientError as exc:
        raise _from_client_error(exc, action, where, region, rules) from None
    except _CREDENTIAL_ERRORS as exc:
        raise ConfigurationError(
            f"no usable AWS credentials for {action} ({type(exc).__name__}): give the "
            "operator's ServiceAccount an IAM role through EKS Pod Identity or IRSA",
            reason=AWS_CREDENTIALS_INVALID,
        ) from None
    except NoRegionError:
        raise ConfigurationError(
            f"no AWS region for {action}: {rules.region_hint}", reason=AWS_REQUEST_REJECTED
        ) from None
    except ParamValidationError as exc:
        # Our own request was malformed (a name the service cannot hold).
        raise ConfigurationError(
            words(rules.invalid_request, exc), reason=AWS_REQUEST_REJECTED
        ) from None
    except _CONNECTION_ERRORS as exc:
        raise TransientError(words(rules.unreachable, exc), reason=AWS_UNAVAILABLE) from None
    except PaginationError as exc:
        # The same nextToken twice: the service misbehaved; a later try may not.
        template = rules.repeated_page or rules.botocore_failed
        raise TransientError(words(template, exc), reason=AWS_UNAVAILABLE) from None
    except BotoCoreError as exc:
        # Retries exhausted, or anything else botocore gave up on.
        raise TransientError(words(rules.botocore_failed, exc), reason=AWS_UNAVAILABLE) from None


def _from_client_error(
    exc: ClientError, action: str, where: str, region: str | None, rules: ErrorRules
) -> AdapterError:
    # Built from the codes, the request id and names we chose: AWS's message
    # text can quote principals, policies or request parameters.
    error = exc.response.get("Error", {})
    code = error_code(exc)
    codes = [code]
    if rules.query_error_codes:
        codes.append(str(error.get("QueryErrorCode") or ""))
    codes = [c for c in dict.fromkeys(codes) if c]
    meta = exc.response.get("ResponseMetadata", {})
    status = int(meta.get("HTTPStatusCode") or 0)
    request_id = meta.get("RequestId") if rules.request_ids else None
    suffix = f" (request id {request_id})" if request_id else ""
    failure = ClientFailure(action, where, region, code, status, suffix)

    def among(known: frozenset[str]) -> bool:
        return any(c in known for c in codes)

    def advice(text: str) -> str:
        return f": {text.format(action=action)}" if text else ""

    for c in codes:
        if special := rules.service_codes.get(c):
            return special(failure)
    if among(rules.access_denied_codes):
        return ConfigurationError(
            f"{action} on {where} was denied ({code}){suffix}{advice(rules.access_advice)}",
            reason=AWS_ACCESS_DENIED,
        )
    if among(rules.invalid_credential_codes):
        return ConfigurationError(
            f"{action} rejected the AWS credentials ({code}){suffix}"
            + advice(rules.credentials_advice),
            reason=AWS_CREDENTIALS_INVALID,
        )
    if among(EXPIRED_CREDENTIAL_CODES):
        return ConfigurationError(
            f"{action} refused expired AWS credentials ({code}){suffix}"
            + advice(rules.expired_advice),
            reason=AWS_CREDENTIALS_EXPIRED,
        )
    if among(rules.throttling_codes):
        return TransientError(
            f"{action} on {where} is still throttled after retries ({code}){suffix}",
            reason=AWS_THROTTLED,
        )
    if status >= 500 or among(rules.server_codes):
        return TransientError(
            f"{action} on {where} failed on the AWS side ({code or status}){suffix}",
            reason=AWS_UNAVAILABLE,
        )
    if among(rules.rejected_codes):
        return ConfigurationError(
            f"{action} rejected the request for {where} ({code}){suffix}",
            reason=AWS_REQUEST_REJECTED,
        )
    # Any other 4xx: a request that will fail the same way until something changes.
    return ConfigurationError(
        f"{action} on {where} {rules.otherwise} ({code or status}){suffix}",
        reason=AWS_REQUEST_REJECTED,
    )
