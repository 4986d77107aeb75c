"""The rebuild strategies against real components: registry, buildah, API server, moto.

Given an app image built on a base that has since moved, when a builder is
started and polled, then it ends with the digest of an image that was really
pushed (or with a failure that says why), and starting it again for the same
key never starts a second build.

* ``external``: the test plays CI and rebuilds the app with buildah; only an
  image built on the *new* base is accepted.
* ``job``: build Jobs on the real API server in ``imagepatch-builds``. The
  test plays the build Job's work (buildah with the Job's own BASE_IMAGE and
  TARGET_IMAGE) and kwok completes its pod; the ``job-fail`` pod behaviour
  fails it with exit code 1.
* ``codebuild``: moto in server mode for the call shape (a ``before-call``
  hook records what goes on the wire; moto accepts environment overrides but
  drops them, and its builds are SUCCEEDED at the first read), and botocore's
  Stubber on the builder's own client for the statuses moto never produces.

Async code runs under ``asyncio.run``, one event loop per scenario, with the
registry client made inside it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from imagepatch.adapters.builders import BuildRequest, BuildState, BuildStatus
from imagepatch.adapters.builders.codebuild import CodeBuildBuilder, idempotency_token
from imagepatch.adapters.builders.external import ExternalBuilder
from imagepatch.adapters.builders.job import (
    KEY_HASH_LABEL,
    JobBuilder,
    job_name,
    key_hash,
    render_job,
)
from imagepatch.adapters.builders.lineage import base_by_layers
from imagepatch.adapters.errors import ConfigurationError, NotFoundError, TransientError
from imagepatch.adapters.kube import Kube
from imagepatch.adapters.registry import LOOPBACK_NETWORKS, RegistryClient, RetryPolicy
from imagepatch.core.images import parse_image
from imagepatch.core.rebuild import idempotency_key
from imagepatch.reconcile.rebuilds import with_source_revision
from tests.support.images import (
    ImageRef,
    make_base_image,
    make_base_index,
    platform_digest,
    strip_lineage,
    unique_repo,
)
from tests.support.moto import DUMMY_CREDENTIALS
from tests.support.wait import wait_for

NAMESPACE = "imagepatch-builds"  # the default --build-namespace
BEHAVIOR = "sim.imagepatch.dev/behavior"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def with_registry(scenario: Callable[[RegistryClient], Awaitable[Any]]) -> Any:
    """Run ``scenario`` in a fresh event loop with a registry client made in it."""

    async def main() -> Any:
        async with RegistryClient(retry=RetryPolicy.disabled(),
                                  allow_networks=LOOPBACK_NETWORKS) as registry:
            return await scenario(registry)

    return asyncio.run(main())


def request_for(
    app: ImageRef, base: ImageRef, *, strategy: str, new_base_digest: str | None = None, **kw: Any
) -> BuildRequest:
    """What the reconciler would ask: rebuild ``app`` (running now) on ``base``'s digest."""
    digest = new_base_digest or base.digest
    return BuildRequest(
        key=idempotency_key(image=app.repository, tag=app.tag or "latest",
                            current_digest=app.digest, new_base_digest=digest),
        strategy=strategy,
        image=app.repository,
        tag=app.tag or "latest",
        current_digest=app.digest,
        base_name=base.ref if base.tag else base.repository,
        base_digest=digest,
        **kw,
    )


def pinned_ref(reference: str) -> ImageRef:
    """``host/repo@sha256:…`` as the test helpers' ImageRef (for ``build_app``)."""
    repository, _, digest = reference.partition("@")
    return ImageRef(repository, None, digest)


# -- external: CI pushes, the operator waits --------------------------------------------------


def test_external_takes_only_the_ci_image_built_on_the_new_base(registry, buildah):
    base_repo, app_repo = unique_repo("base"), unique_repo("app")
    old_base = make_base_image(registry, base_repo, "1", marker="base-v1")
    app = buildah.build_app(old_base, app_repo, "1.0")
    new_base = make_base_image(registry, base_repo, "1", marker="base-v2")
    request = request_for(app, new_base, strategy="external", started_at=T0)
    clock = Clock()

    async def scenario(reg: RegistryClient) -> None:
        builder = ExternalBuilder(reg, clock=clock)
        build_id = await builder.start(request)
        assert build_id.startswith("external:")
        assert await builder.start(request) == build_id  # idempotent, and nothing started
        assert registry.head_digest(app_repo, "1.0") == app.digest

        waiting = await builder.poll(build_id, request)
        assert waiting.state is BuildState.RUNNING
        assert "still the current image" in waiting.message

        # CI rebuilds from a stale base: a new digest, but not the rebuild we wait for.
        stale = await asyncio.to_thread(buildah.build_app, old_base, app_repo, "1.0")
        not_it = await builder.poll(build_id, request)
        assert not_it.state is BuildState.RUNNING
        assert stale.digest in not_it.message and old_base.digest in not_it.message

        # CI rebuilds FROM the base's tag, which now is the new base.
        rebuilt = await asyncio.to_thread(buildah.build_app, new_base, app_repo, "1.0", pinned=False)
        clock.advance(minutes=5)
        done = await builder.poll(build_id, request)
        assert done.state is BuildState.SUCCEEDED, done
        assert done.digest == rebuilt.digest == registry.head_digest(app_repo, "1.0")

    with_registry(scenario)


def test_external_accepts_an_image_recording_a_platform_digest_of_a_multi_arch_base(registry, buildah):
    # buildah records the linux/amd64 manifest digest of an index base; the
    # operator tracks the index digest.
    base_repo, app_repo = unique_repo("base"), unique_repo("app")
    current = make_base_image(registry, app_repo, "2.0", marker="app-before")
    new_base = make_base_index(registry, base_repo, "3", marker="index-v2")
    rebuilt = buildah.build_app(new_base, app_repo, "2.0")
    request = request_for(current, new_base, strategy="external")

    async def scenario(reg: RegistryClient) -> tuple[BuildStatus, BuildStatus]:
        builder = ExternalBuilder(reg)
        looked_up = await builder.poll(await builder.start(request), request)
        # A caller that passes the platform digests itself is taken at its word.
        told = dataclasses.replace(request, extra={"base_platforms": "sha256:" + "0" * 64})
        return looked_up, await builder.poll(await builder.start(told), told)

    looked_up, told_otherwise = with_registry(scenario)
    assert looked_up.state is BuildState.SUCCEEDED, looked_up
    assert looked_up.digest == rebuilt.digest
    assert platform_digest(registry, new_base) in looked_up.message
    assert told_otherwise.state is BuildState.RUNNING


def test_external_takes_a_push_that_records_no_base_by_its_layers(registry, buildah):
    """Lineage known only from the imagepatch.dev/base-image annotation: the image and
    its rebuild record no base, so the rebuild is the push whose layers start with the
    target base's layers."""
    base_repo, app_repo = unique_repo("base"), unique_repo("app")
    old_base = make_base_image(registry, base_repo, "1", marker="base-v1")
    app = strip_lineage(registry, buildah.build_app(old_base, app_repo, "1.0"))
    new_base = make_base_image(registry, base_repo, "1", marker="base-v2")
    request = request_for(app, new_base, strategy="external")

    async def scenario(reg: RegistryClient) -> tuple[BuildStatus, BuildStatus]:
        builder = ExternalBuilder(reg)
        build_id = await builder.start(request)
        # CI rebuilds from a stale cache on the old base: not it.
        await asyncio.to_thread(
            lambda: strip_lineage(registry, buildah.build_app(old_base, app_repo, "1.0"))
        )
        stale = await builder.poll(build_id, request)
        await asyncio.to_thread(
            lambda: strip_lineage(registry, buildah.build_app(new_base, app_repo, "1.0"))
        )
        return stale, await builder.poll(build_id, request)

    stale, done = with_registry(scenario)
    assert stale.state is BuildState.RUNNING
    assert "a base it does not record" in stale.message
    assert done.state is BuildState.SUCCEEDED, done
    assert done.digest == registry.head_digest(app_repo, "1.0")
    assert done.message.endswith(f"built on {new_base.digest}")


def test_base_by_layers_names_the_platform_manifest_of_a_multi_arch_base(registry, buildah):
    base_repo, app_repo, other_repo = unique_repo("base"), unique_repo("app"), unique_repo("other")
    base = make_base_index(registry, base_repo, "3", marker="index-v1")
    app = strip_lineage(registry, buildah.build_app(base, app_repo, "1"))
    other = make_base_image(registry, other_repo, "1", marker="elsewhere")

    async def scenario(reg: RegistryClient) -> tuple[str, str]:
        image = parse_image(app.pinned)
        return (
            await base_by_layers(reg, image, parse_image(base.pinned)),
            await base_by_layers(reg, image, parse_image(other.pinned)),
        )

    on_base, on_other = with_registry(scenario)
    assert on_base == platform_digest(registry, base)
    assert on_other == ""


def test_the_source_revision_is_read_from_the_running_images_label(registry, buildah):
    base = make_base_image(registry, unique_repo("base"), "1", marker="base")
    labelled = buildah.build_app(base, unique_repo("app"), "1", revision="9f1c2e7d4b5a")
    hostile = buildah.build_app(base, unique_repo("app"), "1", revision="--upload-pack=touch /x")
    unlabelled = make_base_image(registry, unique_repo("app"), "1", marker="no-label")

    async def scenario(reg: RegistryClient) -> list[tuple[BuildRequest, str]]:
        return [await with_source_revision(reg, request_for(image, base, strategy="job"))
                for image in (labelled, hostile, unlabelled)]

    (pinned, why_pinned), (refused, why_refused), (absent, why_absent) = with_registry(scenario)
    assert (pinned.revision, why_pinned) == ("9f1c2e7d4b5a", "")
    assert refused.revision == "" and "'--upload-pack=touch /x' is not a revision" in why_refused
    assert absent.revision == ""
    assert why_absent == f"{unlabelled.repository}@{unlabelled.digest} has no " \
        "org.opencontainers.image.revision label"


def test_external_wait_times_out(registry):
    repo = unique_repo("app")
    current = make_base_image(registry, repo, "1", marker="app")
    base = make_base_image(registry, unique_repo("base"), "1", marker="base")
    request = request_for(current, base, strategy="external", started_at=T0, timeout=dt.timedelta(minutes=30))
    clock = Clock()

    async def scenario(reg: RegistryClient) -> tuple[BuildStatus, BuildStatus]:
        builder = ExternalBuilder(reg, clock=clock)
        build_id = await builder.start(request)
        clock.advance(minutes=30)
        at_deadline = await builder.poll(build_id, request)
        clock.advance(seconds=1)
        return at_deadline, await builder.poll(build_id, request)

    at_deadline, after = with_registry(scenario)
    assert at_deadline.state is BuildState.RUNNING
    assert after.state is BuildState.FAILED
    assert after.reason == "BuildTimedOut"
    assert "0:30:00" in after.message


# -- job: a Job from a ConfigMap template, on the real API server ------------------------------


@pytest.fixture(scope="module")
def build_namespace(kube) -> str:
    """The build namespace; made here when no other test made it first."""
    kube.kubectl("create", "namespace", NAMESPACE, check=False)
    wait_for(lambda: kube.kubectl("get", "namespace", NAMESPACE, check=False), timeout=30,
             what=f"namespace {NAMESPACE}")
    return NAMESPACE


@pytest.fixture
def job_kube(kube, build_namespace) -> Iterator[Kube]:
    api = kube.api_client
    yield Kube(api)
    api.close()


def job_template(*, pod_labels: dict[str, str] | None = None, node_selector: dict[str, str] | None = None) -> dict:
    """A build Job: the shape of deploy/examples/buildah-job-template.yaml, minus the build.

    Its pod meets the restricted Pod Security Standard, so it is admitted in the build
    namespace whoever made it and at whatever level.
    """
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "build",
            "image": "quay.io/buildah/stable:v1.38",
            "env": [{"name": "BASE_IMAGE", "value": "${BASE_IMAGE}"},
                    {"name": "TARGET_IMAGE", "value": "${TARGET_IMAGE}"},
                    {"name": "REVISION", "value": "${REVISION}"},
                    {"name": "IMAGEPATCH_KEY", "value": "${KEY}"}],
            "args": ["bud", "--build-arg", "BASE_IMAGE=${BASE_IMAGE}", "-t", "${TARGET_IMAGE}", "."],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }],
    }
    if node_selector:
        pod["nodeSelector"] = node_selector
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"labels": {"app.kubernetes.io/component": "rebuild"}},
        "spec": {"backoffLimit": 0,
                 "template": {"metadata": {"labels": pod_labels or {}}, "spec": pod}},
    }


def make_template(kube, namespace: str, job: dict, cleanup: list[str]) -> str:
    name = f"build-{uuid.uuid4().hex[:8]}"
    cleanup.append(f"configmap/{name}")
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": name, "namespace": namespace},
                  "data": {"job.yaml": json.dumps(job, indent=2)}}
    kube.kubectl("apply", "-f", "-", input=json.dumps(config_map))
    return name


def get_job(kube, name: str) -> dict | None:
    out = kube.kubectl("get", "job", name, "-n", NAMESPACE, "-o", "json", check=False)
    return json.loads(out) if out else None


def job_finished(kube, name: str, ctype: str) -> Callable[[], bool]:
    def probe() -> bool:
        job = get_job(kube, name) or {}
        return any(c["type"] == ctype and c["status"] == "True"
                   for c in job.get("status", {}).get("conditions", []))
    return probe


@pytest.fixture
def cleanup_jobs(kube) -> Iterator[list[str]]:
    """Names of Jobs to delete after the test (with their pods), and of ConfigMaps ("cm/name")."""
    names: list[str] = []
    yield names
    for name in names:
        kind, _, name = name.rpartition("/")
        kube.kubectl("delete", kind or "job", name, "-n", NAMESPACE, "--cascade=background",
                     "--wait=false", "--ignore-not-found", check=False)


def test_job_start_creates_one_job_from_the_template(kube, job_kube, registry, cleanup_jobs):
    template = make_template(kube, NAMESPACE, job_template(), cleanup_jobs)
    app = make_base_image(registry, unique_repo("app"), "1.0", marker="app")
    base = make_base_image(registry, unique_repo("base"), "1", marker="base-v2")
    request = request_for(app, base, strategy="job", job_template=template, revision="c0ffee1",
                          timeout=dt.timedelta(minutes=20))
    cleanup_jobs.append(job_name(request.key))

    async def scenario(reg: RegistryClient) -> tuple[str, str]:
        builder = JobBuilder(job_kube, reg, NAMESPACE)
        return await builder.start(request), await builder.start(request)

    first, again = with_registry(scenario)

    assert first == again == job_name(request.key)
    assert first == "imagepatch-build-" + hashlib.sha256(request.key.encode()).hexdigest()[:10]
    jobs = json.loads(kube.kubectl("get", "jobs", "-n", NAMESPACE, "-l",
                                   f"{KEY_HASH_LABEL}={key_hash(request.key)}", "-o", "json"))["items"]
    assert [j["metadata"]["name"] for j in jobs] == [first]  # started twice, one Job
    [job] = jobs
    pinned_base = f"{base.repository}@{base.digest}"
    target = f"{app.repository}:1.0"
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["bud", "--build-arg", f"BASE_IMAGE={pinned_base}", "-t", target, "."]
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "BASE_IMAGE": pinned_base, "TARGET_IMAGE": target,
        "REVISION": "c0ffee1", "IMAGEPATCH_KEY": request.key,
    }
    meta = job["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "imagepatch"
    assert meta["labels"]["app.kubernetes.io/component"] == "rebuild"  # the template's own label kept
    assert meta["annotations"]["imagepatch.dev/build-key"] == request.key
    assert meta["annotations"]["imagepatch.dev/build-tag"] == "1.0"
    assert meta["annotations"]["imagepatch.dev/build-target"] == target
    assert job["spec"]["template"]["metadata"]["labels"][KEY_HASH_LABEL] == key_hash(request.key)
    assert job["spec"]["activeDeadlineSeconds"] == 1200  # the request's timeout


def test_a_job_made_for_another_tag_is_never_adopted_nor_its_result_used(
    kube, job_kube, registry, cleanup_jobs
):
    # v0.2 keyed a build "<image>|<base digest>": app:1 and app:2 on one base shared
    # it, so the second found the first's Job by name. The tag and target say no.
    never = {"imagepatch.dev/test": "never-scheduled"}  # the build stays in flight
    template = make_template(kube, NAMESPACE, job_template(node_selector=never), cleanup_jobs)
    app = make_base_image(registry, unique_repo("app"), "1", marker="app")
    base = make_base_image(registry, unique_repo("base"), "1", marker="base-v2")
    shared = f"{app.repository}|{base.digest}"
    one = dataclasses.replace(
        request_for(app, base, strategy="job", job_template=template), key=shared)
    two = dataclasses.replace(one, tag="2", current_digest="sha256:" + "2" * 64)
    cleanup_jobs.append(job_name(shared))

    async def scenario(reg: RegistryClient) -> tuple[str, ConfigurationError, BuildStatus]:
        builder = JobBuilder(job_kube, reg, NAMESPACE)
        first = await builder.start(one)
        with pytest.raises(ConfigurationError) as refused:
            await builder.start(two)
        return first, refused.value, await builder.poll(first, two)

    first, refused, polled = with_registry(scenario)
    assert first == job_name(shared)
    assert refused.reason == "JobNameTaken"
    assert "imagepatch.dev/build-tag, imagepatch.dev/build-target differ" in str(refused)
    assert polled.state is BuildState.FAILED and polled.reason == "BuildMismatch"
    assert not polled.digest

    # A v0.2 Job records only its key: its own patch still follows it.
    kube.kubectl("annotate", "job", first, "-n", NAMESPACE,
                 "imagepatch.dev/build-tag-", "imagepatch.dev/build-target-")
    legacy = with_registry(lambda reg: JobBuilder(job_kube, reg, NAMESPACE).poll(first, one))
    assert legacy.state is BuildState.RUNNING


@pytest.mark.kwok
def test_job_build_succeeds_with_the_digest_its_work_pushed(kube, job_kube, registry, buildah, cleanup_jobs):
    base_repo, app_repo = unique_repo("base"), unique_repo("app")
    old_base = make_base_image(registry, base_repo, "1", marker="base-v1")
    app = buildah.build_app(old_base, app_repo, "1.0")
    new_base = make_base_image(registry, base_repo, "1", marker="base-v2")
    template = make_template(kube, NAMESPACE, job_template(), cleanup_jobs)
    request = request_for(app, new_base, strategy="job", job_template=template)
    cleanup_jobs.append(job_name(request.key))

    build_id = with_registry(lambda reg: JobBuilder(job_kube, reg, NAMESPACE).start(request))

    # The test does the build Job's work, with the Job's own arguments.
    job = get_job(kube, build_id)
    env = {e["name"]: e.get("value", "") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BASE_IMAGE"] == f"{new_base.repository}@{new_base.digest}"
    target_repo, _, target_tag = env["TARGET_IMAGE"].removeprefix(registry.host + "/").rpartition(":")
    pushed = buildah.build_app(pinned_ref(env["BASE_IMAGE"]), target_repo, target_tag)
    wait_for(job_finished(kube, build_id, "Complete"), timeout=60, what=f"Job {build_id} Complete")

    done = with_registry(lambda reg: JobBuilder(job_kube, reg, NAMESPACE).poll(build_id, request))

    assert done.state is BuildState.SUCCEEDED, done
    assert done.digest == pushed.digest != app.digest
    assert done.builder_status == "Complete"


@pytest.mark.kwok
def test_job_that_completes_without_pushing_pushed_nothing(kube, job_kube, registry, cleanup_jobs):
    app = make_base_image(registry, unique_repo("app"), "1.0", marker="app")
    base = make_base_image(registry, unique_repo("base"), "1", marker="base")
    template = make_template(kube, NAMESPACE, job_template(), cleanup_jobs)
    request = request_for(app, base, strategy="job", job_template=template)
    cleanup_jobs.append(job_name(request.key))

    build_id = with_registry(lambda reg: JobBuilder(job_kube, reg, NAMESPACE).start(request))
    wait_for(job_finished(kube, build_id, "Complete"), timeout=60, what=f"Job {build_id} Complete")
    status = with_registry(lambda reg: JobBuilder(job_kube, reg, NAMESPACE).poll(build_id, request))

    assert status.state is BuildState.FAILED
    assert status.reason == "NothingPushed"
    assert app.digest in status.message


@pytest.mark.kwok
def test_failed_job_names_the_pod_and_its_exit_code(kube, job_kube, registry, cleanup_jobs):
    app = make_base_image(registry, unique_repo("app"), "1.0", marker="app")
    base = make_base_image(registry, unique_repo("base"), "1", marker="base")
    template = make_template(kube, NAMESPACE, job_template(pod_labels={BEHAVIOR: "job-fail"}), cleanup_jobs)
    request = request_for(app, base, strategy="job", job_template=template)
    cleanup_jobs.append(job_name(request.key))

    build_id = with_registry(lambda reg: JobBuilder(job_kube, reg, NAMESPACE).start(request))
    wait_for(job_finished(kube, build_id, "Failed"), timeout=60, what=f"Job {build_id} Failed")
    status = with_registry(lambda reg: JobBuilder(job_kube, reg, NAMESPACE).poll(build_id, request))

    [pod] = json.loads(kube.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"job-name={build_id}",
                                    "-o", "json"))["items"]
    assert status.state is BuildState.FAILED
    assert status.reason == "BuildFailed"
    assert status.builder_status == "Failed"
    assert f"pod {pod['metadata']['name']} container build exited with code 1 (Error)" in status.message
    assert "simulated build failure" not in status.message  # the build's own words stay out


def test_job_past_its_timeout_is_deleted_and_timed_out(kube, job_kube, registry, cleanup_jobs):
    # A pod no node can take keeps the Job running, on kwok or any cluster.
    app = make_base_image(registry, unique_repo("app"), "1.0", marker="app")
    base = make_base_image(registry, unique_repo("base"), "1", marker="base")
    template = make_template(kube, NAMESPACE, job_template(node_selector={"imagepatch.dev/no-such-node": "true"}), cleanup_jobs)
    request = request_for(app, base, strategy="job", job_template=template, started_at=T0,
                          timeout=dt.timedelta(minutes=10))
    cleanup_jobs.append(job_name(request.key))
    clock = Clock()

    async def scenario(reg: RegistryClient) -> tuple[BuildStatus, BuildStatus]:
        builder = JobBuilder(job_kube, reg, NAMESPACE, clock)
        build_id = await builder.start(request)
        running = await builder.poll(build_id, request)
        clock.advance(minutes=11)
        return running, await builder.poll(build_id, request)

    running, timed_out = with_registry(scenario)

    assert running.state is BuildState.RUNNING
    assert timed_out.state is BuildState.FAILED
    assert timed_out.reason == "BuildTimedOut"
    wait_for(lambda: get_job(kube, job_name(request.key)) is None, timeout=30, what="the Job deleted")


def test_job_template_that_does_not_exist_is_a_configuration_error(job_kube, registry):
    app = make_base_image(registry, unique_repo("app"), "1.0", marker="app")
    base = make_base_image(registry, unique_repo("base"), "1", marker="base")
    request = request_for(app, base, strategy="job", job_template="no-such-template")

    with pytest.raises(ConfigurationError) as err:
        with_registry(lambda reg: JobBuilder(job_kube, reg, NAMESPACE).start(request))

    assert err.value.reason == "JobTemplateNotFound"
    assert f"{NAMESPACE}/no-such-template" in str(err.value)


def test_job_template_values_cannot_add_yaml_and_must_use_base_and_target():
    base = ImageRef("127.0.0.1:5000/base", "1", "sha256:" + "b" * 64)
    app = ImageRef("127.0.0.1:5000/app", "1.0", "sha256:" + "a" * 64)
    # A revision label is whatever the image's pusher wrote.
    hostile = request_for(app, base, strategy="job", revision='x"\n  injected: true\n$(id)')
    text = json.dumps(job_template())

    job = render_job(text, hostile, namespace=NAMESPACE, where="t")

    env = {e["name"]: e.get("value", "") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REVISION"] == hostile.revision  # one string, as given
    assert "injected" not in job["spec"]
    with pytest.raises(ConfigurationError) as err:
        render_job(text.replace("${TARGET_IMAGE}", "fixed:tag"), hostile, namespace=NAMESPACE, where="t")
    assert err.value.reason == "JobTemplateInvalid"
    assert "${TARGET_IMAGE}" in str(err.value)
    with pytest.raises(ConfigurationError) as err:
        render_job("kind: Deployment\n", hostile, namespace=NAMESPACE, where="t")
    assert err.value.reason == "JobTemplateInvalid"


# -- codebuild: moto for the call shape, Stubber for the statuses moto never gives -------------


PROJECT = "payments-api"


@pytest.fixture
def project(aws) -> str:
    aws.client("codebuild").create_project(
        name=PROJECT,
        # moto insists on a location even for NO_SOURCE.
        source={"type": "NO_SOURCE", "location": "dummy", "buildspec": "version: 0.2\n"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                     "computeType": "BUILD_GENERAL1_SMALL"},
        serviceRole=f"arn:aws:iam::{aws.account_id}:role/codebuild-payments",
    )
    return PROJECT


def codebuild(aws, reg: RegistryClient, **kw: Any) -> CodeBuildBuilder:
    session = boto3.Session(**DUMMY_CREDENTIALS, region_name=aws.region)
    return CodeBuildBuilder(reg, aws.region, endpoint_url=aws.endpoint_url, session=session,
                            max_attempts=kw.pop("max_attempts", 2), **kw)


class Recorder:
    """What the client put on the wire for one operation (a ``before-call`` hook)."""

    def __init__(self, client, operation: str) -> None:
        self.bodies: list[dict] = []
        client.meta.events.register(f"before-call.codebuild.{operation}", self)

    def __call__(self, params, **_: Any) -> None:
        self.bodies.append(json.loads(params["body"]))


def cb_request(app: ImageRef, base: ImageRef, **kw: Any) -> BuildRequest:
    return request_for(app, base, strategy="codebuild", codebuild_project=PROJECT, **kw)


def test_codebuild_start_sends_the_pinned_base_target_key_and_revision(aws, project, registry):
    app = make_base_image(registry, unique_repo("app"), "1.4", marker="app")
    base = make_base_image(registry, unique_repo("base"), "3.12-slim", marker="base-v2")
    request = cb_request(app, base, revision="9f8e7d6c")

    async def scenario(reg: RegistryClient) -> tuple[str, str, Recorder, Recorder]:
        builder = codebuild(aws, reg)
        starts = Recorder(builder.client, "StartBuild")
        lookups = Recorder(builder.client, "ListBuildsForProject")
        return await builder.start(request), await builder.start(request), starts, lookups

    first, second, starts, lookups = with_registry(scenario)

    assert first.startswith(f"{PROJECT}:")
    body = starts.bodies[0]
    assert body["projectName"] == PROJECT
    assert body["idempotencyToken"] == hashlib.sha256(
        f"{request.key}|{request.target}".encode()).hexdigest()
    assert body["sourceVersion"] == "9f8e7d6c"
    assert body["environmentVariablesOverride"] == [
        {"name": "BASE_IMAGE", "value": f"{base.repository}@{base.digest}", "type": "PLAINTEXT"},
        {"name": "TARGET_IMAGE", "value": f"{app.repository}:1.4", "type": "PLAINTEXT"},
        {"name": "IMAGE_TAG", "value": "1.4", "type": "PLAINTEXT"},
        {"name": "IMAGEPATCH_KEY", "value": request.key, "type": "PLAINTEXT"},
        {"name": "SOURCE_REVISION", "value": "9f8e7d6c", "type": "PLAINTEXT"},
    ]
    # moto drops the overrides, so it cannot show the earlier build: the same
    # token is what makes a real CodeBuild answer the same build within 5 minutes.
    assert [b["idempotencyToken"] for b in starts.bodies] == [body["idempotencyToken"]] * 2
    assert [b["projectName"] for b in lookups.bodies] == [PROJECT, PROJECT]
    assert len(idempotency_token(request.key, request.target)) == 64
    no_revision = with_registry(lambda reg: _start_body(aws, reg, cb_request(app, base)))
    assert "sourceVersion" not in no_revision


def _start_body(aws, reg: RegistryClient, request: BuildRequest) -> Awaitable[dict]:
    async def go() -> dict:
        builder = codebuild(aws, reg)
        starts = Recorder(builder.client, "StartBuild")
        await builder.start(request)
        return starts.bodies[0]
    return go()


def test_codebuild_start_finds_the_build_of_its_key_after_the_token_expired(aws, registry):
    # CodeBuild honours an idempotency token for 5 minutes; an operator down
    # longer finds the build by the IMAGEPATCH_KEY it ran with instead.
    app = ImageRef(f"{registry.host}/app", "1", "sha256:" + "a" * 64)
    base = ImageRef(f"{registry.host}/base", "1", "sha256:" + "b" * 64)
    request = cb_request(app, base)

    async def scenario(reg: RegistryClient) -> str:
        builder = codebuild(aws, reg)
        with Stubber(builder.client) as stub:
            stub.add_response("list_builds_for_project", {"ids": [f"{PROJECT}:new", f"{PROJECT}:ours"]},
                              {"projectName": PROJECT, "sortOrder": "DESCENDING"})
            stub.add_response("batch_get_builds", {"builds": [
                _build(f"{PROJECT}:new", "IN_PROGRESS", env={"IMAGEPATCH_KEY": "someone|else"}),
                _build(f"{PROJECT}:ours", "IN_PROGRESS", env={
                    "IMAGEPATCH_KEY": request.key, "TARGET_IMAGE": request.target,
                    "IMAGE_TAG": request.push_to}),
            ]}, {"ids": [f"{PROJECT}:new", f"{PROJECT}:ours"]})
            build_id = await builder.start(request)  # a start_build call would fail the Stubber
            stub.assert_no_pending_responses()
        return build_id

    assert with_registry(scenario) == f"{PROJECT}:ours"


def test_codebuild_success_takes_the_digest_pushed_to_the_registry(aws, project, registry):
    repo = unique_repo("app")
    app = make_base_image(registry, repo, "1.4", marker="app-before")
    base = make_base_image(registry, unique_repo("base"), "1", marker="base-v2")
    request = cb_request(app, base)

    async def scenario(reg: RegistryClient) -> tuple[BuildStatus, BuildStatus, ImageRef]:
        builder = codebuild(aws, reg)
        build_id = await builder.start(request)
        # moto's build is SUCCEEDED at once; nothing is pushed yet.
        too_soon = await builder.poll(build_id, request)
        rebuilt = await asyncio.to_thread(make_base_image, registry, repo, "1.4", marker="app-after")
        return too_soon, await builder.poll(build_id, request), rebuilt

    too_soon, done, rebuilt = with_registry(scenario)

    assert too_soon.state is BuildState.FAILED and too_soon.reason == "NothingPushed"
    assert done.state is BuildState.SUCCEEDED, done
    assert done.digest == rebuilt.digest
    assert done.builder_status == "SUCCEEDED"
    assert done.logs_url.startswith("https://console.aws.amazon.com/cloudwatch/")


def test_codebuild_exported_image_digest_is_used_once_the_registry_has_it(aws, registry):
    repo = unique_repo("app")
    app = make_base_image(registry, repo, "1.4", marker="app-before")
    pushed = make_base_image(registry, repo, "1.4-rebuilt", marker="app-after")  # not the tag
    base = ImageRef(f"{registry.host}/base", "1", "sha256:" + "b" * 64)
    request = cb_request(app, base)
    absent = "sha256:" + "e" * 64

    async def scenario(reg: RegistryClient) -> list[BuildStatus]:
        builder = codebuild(aws, reg)
        with Stubber(builder.client) as stub:
            for digest in (pushed.digest, absent):
                stub.add_response("batch_get_builds", {"builds": [
                    _build("p:1", "SUCCEEDED", exported={"IMAGE_DIGEST": digest})]})
            return [await builder.poll("p:1", request) for _ in range(2)]

    found, missing = with_registry(scenario)
    assert found.state is BuildState.SUCCEEDED and found.digest == pushed.digest
    assert missing.state is BuildState.FAILED and missing.reason == "NothingPushed"
    assert absent in missing.message


@pytest.mark.parametrize(
    ("status", "phases", "reason", "says"),
    [
        ("FAILED",
         [{"phaseType": "BUILD", "phaseStatus": "FAILED", "contexts": [
             {"statusCode": "COMMAND_EXECUTION_ERROR",
              "message": "Error while executing command: docker build . Reason: exit status 1"}]}],
         "BuildFailed",
         "failed-build ended FAILED in phase BUILD (FAILED): COMMAND_EXECUTION_ERROR: "
         "Error while executing command: docker build . Reason: exit status 1"),
        ("FAULT", [{"phaseType": "PROVISIONING", "phaseStatus": "FAULT",
                    "contexts": [{"statusCode": "CLIENT_ERROR", "message": "image pull failed"}]}],
         "BuildFailed", "ended FAULT in phase PROVISIONING (FAULT): CLIENT_ERROR: image pull failed"),
        ("STOPPED", [{"phaseType": "BUILD", "phaseStatus": "STOPPED"}],
         "BuildFailed", "was stopped in phase BUILD (STOPPED)"),
        ("TIMED_OUT", [{"phaseType": "BUILD", "phaseStatus": "TIMED_OUT", "contexts": [
            {"statusCode": "BUILD_TIMED_OUT", "message": "Build has timed out."}]}],
         "BuildTimedOut", "ended TIMED_OUT in phase BUILD (TIMED_OUT): BUILD_TIMED_OUT"),
    ],
    ids=["failed", "fault", "stopped", "timed-out"],
)
def test_codebuild_failures_carry_the_failing_phase(aws, status, phases, reason, says):
    app = ImageRef("127.0.0.1:1/app", "1", "sha256:" + "a" * 64)
    base = ImageRef("127.0.0.1:1/base", "1", "sha256:" + "b" * 64)
    request = cb_request(app, base)
    ok = {"phaseType": "SUBMITTED", "phaseStatus": "SUCCEEDED"}

    async def scenario(reg: RegistryClient) -> BuildStatus:
        builder = codebuild(aws, reg)
        with Stubber(builder.client) as stub:
            stub.add_response("batch_get_builds",
                              {"builds": [_build("failed-build", status, phases=[ok, *phases])]},
                              {"ids": ["failed-build"]})
            return await builder.poll("failed-build", request)

    result = with_registry(scenario)
    assert result.state is BuildState.FAILED
    assert result.reason == reason
    assert result.builder_status == status
    assert says in result.message
    assert result.logs_url == "https://logs.example/failed-build"


def test_codebuild_running_build_past_its_timeout_is_stopped(aws):
    app = ImageRef("127.0.0.1:1/app", "1", "sha256:" + "a" * 64)
    base = ImageRef("127.0.0.1:1/base", "1", "sha256:" + "b" * 64)
    request = cb_request(app, base, started_at=T0, timeout=dt.timedelta(hours=1))
    clock = Clock()

    async def scenario(reg: RegistryClient) -> tuple[BuildStatus, BuildStatus]:
        builder = codebuild(aws, reg, clock=clock)
        with Stubber(builder.client) as stub:
            running = _build("p:2", "IN_PROGRESS", phases=[{"phaseType": "BUILD"}])
            running["currentPhase"] = "BUILD"
            stub.add_response("batch_get_builds", {"builds": [running]})
            stub.add_response("batch_get_builds", {"builds": [running]})
            stub.add_response("stop_build", {"build": _build("p:2", "STOPPED")}, {"id": "p:2"})
            first = await builder.poll("p:2", request)
            clock.advance(hours=1, seconds=1)
            second = await builder.poll("p:2", request)
            stub.assert_no_pending_responses()
        return first, second

    first, second = with_registry(scenario)
    assert first.state is BuildState.RUNNING and "in phase BUILD" in first.message
    assert second.state is BuildState.FAILED and second.reason == "BuildTimedOut"


def test_codebuild_project_that_does_not_exist_is_a_configuration_error(aws, registry):
    app = ImageRef(f"{registry.host}/app", "1", "sha256:" + "a" * 64)
    base = ImageRef(f"{registry.host}/base", "1", "sha256:" + "b" * 64)
    request = request_for(app, base, strategy="codebuild", codebuild_project="no-such-project")

    with pytest.raises(NotFoundError) as err:  # moto's own ResourceNotFoundException
        with_registry(lambda reg: codebuild(aws, reg).start(request))
    assert err.value.reason == "CodeBuildProjectNotFound"
    assert "'no-such-project'" in str(err.value)

    async def stubbed(reg: RegistryClient) -> None:
        builder = codebuild(aws, reg)
        with Stubber(builder.client) as stub:
            stub.add_response("list_builds_for_project", {})
            stub.add_client_error("start_build", "ResourceNotFoundException",
                                  f"Project cannot be found: arn:aws:codebuild:us-east-1:123:project/{PROJECT}")
            await builder.start(request)

    with pytest.raises(NotFoundError) as err:
        with_registry(stubbed)
    assert err.value.reason == "CodeBuildProjectNotFound"


def test_codebuild_access_denied_is_a_configuration_error_without_aws_text(aws):
    app = ImageRef("127.0.0.1:1/app", "1", "sha256:" + "a" * 64)
    base = ImageRef("127.0.0.1:1/base", "1", "sha256:" + "b" * 64)
    request = cb_request(app, base)

    async def scenario(reg: RegistryClient) -> None:
        builder = codebuild(aws, reg)
        with Stubber(builder.client) as stub:
            stub.add_client_error(
                "batch_get_builds", "AccessDeniedException",
                f"User: arn:aws:sts::123456789012:assumed-role/x/{SECRET} is not authorized",
                http_status_code=400)
            await builder.poll("p:3", request)

    with pytest.raises(ConfigurationError) as err:
        with_registry(scenario)
    assert err.value.reason == "AwsAccessDenied"
    assert "codebuild:BatchGetBuilds" in str(err.value)
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)


class Throttle:
    """Answer every HTTP send of one operation with a real 400 ThrottlingException.

    It hooks ``before-send``, inside botocore's retry loop (a Stubber answers
    before it, so it could not show the retries)."""

    def __init__(self, client, operation: str) -> None:
        self.sends = 0
        client.meta.events.register(f"before-send.codebuild.{operation}", self)

    def __call__(self, request, **_: Any) -> AWSResponse:
        self.sends += 1
        response = AWSResponse(request.url, 400, {"content-type": "application/x-amz-json-1.1"}, None)
        response._content = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        return response


def test_codebuild_throttling_is_retried_then_transient(aws):
    app = ImageRef("127.0.0.1:1/app", "1", "sha256:" + "a" * 64)
    base = ImageRef("127.0.0.1:1/base", "1", "sha256:" + "b" * 64)

    holder: dict[str, Throttle] = {}

    async def capture(reg: RegistryClient) -> None:
        builder = codebuild(aws, reg, max_attempts=3)
        holder["throttle"] = Throttle(builder.client, "BatchGetBuilds")
        await builder.poll("p:4", cb_request(app, base))

    with pytest.raises(TransientError) as err:
        with_registry(capture)
    assert holder["throttle"].sends == 3  # standard mode: every attempt, the first included
    assert err.value.reason == "AwsThrottled"
    assert "ThrottlingException" in str(err.value)


def _build(build_id: str, status: str, *, phases: list[dict] | None = None,
           env: dict[str, str] | None = None, exported: dict[str, str] | None = None) -> dict:
    """A BatchGetBuilds ``builds[]`` entry, as CodeBuild answers it."""
    build: dict[str, Any] = {
        "id": build_id,
        "buildStatus": status,
        "phases": phases or [],
        "logs": {"deepLink": f"https://logs.example/{build_id}"},
        "environment": {"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                        "computeType": "BUILD_GENERAL1_SMALL",
                        "environmentVariables": [{"name": k, "value": v, "type": "PLAINTEXT"}
                                                 for k, v in (env or {}).items()]},
    }
    if exported is not None:
        build["exportedEnvironmentVariables"] = [{"name": k, "value": v} for k, v in exported.items()]
    return build
