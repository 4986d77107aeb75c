"""A small async client for OCI registries (the distribution API), over httpx.

Callers import from here; the modules behind it each hold one concern:

* ``client.py``: ``RegistryClient`` and its reads (``resolve_digest``,
  ``image_lineage``, ``platform_digests``, ``head_manifest``,
  ``get_manifest``, ``get_blob``), and ``parse_document``;
* ``writes.py``: blob and manifest writes and streamed blob reads, for the
  rebase strategy;
* ``transport.py``: the one ``_send`` serving reads and writes, bounded
  bodies, redirects, ``RetryPolicy`` and status classification;
* ``auth.py``: ``WWW-Authenticate`` challenges, Bearer tokens, and which
  credentials a host gets (per policy, with ``RegistryClient.for_policy``);
* ``reach.py``: ``Reach``, which addresses the client may connect to (names
  resolved, checked and pinned at connect time);
* ``credentials.py``: ``Credentials``, ``StaticCredentials``
  (dockerconfigjson), ``PolicySecrets`` and ``EcrCredentials``;
* ``pullthrough.py``: ``PullThroughRules``, the upstream an ECR pull-through
  cache repository mirrors (``DescribePullThroughCacheRules``);
* ``gate.py``: ``HostGate``, operations in flight per host and a circuit
  breaker per host (``core/breaker.py``), shared by every policy's view;
* ``cache.py``: the LRU of digest-addressed reads;
* ``stats.py``: ``RequestStats``, requests, errors and cache hits per host.

The OCI media types and base annotations it reads are in ``core/oci.py``.
Errors are classified here (``adapters/errors.py``). No message, log line or
``repr`` carries a password or token.
"""

from __future__ import annotations

from imagepatch.adapters.registry.client import (
    Lineage,
    Manifest,
    ManifestInfo,
    RegistryClient,
    parse_document,
)
from imagepatch.adapters.registry.credentials import (
    CredentialProvider,
    Credentials,
    DockerConfigError,
    EcrCredentials,
    PolicySecrets,
    StaticCredentials,
    normalize_registry_key,
)
from imagepatch.adapters.registry.pullthrough import PullThroughRules
from imagepatch.adapters.registry.reach import LOOPBACK_NETWORKS, Reach, address_problem
from imagepatch.adapters.registry.stats import RequestStats
from imagepatch.adapters.registry.transport import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    RetryPolicy,
)
from imagepatch.core.oci import ANNOTATION_BASE_DIGEST, ANNOTATION_BASE_NAME, MANIFEST_ACCEPT

__all__ = [
    "ANNOTATION_BASE_DIGEST",
    "ANNOTATION_BASE_NAME",
    "MANIFEST_ACCEPT",
    "MAX_CONFIG_BYTES",
    "MAX_MANIFEST_BYTES",
    "LOOPBACK_NETWORKS",
    "CredentialProvider",
    "Credentials",
    "DockerConfigError",
    "EcrCredentials",
    "Lineage",
    "Manifest",
    "ManifestInfo",
    "PolicySecrets",
    "PullThroughRules",
    "Reach",
    "RegistryClient",
    "RequestStats",
    "RetryPolicy",
    "StaticCredentials",
    "address_problem",
    "normalize_registry_key",
    "parse_document",
]
