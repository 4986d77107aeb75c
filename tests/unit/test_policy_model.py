"""imagepatch.model: ImagePatchPolicy specs parsed into frozen dataclasses.

No cluster: these tables pin the defaults (the same as the CRD's), that every
bad field raises a SpecError naming its full path, and Go-style durations.
tests/integration/test_crd_schema.py checks the same cases against a real API
server, so the model and the CRD agree.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import datetime as dt
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest

from imagepatch.model import (
    ApprovalMode,
    BaseImages,
    CodeBuildSettings,
    JobSettings,
    LabelSelector,
    LabelSelectorRequirement,
    MaintenanceWindow,
    OnTargetFailure,
    PolicySpec,
    Rebuild,
    RebuildStrategy,
    RegistryCredentials,
    Rollout,
    SelectorOperator,
    Severity,
    SpecError,
    Vulnerabilities,
    VulnerabilitySource,
    Wave,
    format_duration,
    parse_duration,
    parse_policy,
    parse_policy_spec,
)
from tests.support.malformed import policy_cases

MODEL_DIR = Path(__file__).resolve().parents[2] / "operator" / "imagepatch" / "model"
td = dt.timedelta


# -- durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", td(0)),
        ("90s", td(seconds=90)),
        ("1m", td(minutes=1)),
        ("1h30m", td(hours=1, minutes=30)),
        ("1.5h", td(hours=1, minutes=30)),
        ("0.1h", td(minutes=6)),  # exact, not 5m59.999999s
        ("250ms", td(milliseconds=250)),
        ("1m30s500ms", td(minutes=1, seconds=30, milliseconds=500)),
        ("2h0m0s", td(hours=2)),
        ("1s1s", td(seconds=2)),  # Go sums repeated units too
        ("168h", td(days=7)),
        ("2562047h", td(hours=2562047)),  # Go's limit is just above this
    ],
)
def test_parse_duration_accepts_go_syntax(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "1",
        "h",
        "1d",
        "1us",
        "1ns",
        "-1h",
        "+1h",
        "1 h",
        " 1h",
        "1h ",
        "1.h",
        ".5h",
        "1,5h",
        "1H",
        "2562048h",
    ],
)
def test_parse_duration_rejects_what_the_crd_pattern_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("value", [None, 60, 1.5, ["1h"]])
def test_parse_duration_rejects_non_strings(value):
    with pytest.raises(ValueError, match="must be a duration string"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (td(0), "0s"),
        (td(minutes=90), "1h30m"),
        (td(days=2), "48h"),
        (td(seconds=1, milliseconds=5), "1s5ms"),
        (td(hours=1, seconds=1), "1h1s"),
    ],
)
def test_format_duration_is_compact_and_round_trips(value, text):
    assert format_duration(value) == text
    assert parse_duration(text) == value


# -- defaults ---------------------------------------------------------------------------


def test_minimal_spec_gets_the_crd_defaults():
    spec = parse_policy_spec({"namespaceSelector": {}})

    assert spec == PolicySpec(
        namespace_selector=LabelSelector(),
        suspend=False,
        base_images=BaseImages(trusted=(), check_interval=td(hours=1)),
        vulnerabilities=Vulnerabilities(
            source=VulnerabilitySource.NONE,
            min_severity=Severity.HIGH,
            fix_available_only=True,
            approve_after_days=0,
            ignore=(),
        ),
        rebuild=Rebuild(
            strategy=RebuildStrategy.EXTERNAL, codebuild=None, job=None, timeout=td(hours=1)
        ),
        rollout=Rollout(
            progress_deadline_seconds=600,
            healthy_for=td(minutes=5),
            max_restarts=0,
            rollback=True,
            waves=(),
        ),
        maintenance_window=None,
        approval=ApprovalMode.AUTOMATIC,
        registry_credentials=None,
    )
    assert spec.namespace_selector.selects_everything


def test_the_api_servers_defaulted_form_parses_to_the_same_spec():
    # What a v1.34 API server stores for `spec: {namespaceSelector: {}}`
    # (tests/integration/test_crd_schema.py checks that it does).
    defaulted = {
        "namespaceSelector": {},
        "suspend": False,
        "baseImages": {"checkInterval": "1h"},
        "vulnerabilities": {
            "source": "none",
            "minSeverity": "HIGH",
            "fixAvailableOnly": True,
            "approveAfterDays": 0,
        },
        "rebuild": {"strategy": "external", "timeout": "1h", "tagPolicy": "New",
                "tagTemplate": "{tag}-patch.{yyyymmdd}.{n}"},
        "rollout": {
            "progressDeadlineSeconds": 600,
            "healthyFor": "5m",
            "maxRestarts": 0,
            "rollback": True,
        },
        "approval": "Automatic",
    }
    assert parse_policy_spec(defaulted) == parse_policy_spec({"namespaceSelector": {}})


@pytest.mark.parametrize(
    ("spec", "attribute_path", "expected"),
    [
        (
            {"maintenanceWindow": {"schedule": "0 2 * * 0", "duration": "2h"}},
            "maintenance_window.timezone",
            "UTC",
        ),
        (
            {"maintenanceWindow": {"schedule": "0 2 * * 0", "duration": "2h"}},
            "maintenance_window.cutoff",
            td(0),
        ),
        (
            {"rollout": {"waves": [{"name": "a", "namespaceSelector": {}}]}},
            "rollout.waves",
            (Wave(name="a", namespace_selector=LabelSelector(), soak=td(0)),),
        ),
        (
            {"rebuild": {"strategy": "job", "job": {"template": "kaniko"}}},
            "rebuild.timeout",
            td(hours=1),
        ),
        # A null field counts as absent, as the API server treats it.
        ({"suspend": None, "rollout": {"healthyFor": None}}, "rollout.healthy_for", td(minutes=5)),
        ({"baseImages": None}, "base_images", BaseImages()),
        # Fields the CRD does not declare (a newer CRD) are ignored, not fatal.
        ({"futureField": {"x": 1}, "rollout": {"canary": True}}, "rollout", Rollout()),
    ],
    ids=[
        "timezone",
        "cutoff",
        "wave-soak",
        "rebuild-timeout",
        "null-is-absent",
        "null-object",
        "unknown-fields-ignored",
    ],
)
def test_nested_defaults(spec, attribute_path, expected):
    parsed: Any = parse_policy_spec({"namespaceSelector": {}, **spec})
    for attribute in attribute_path.split("."):
        parsed = getattr(parsed, attribute)
    assert parsed == expected


DESIGN_SPEC: dict[str, Any] = {
    "suspend": False,
    "namespaceSelector": {
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["staging", "prod"]}]
    },
    "baseImages": {
        "trusted": ["public.ecr.aws/docker/library/python:3.12-*"],
        "checkInterval": "30m",
    },
    "vulnerabilities": {
        "source": "ecr",
        "minSeverity": "CRITICAL",
        "fixAvailableOnly": False,
        "approveAfterDays": 7,
        "ignore": ["CVE-2024-12345", "GHSA-jfh8-c2jp-5v3q"],
    },
    "rebuild": {
        "strategy": "codebuild",
        "codebuild": {"project": "payments-api"},
        "job": {"template": "kaniko"},
        "timeout": "45m",
    },
    "rollout": {
        "progressDeadlineSeconds": 300,
        "healthyFor": "10m",
        "maxRestarts": 2,
        "rollback": False,
        "waves": [
            {
                "name": "staging",
                "namespaceSelector": {"matchLabels": {"env": "staging"}},
                "soak": "1h",
            },
            {"name": "prod", "namespaceSelector": {"matchLabels": {"env": "prod"}}},
        ],
    },
    "maintenanceWindow": {
        "schedule": "cron(0 2 ? * SUN *)",
        "timezone": "Europe/Berlin",
        "duration": "3h",
        "cutoff": "1h",
    },
    "approval": "Manual",
    "registryCredentials": {"secretName": "registry-creds"},
}


def test_design_policy_parses_every_field():
    spec = parse_policy_spec(DESIGN_SPEC)

    assert spec == PolicySpec(
        suspend=False,
        namespace_selector=LabelSelector(
            match_expressions=(
                LabelSelectorRequirement(
                    key="env", operator=SelectorOperator.IN, values=("staging", "prod")
                ),
            )
        ),
        base_images=BaseImages(
            trusted=("public.ecr.aws/docker/library/python:3.12-*",), check_interval=td(minutes=30)
        ),
        vulnerabilities=Vulnerabilities(
            source=VulnerabilitySource.ECR,
            min_severity=Severity.CRITICAL,
            fix_available_only=False,
            approve_after_days=7,
            ignore=("CVE-2024-12345", "GHSA-jfh8-c2jp-5v3q"),
        ),
        rebuild=Rebuild(
            strategy=RebuildStrategy.CODEBUILD,
            codebuild=CodeBuildSettings(project="payments-api"),
            job=JobSettings(template="kaniko"),
            timeout=td(minutes=45),
        ),
        rollout=Rollout(
            progress_deadline_seconds=300,
            healthy_for=td(minutes=10),
            max_restarts=2,
            rollback=False,
            waves=(
                Wave(
                    name="staging",
                    namespace_selector=LabelSelector(match_labels=(("env", "staging"),)),
                    soak=td(hours=1),
                ),
                Wave(
                    name="prod",
                    namespace_selector=LabelSelector(match_labels=(("env", "prod"),)),
                    soak=td(0),
                ),
            ),
        ),
        maintenance_window=MaintenanceWindow(
            schedule="cron(0 2 ? * SUN *)",
            timezone="Europe/Berlin",
            duration=td(hours=3),
            cutoff=td(hours=1),
        ),
        approval=ApprovalMode.MANUAL,
        registry_credentials=RegistryCredentials(secret_name="registry-creds"),
    )


def test_parsed_spec_is_frozen_and_hashable():
    spec = parse_policy_spec(DESIGN_SPEC)

    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.suspend = True  # type: ignore[misc]
    assert hash(spec) == hash(parse_policy_spec(copy.deepcopy(DESIGN_SPEC)))


def test_parsing_does_not_modify_the_input():
    raw = copy.deepcopy(DESIGN_SPEC)
    parse_policy_spec(raw)
    assert raw == DESIGN_SPEC


def test_parse_policy_reads_name_and_generation():
    policy = parse_policy(
        {"metadata": {"name": "critical-fixes", "generation": 3}, "spec": DESIGN_SPEC}
    )

    assert (policy.name, policy.generation) == ("critical-fixes", 3)
    assert policy.spec == parse_policy_spec(DESIGN_SPEC)


# -- every bad field names itself -------------------------------------------------------

WAVE = {"name": "staging", "namespaceSelector": {}}
WINDOW = {"schedule": "cron(0 2 ? * SUN *)", "duration": "3h"}

# Shared with tests/integration/test_crd_schema.py: one folder of malformed
# specs (tests/data/policies/), each with the model's field and message.
POLICY_CASES = policy_cases()
BAD_SPECS = [
    (spec, expected["model"]["field"], expected["model"]["message"])
    for _, spec, expected in POLICY_CASES
    if "model" in expected
]


@pytest.mark.parametrize(("name", "spec"), [(n, s) for n, s, _ in POLICY_CASES], ids=[n for n, _, _ in POLICY_CASES])
def test_every_malformed_policy_spec_is_refused_by_the_model(name, spec):
    with pytest.raises(SpecError):
        parse_policy_spec(spec)


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    BAD_SPECS,
    ids=[f"{field}:{fragment}"[:90] for _, field, fragment in BAD_SPECS],
)
def test_bad_field_raises_spec_error_naming_it(spec, field, fragment):
    with pytest.raises(SpecError) as caught:
        parse_policy_spec(spec)

    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (None, "spec.namespaceSelector"),
        ([], "spec"),
        ("namespaceSelector: {}", "spec"),
    ],
)
def test_spec_that_is_not_an_object_names_spec(spec, field):
    with pytest.raises(SpecError) as caught:
        parse_policy_spec(spec)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({}, "metadata.name"),
        ({"name": "p" * 64}, "metadata.name"),
        ({"name": "ok", "generation": "1"}, "metadata.generation"),
    ],
)
def test_bad_metadata_names_the_field(metadata, field):
    with pytest.raises(SpecError) as caught:
        parse_policy({"metadata": metadata, "spec": {"namespaceSelector": {}}})
    assert caught.value.field == field


def test_spec_error_is_a_value_error_that_pickles():
    error = SpecError("spec.rollout.healthyFor", "'soon' is not a duration")

    assert isinstance(error, ValueError)
    assert str(error) == "spec.rollout.healthyFor: 'soon' is not a duration"
    copy_ = pickle.loads(pickle.dumps(error))
    assert (copy_.field, copy_.message, str(copy_)) == (error.field, error.message, str(error))


# -- label selectors ---------------------------------------------------------------------


def selector(raw: dict[str, Any]) -> LabelSelector:
    return parse_policy_spec({"namespaceSelector": raw}).namespace_selector


@pytest.mark.parametrize(
    ("raw", "labels", "matches"),
    [
        ({}, {}, True),
        ({}, {"env": "prod"}, True),
        ({"matchLabels": {"env": "prod"}}, {"env": "prod", "team": "a"}, True),
        ({"matchLabels": {"env": "prod"}}, {"env": "staging"}, False),
        ({"matchLabels": {"env": "prod"}}, {}, False),
        (
            {"matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}]},
            {"env": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["a"]}]}, {}, False),
        # NotIn also matches objects that lack the key (Kubernetes semantics).
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["a"]}]},
            {"env": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, {"env": ""}, True),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, {"env": ""}, False),
        (
            {
                "matchLabels": {"team": "a"},
                "matchExpressions": [{"key": "env", "operator": "Exists"}],
            },
            {"team": "a"},
            False,
        ),
    ],
)
def test_label_selector_matches_like_kubernetes(raw, labels, matches):
    assert selector(raw).matches(labels) is matches


@pytest.mark.parametrize(
    ("raw", "query"),
    [
        ({}, ""),
        ({"matchLabels": {"team": "a", "env": "prod"}}, "env=prod,team=a"),
        (
            {
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["a", "b"]},
                    {"key": "tier", "operator": "NotIn", "values": ["batch"]},
                    {"key": "x", "operator": "Exists"},
                    {"key": "y", "operator": "DoesNotExist"},
                ]
            },
            "env in (a,b),tier notin (batch),x,!y",
        ),
    ],
)
def test_label_selector_query_string(raw, query):
    assert selector(raw).to_query() == query


def test_severity_orders_by_rank_not_by_spelling():
    assert [s.rank for s in Severity] == [0, 1, 2, 3, 4]
    assert Severity.CRITICAL.at_least(Severity.HIGH)
    assert Severity.HIGH.at_least(Severity.HIGH)
    assert not Severity.LOW.at_least(Severity.MEDIUM)


# -- layering -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(MODEL_DIR.glob("*.py")), ids=lambda p: p.name)
def test_model_imports_only_the_standard_library(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module)
    foreign = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names
        and not name.startswith("imagepatch.model")
    }
    assert not foreign, f"{path.name} imports {foreign}"


def test_cronjob_trial_run_is_off_unless_the_policy_asks_for_it() -> None:
    assert parse_policy_spec({"namespaceSelector": {}}).rollout.cron_job_trial_run is False
    spec = parse_policy_spec({"namespaceSelector": {}, "rollout": {"cronJobTrialRun": True}})
    assert spec.rollout.cron_job_trial_run is True
    with pytest.raises(SpecError) as err:
        parse_policy_spec({"namespaceSelector": {}, "rollout": {"cronJobTrialRun": "yes"}})
    assert "cronJobTrialRun" in str(err.value)


def test_one_teams_failure_stops_only_that_team_unless_the_policy_says_stop_all() -> None:
    rollout = parse_policy_spec({"namespaceSelector": {}}).rollout
    assert rollout.on_target_failure == OnTargetFailure.CONTINUE
    assert rollout.cron_job_run_within == dt.timedelta(hours=192)  # a weekly CronJob is covered
    spec = parse_policy_spec({"namespaceSelector": {}, "rollout": {
        "onTargetFailure": "StopAll", "cronJobRunWithin": "168h"}})
    assert spec.rollout.on_target_failure == OnTargetFailure.STOP_ALL
    assert spec.rollout.cron_job_run_within == dt.timedelta(days=7)
    with pytest.raises(SpecError) as err:
        parse_policy_spec({"namespaceSelector": {}, "rollout": {"onTargetFailure": "stopall"}})
    assert err.value.field == "spec.rollout.onTargetFailure"
    assert "must be one of Continue, StopAll" in str(err.value)
    with pytest.raises(SpecError) as err:
        parse_policy_spec({"namespaceSelector": {}, "rollout": {"cronJobRunWithin": "745h"}})
    assert err.value.field == "spec.rollout.cronJobRunWithin"


def test_systems_manager_window_options_parse():
    # SSM_OPTIONS (maintenance-windows-schedule-options.html), examples 2 and 4 together.
    spec = parse_policy_spec({"namespaceSelector": {}, "maintenanceWindow": {
        "schedule": "cron(0 30 23 ? * TUE#3 *)", "duration": "4h", "cutoff": "1h",
        "scheduleOffset": 2, "startDate": "2019-01-01T00:03:15+09:00",
        "endDate": "2019-06-30T00:06:15Z"}})
    window = spec.maintenance_window
    assert window is not None
    assert window.schedule_offset == 2
    assert window.start_date == dt.datetime(2018, 12, 31, 15, 3, 15, tzinfo=dt.UTC)
    assert window.end_date == dt.datetime(2019, 6, 30, 0, 6, 15, tzinfo=dt.UTC)


def test_a_date_time_of_the_right_shape_but_no_such_day_is_refused():
    with pytest.raises(SpecError, match="not a real date and time") as caught:
        parse_policy_spec({"namespaceSelector": {}, "maintenanceWindow": {
            "schedule": "0 2 * * 0", "duration": "1h", "endDate": "2026-02-30T00:00:00Z"}})
    assert caught.value.field == "spec.maintenanceWindow.endDate"
