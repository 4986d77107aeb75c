"""moto in server mode, as a subprocess, standing in for the AWS APIs.

``MotoServer.start(workdir)`` runs ``python -m moto.server -H 127.0.0.1 -p
PORT`` (the same as the ``moto_server`` script) from the running interpreter,
so the venv's moto is used. A subprocess rather than the in-process
``ThreadedMotoServer`` keeps moto's global patching out of the test process and
lets the operator under test reach it over HTTP exactly like real AWS.

Gaps worth knowing (see /work/shared/notes/local-deps.md): ECR's computed image
digest is wrong, so always pass ``imageDigest``; scan findings are canned
unless injected with ``inject_ecr_scan_findings`` *after* ``start_image_scan``,
and each injected result answers the imageId key it is queried with (tag vs
digest matters).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from tests.support.ports import ServerProcess, http_ok

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
# Dummy credentials: moto accepts anything, and fixed values keep boto3 from
# looking for real ones (env, ~/.aws, instance metadata).
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class MotoServer:
    """A moto server reachable at ``endpoint_url``."""

    region = REGION
    account_id = ACCOUNT_ID

    def __init__(self, endpoint_url: str, *, server: ServerProcess | None = None) -> None:
        self.endpoint_url = endpoint_url
        self._server = server
        self.http = httpx.Client(base_url=endpoint_url, timeout=30.0)

    @classmethod
    def start(cls, workdir: Path, *, timeout: float = 60.0) -> MotoServer:
        workdir.mkdir(parents=True, exist_ok=True)
        server = ServerProcess.start(
            "moto_server",
            lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            # /moto-api/ is moto's dashboard; any HTTP answer means Flask is up.
            lambda port: http_ok(f"http://127.0.0.1:{port}/moto-api/"),
            workdir / "moto.log",
            # Importing moto takes a few seconds on a busy 2-core machine.
            timeout=timeout,
        )
        return cls(f"http://127.0.0.1:{server.port}", server=server)

    def stop(self) -> None:
        self.http.close()
        if self._server is not None:
            self._server.stop()

    @property
    def log_path(self) -> Path | None:
        return self._server.log_path if self._server else None

    def _post(self, path: str, payload: Any = None) -> None:
        resp = self.http.post(path, json=payload)
        if resp.status_code >= 300:
            tail = f"\nmoto log tail:\n{self._server.tail(20)}" if self._server else ""
            raise RuntimeError(f"POST {path}: HTTP {resp.status_code} {resp.text[:500]}{tail}")

    def reset(self) -> None:
        """Forget every resource in every service (``POST /moto-api/reset``)."""
        self._post("/moto-api/reset")

    def client(self, service: str, **kwargs: Any):
        """A boto3 client for ``service`` against this server, with dummy credentials."""
        kwargs.setdefault("region_name", self.region)
        # Standard retry mode is what the operator uses; few attempts keep a
        # broken test from spinning.
        kwargs.setdefault("config", Config(retries={"mode": "standard", "max_attempts": 2}))
        return boto3.client(service, endpoint_url=self.endpoint_url, **DUMMY_CREDENTIALS, **kwargs)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (e.g. the operator) that should talk to this moto."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
        }

    def inject_ecr_scan_findings(self, *results: dict[str, Any]) -> None:
        """Queue DescribeImageScanFindings responses for the next describe calls.

        Call this *after* ``start_image_scan``. Each result is a whole
        DescribeImageScanFindings response (``repositoryName``, ``imageId``,
        ``imageScanStatus``, ``imageScanFindings`` ...).
        """
        self._post(
            "/moto-api/static/ecr/scan-finding-results",
            {"results": list(results), "region": self.region},
        )

    def inject_inspector2_findings(self, *results: list[dict[str, Any]]) -> None:
        """Queue Inspector2 ListFindings results: each is one list of findings.

        moto applies no filtering. The first ListFindings call with a given
        (filterCriteria, maxResults, nextToken, sortCriteria) takes the next
        queued list and keeps answering that key with it.
        """
        self._post(
            "/moto-api/static/inspector2/findings-results",
            {"results": list(results), "region": self.region},
        )

    def __repr__(self) -> str:
        return f"MotoServer({self.endpoint_url!r})"
