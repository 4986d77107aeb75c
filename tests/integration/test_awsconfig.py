"""AWS Config evaluations (adapters/awsconfig.py) against moto, and its refusals via Stubber.

moto answers ``PutEvaluations`` only with ``TestMode`` and never refuses an
evaluation, so the ``FailedEvaluations`` path is driven with botocore's
Stubber (as DESIGN.md says for what moto cannot fail).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import boto3
import pytest
from botocore.stub import ANY, Stubber

from imagepatch.adapters.awsconfig import ConfigEvaluations
from imagepatch.adapters.errors import ConfigurationError
from tests.support.moto import DUMMY_CREDENTIALS

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Result:
    kind: str
    namespace: str
    name: str
    state: str
    message: str = ""


def exporter(endpoint: str | None = None) -> ConfigEvaluations:
    session = boto3.Session(region_name="us-east-1", **DUMMY_CREDENTIALS)
    out = ConfigEvaluations(cluster_name="c", result_token="token", region="us-east-1",
                            test_mode=True, session=session)
    out._client_made = session.client("config", endpoint_url=endpoint, region_name="us-east-1")
    return out


def test_evaluations_go_in_calls_of_100_and_only_once(moto_server) -> None:
    config = exporter(moto_server.endpoint_url)
    sizes: list[int] = []
    config.config.meta.events.register(
        "before-parameter-build.config-service.PutEvaluations",
        lambda params, **_: sizes.append(len(params["Evaluations"])))
    fleet = [Result("Deployment", "shop", f"web-{i}", "Compliant") for i in range(150)]
    assert asyncio.run(config.export({"p": fleet}, now=NOW)) == 150
    assert sizes == [100, 50]
    assert asyncio.run(config.export({"p": fleet}, now=NOW)) == 0
    fleet[3] = Result("Deployment", "shop", "web-3", "Vulnerable", "CVE-2026-1")
    assert asyncio.run(config.export({"p": fleet}, now=NOW)) == 1
    assert config.sent["c/shop/Deployment/web-3"].compliance == "NON_COMPLIANT"


def test_a_refused_evaluation_is_sent_again_next_pass() -> None:
    config = exporter("http://127.0.0.1:9")
    web, api = (Result("Deployment", "shop", n, "Compliant") for n in ("web", "api"))
    with Stubber(config.config) as stub:
        stub.add_response("put_evaluations", {"FailedEvaluations": [{
            "ComplianceResourceType": "Imagepatch::Kubernetes::Workload",
            "ComplianceResourceId": "c/shop/Deployment/api", "ComplianceType": "COMPLIANT",
            "OrderingTimestamp": NOW}]}, {"Evaluations": ANY, "ResultToken": "token",
                                          "TestMode": True})
        assert asyncio.run(config.export({"p": [web, api]}, now=NOW)) == 1
        stub.add_response("put_evaluations", {"FailedEvaluations": []}, {
            "Evaluations": [{"ComplianceResourceType": "Imagepatch::Kubernetes::Workload",
                             "ComplianceResourceId": "c/shop/Deployment/api",
                             "ComplianceType": "COMPLIANT", "Annotation": ANY,
                             "OrderingTimestamp": NOW}],
            "ResultToken": "token", "TestMode": True})
        assert asyncio.run(config.export({"p": [web, api]}, now=NOW)) == 1
        stub.assert_no_pending_responses()
    assert set(config.sent) == {"c/shop/Deployment/web", "c/shop/Deployment/api"}


def test_a_denied_call_raises_the_classified_error_and_remembers_nothing() -> None:
    config = exporter("http://127.0.0.1:9")
    with Stubber(config.config) as stub:
        stub.add_client_error("put_evaluations", "AccessDeniedException", http_status_code=400)
        with pytest.raises(ConfigurationError, match="config:PutEvaluations .* was denied"):
            asyncio.run(config.export({"p": [Result("Deployment", "s", "w", "Compliant")]},
                                      now=NOW))
    assert config.sent == {}
