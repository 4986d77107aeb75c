"""The tag a rebuild is pushed under: the policy's template, and the fields that set it."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from imagepatch.core.tags import DEFAULT_TEMPLATE, candidates, render, source_tag
from imagepatch.model.errors import SpecError
from imagepatch.model.policy import TagPolicy, parse_policy_spec

DAY = dt.date(2026, 11, 29)


def first(template: str, tag: str, n: int = 3) -> list[str]:
    return list(itertools.islice(candidates(template, tag=tag, day=DAY), n))


def test_the_default_template_counts_up_from_one_on_the_day_the_rebuild_started():
    assert DEFAULT_TEMPLATE == "{tag}-patch.{yyyymmdd}.{n}"
    assert first(DEFAULT_TEMPLATE, "1.4") == [
        "1.4-patch.20261129.1", "1.4-patch.20261129.2", "1.4-patch.20261129.3"]
    assert len(list(candidates(DEFAULT_TEMPLATE, tag="1.4", day=DAY))) == 100


@pytest.mark.parametrize(("template", "running", "next_tag"), [
    # A tag the template made stands for its source tag: no ever-growing suffixes.
    (DEFAULT_TEMPLATE, "1.4-patch.20261120.3", "1.4-patch.20261129.1"),
    (DEFAULT_TEMPLATE, "1.4-rc1", "1.4-rc1-patch.20261129.1"),
    ("{tag}-{tag}.{n}", "a-a.2", "a-a.1"),
    ("{tag}-{tag}.{n}", "a-b.2", "a-b.2-a-b.2.1"),
    ("patched.{n}", "1.4", "patched.1"),
])
def test_the_next_tag_is_made_from_the_source_tag(template, running, next_tag):
    assert first(template, running, 1) == [next_tag]


def test_source_tag_of_a_tag_the_template_did_not_make_is_itself():
    assert source_tag(DEFAULT_TEMPLATE, "latest") == "latest"


def test_a_long_running_tag_is_shortened_so_the_new_tag_stays_a_valid_tag():
    made = render(DEFAULT_TEMPLATE, tag="v" * 128, day=DAY, n=12)
    assert len(made) == 128
    assert made.endswith("-patch.20261129.12") and made.startswith("vvv")


def test_a_template_that_makes_no_valid_tag_is_an_error():
    with pytest.raises(ValueError, match="not a valid tag"):
        render("{tag}.{n}", tag="", day=DAY, n=1)


def rebuild_spec(**rebuild):
    return parse_policy_spec({"namespaceSelector": {}, "rebuild": rebuild}).rebuild


def test_policy_defaults_to_new_tags_from_the_default_template():
    rebuild = rebuild_spec()
    assert rebuild.tag_policy is TagPolicy.NEW
    assert rebuild.tag_template == DEFAULT_TEMPLATE
    overwrite = rebuild_spec(tagPolicy="Overwrite", tagTemplate="{tag}-p{n}")
    assert (overwrite.tag_policy, overwrite.tag_template) == (TagPolicy.OVERWRITE, "{tag}-p{n}")


@pytest.mark.parametrize(("template", "says"), [
    ("{tag}-patch", "must contain {n}"),
    ("{tag}/{n}", "may hold only"),
    ("{tag}-{sha}-{n}", "may hold only"),
    ("-{tag}.{n}", "must not start with"),
])
def test_a_bad_tag_template_names_the_field(template, says):
    with pytest.raises(SpecError) as caught:
        rebuild_spec(tagTemplate=template)
    assert caught.value.field == "spec.rebuild.tagTemplate"
    assert says in str(caught.value)
