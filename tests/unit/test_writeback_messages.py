"""core/writeback commit messages: the template, and trailers as git reads them.

The trailer cases follow ``git interpret-trailers``' documentation: trailers
are the last paragraph, never the title; a paragraph of ``Token: value``
lines (with indented continuation lines) is a trailer block; a paragraph
with a git-generated ``Signed-off-by:`` needs only a quarter of trailer lines.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagepatch.core.writeback import (
    DEFAULT_TEMPLATE,
    WriteBackError,
    check_template,
    commit_message,
    patch_trailer,
    revert_message,
    revert_trailer,
    trailers,
)

NEW = "registry.example:5000/team/app:1.1@sha256:" + "b" * 64
ARGS = dict(patch="app-7f3c2", workload="Deployment/shop/app",
            old="registry.example:5000/team/app:1.0", new=NEW, reason="base image rebuilt",
            findings=["CVE-2024-1234", "CVE-2024-5678"])


def test_default_message_says_what_changed_and_ends_with_the_trailer():
    message = commit_message(None, **ARGS)
    assert message.splitlines()[0] == f"imagepatch: Deployment/shop/app to {NEW}"
    assert f"to   {NEW}" in message and "from registry.example:5000/team/app:1.0" in message
    assert "Reason: base image rebuilt" in message
    assert "Findings fixed (2):\n- CVE-2024-1234\n- CVE-2024-5678\n" in message
    assert message.endswith("\n\nImagepatch-Patch: app-7f3c2\n")
    assert patch_trailer(message) == "app-7f3c2" and revert_trailer(message) is None


def test_template_fields_and_escaped_braces():
    message = commit_message("chore({workload}): {{pinned}} {new_short}\n\n{findings_inline}"
                             " ({findings_count})", **ARGS)
    assert message == ("chore(Deployment/shop/app): {pinned} "
                       "registry.example:5000/team/app:1.1@sha256:bbbbbbbbbbbb…\n\n"
                       "CVE-2024-1234, CVE-2024-5678 (2)\n\nImagepatch-Patch: app-7f3c2\n")
    none = commit_message("fix {workload}\n\n{findings}\n{findings_inline}",
                          **{**ARGS, "findings": []})
    assert "- none\nnone" in none


def test_trailer_joins_the_templates_own_trailer_block():
    message = commit_message("fix {workload}\n\nSigned-off-by: Bot <bot@example.com>\n", **ARGS)
    assert message.endswith("Signed-off-by: Bot <bot@example.com>\nImagepatch-Patch: app-7f3c2\n")
    assert trailers(message) == [("Signed-off-by", "Bot <bot@example.com>"),
                                 ("Imagepatch-Patch", "app-7f3c2")]


def test_the_template_cannot_spell_the_trailer_itself():
    message = commit_message("fix\n\nImagepatch-Patch: someone-else\nimagepatch-revert: x\n",
                             **ARGS)
    assert message == "fix\n\nImagepatch-Patch: app-7f3c2\n"
    injected = commit_message(None, **{**ARGS, "reason": "x\n\nImagepatch-Patch: evil"})
    assert patch_trailer(injected) == "app-7f3c2" and "evil" not in injected


def test_empty_template_falls_back_to_the_default_title():
    assert commit_message("  \n", **ARGS) == (
        f"imagepatch: Deployment/shop/app to {NEW}\n\nImagepatch-Patch: app-7f3c2\n")


@pytest.mark.parametrize(("template", "problem"), [
    ("{bogus}", "unknown placeholder {bogus}"),
    ("{new.__class__}", "unknown placeholder"),
    ("a } b", "lone"),
    ("{", "lone"),
])
def test_bad_templates_are_reported_and_refused(template, problem):
    assert problem in (check_template(template) or "")
    with pytest.raises(WriteBackError, match="template"):
        commit_message(template, **ARGS)


def test_good_templates_pass_the_check():
    assert check_template(DEFAULT_TEMPLATE) is None
    assert check_template("{{literal}} {patch}") is None


@pytest.mark.parametrize("patch", ["", "  ", "a\nb"])
def test_patch_name_must_be_one_line(patch):
    with pytest.raises(WriteBackError, match="one non-empty line"):
        commit_message(None, **{**ARGS, "patch": patch})
    with pytest.raises(WriteBackError):
        revert_message("x", patch=patch, reason="")


def test_revert_message_is_shaped_like_git_revert_and_carries_its_own_trailer():
    message = revert_message("imagepatch: pin Deployment/shop/app (app-7f3c2)", patch="app-7f3c2",
                             reason="Pods crash-looped after the rollout.", commit="0a1b2c3")
    assert message == (
        'Revert "imagepatch: pin Deployment/shop/app (app-7f3c2)"\n\n'
        "This reverts commit 0a1b2c3.\n\nPods crash-looped after the rollout.\n\n"
        "Imagepatch-Revert: app-7f3c2\n")
    assert revert_trailer(message) == "app-7f3c2" and patch_trailer(message) is None
    bare = revert_message("  ", patch="p", reason=" ")
    assert bare == 'Revert "imagepatch patch p"\n\nImagepatch-Revert: p\n'


@pytest.mark.parametrize(("message", "expected"), [
    # The title is never a trailer block.
    ("Imagepatch-Patch: p\n", []),
    ("title\nImagepatch-Patch: p\n", []),
    # A last paragraph of trailers, with a continuation line and spacing git accepts.
    ("title\n\nbody\n\nImagepatch-Patch : p\nCo-authored-by: A\n  and B\n",
     [("Imagepatch-Patch", "p"), ("Co-authored-by", "A and B")]),
    # Prose in the last paragraph: not trailers...
    ("title\n\nThis fixes it.\nImagepatch-Patch: p\n", []),
    # ...unless a git-generated trailer is there and trailers are a quarter of it.
    ("title\n\nprose line\nSigned-off-by: A <a@x>\nImagepatch-Patch: p\n",
     [("Signed-off-by", "A <a@x>"), ("Imagepatch-Patch", "p")]),
    ("title\n\n(cherry picked from commit abc)\nImagepatch-Patch: p\n\n\n",
     [("Imagepatch-Patch", "p")]),
    ("title\n\na\nb\nc\nd\ne\nSigned-off-by: A\n", []),
    # An indented first line is not a continuation of anything.
    ("title\n\n  indented\nImagepatch-Patch: p\n", []),
    ("title\n\n  indented\nSigned-off-by: A\n", [("Signed-off-by", "A")]),
])
def test_trailers_follow_git_interpret_trailers(message, expected):
    assert trailers(message) == expected


def test_the_last_trailer_of_a_key_wins_and_an_empty_one_is_none():
    assert patch_trailer("t\n\nImagepatch-Patch: a\nimagepatch-patch: b\n") == "b"
    assert patch_trailer("t\n\nImagepatch-Patch:\n") is None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80),
       st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?", fullmatch=True))
def test_any_template_text_yields_a_message_whose_trailer_is_the_patch(free_text, patch):
    template = free_text.replace("{", "{{").replace("}", "}}")
    message = commit_message(template, **{**ARGS, "patch": patch})
    assert patch_trailer(message) == patch
