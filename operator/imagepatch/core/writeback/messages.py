"""Commit messages for write-back, and the trailers that find a commit again.

Every write-back commit ends with the trailer ``Imagepatch-Patch: <patch>``
and every rollback (revert) commit with ``Imagepatch-Revert: <patch>``. The
Git adapter looks for them before it commits, so a restarted operator finds
its own commit instead of making a second one. Two keys, not one: the search
for a patch's forward commit must not stop at its revert.

Trailers follow ``git interpret-trailers``: they are the last paragraph of the
message (never the first, which is the title), ``Token: value`` lines
(continuation lines start with whitespace), and a paragraph counts as trailers
when all of its lines are, or when at least a quarter are and one is
git-generated (``Signed-off-by: ``, ``(cherry picked from commit ``). The
trailer is appended by code, never taken from the template: any line of the
rendered template that spells one of imagepatch's trailer keys is dropped
first, and the trailer goes into the template's own trailer block when it
ends with one (so a ``Signed-off-by:`` stays a trailer), else after a blank line.

Templates use ``{field}`` placeholders (``{{`` and ``}}`` for braces) with the
fields in ``TEMPLATE_FIELDS``; an unknown field is a spec error that
``check_template`` reports. Pure: strings only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from imagepatch.core.writeback.model import WriteBackError, short

__all__ = [
    "DEFAULT_TEMPLATE",
    "PATCH_TRAILER",
    "REVERT_TRAILER",
    "TEMPLATE_FIELDS",
    "check_template",
    "commit_message",
    "patch_trailer",
    "revert_message",
    "revert_trailer",
    "trailers",
]

PATCH_TRAILER = "Imagepatch-Patch"
REVERT_TRAILER = "Imagepatch-Revert"

TEMPLATE_FIELDS = {
    "patch": "the ImagePatch's name",
    "workload": "kind/namespace/name of the workload",
    "old": "the reference the workload ran",
    "new": "the digest-pinned reference written",
    "new_short": "the same, its digest cut to 12 hex digits",
    "reason": "why the patch was made",
    "findings": "the findings fixed, one '- ' line each ('- none' when none)",
    "findings_inline": "the findings fixed, comma-separated ('none' when none)",
    "findings_count": "how many findings the patch fixes",
}

DEFAULT_TEMPLATE = """\
imagepatch: {workload} to {new}

Patch {patch} rolls {workload}
from {old}
to   {new}

Reason: {reason}
Findings fixed ({findings_count}):
{findings}
"""

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_TRAILER_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)\s*:\s*(.*)")
_GIT_GENERATED = ("Signed-off-by: ", "(cherry picked from commit ")
_OURS = re.compile(rf"\s*({PATCH_TRAILER}|{REVERT_TRAILER})\s*:", re.IGNORECASE)


def check_template(template: str) -> str | None:
    """What is wrong with a message template, or None when it can be used."""
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name is not None and name not in TEMPLATE_FIELDS:
            known = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            return f"unknown placeholder {{{name}}} in the commit message template (known: {known})"
    stray = _PLACEHOLDER.sub("", template)
    if "{" in stray or "}" in stray:
        return "a lone '{' or '}' in the commit message template: write '{{' or '}}'"
    return None


def _render(template: str, values: Mapping[str, str]) -> str:
    problem = check_template(template)
    if problem is not None:
        raise WriteBackError(problem)

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        return values[match.group(1)]

    return _PLACEHOLDER.sub(substitute, template)


def _single_line(value: str, what: str) -> str:
    value = value.strip()
    if not value or "\n" in value or "\r" in value:
        raise WriteBackError(f"{what} {value!r} must be one non-empty line")
    return value


def commit_message(
    template: str | None,
    *,
    patch: str,
    workload: str,
    old: str,
    new: str,
    reason: str,
    findings: Sequence[str],
) -> str:
    """The message of a write-back commit: ``template`` (None: ``DEFAULT_TEMPLATE``)
    filled in, ending with the trailer ``Imagepatch-Patch: <patch>``."""
    patch = _single_line(patch, "patch name")
    values = {
        "patch": patch,
        "workload": workload,
        "old": old,
        "new": new,
        "new_short": short(new),
        "reason": reason,
        "findings": "\n".join(f"- {f}" for f in findings) or "- none",
        "findings_inline": ", ".join(findings) or "none",
        "findings_count": str(len(findings)),
    }
    body = _render(DEFAULT_TEMPLATE if template is None else template, values)
    if not body.strip():
        body = _render(DEFAULT_TEMPLATE.split("\n", 1)[0], values)
    return _with_trailer(body, f"{PATCH_TRAILER}: {patch}")


def revert_message(original_subject: str, *, patch: str, reason: str,
                   commit: str | None = None) -> str:
    """The message of a rollback commit, shaped like ``git revert``'s
    (``Revert "<subject>"``, ``This reverts commit <sha>.``), with the reason and
    the trailer ``Imagepatch-Revert: <patch>``."""
    patch = _single_line(patch, "patch name")
    subject = " ".join(original_subject.split()) or f"imagepatch patch {patch}"
    parts = [f'Revert "{subject}"']
    if commit:
        parts.append(f"This reverts commit {commit}.")
    if reason.strip():
        parts.append(reason.strip())
    return _with_trailer("\n\n".join(parts), f"{REVERT_TRAILER}: {patch}")


def _with_trailer(body: str, trailer: str) -> str:
    lines = [line for line in _lines(body.strip()) if not _OURS.match(line)]
    text = "\n".join(lines).strip()
    if _trailer_block(_lines(text)) is not None:
        return f"{text}\n{trailer}\n"
    return f"{text}\n\n{trailer}\n"


def _lines(text: str) -> list[str]:
    """Lines as git splits a message: at ``\\n`` only (a CR before it dropped)."""
    return [line.removesuffix("\r") for line in text.split("\n")] if text else []


def _trailer_block(lines: list[str]) -> list[str] | None:
    """The trailer lines of a message (stripped of surrounding blank lines): its last
    paragraph, when git reads it as trailers."""
    blank = [i for i, line in enumerate(lines) if not line.strip()]
    if not blank:  # one paragraph: the title, never trailers
        return None
    last = lines[blank[-1] + 1 :]
    trailer_lines = non_trailer = 0
    recognized = False
    previous_was_trailer = False
    for line in last:
        if line[:1].isspace() and previous_was_trailer:
            continue  # a continuation line
        if line.startswith(_GIT_GENERATED):
            recognized = True
            trailer_lines += 1
            previous_was_trailer = True
        elif _TRAILER_LINE.fullmatch(line):
            trailer_lines += 1
            previous_was_trailer = True
        else:
            non_trailer += 1
            previous_was_trailer = False
    if trailer_lines and not non_trailer:
        return last
    if recognized and trailer_lines * 3 >= non_trailer:
        return last
    return None


def trailers(message: str) -> list[tuple[str, str]]:
    """(token, value) of each trailer of ``message``, in order; continuation lines
    are folded into their trailer's value with single spaces."""
    block = _trailer_block(_lines(message.strip()))
    found: list[tuple[str, str]] = []
    for line in block or ():
        if line[:1].isspace():
            if found:
                token, value = found[-1]
                found[-1] = (token, f"{value} {line.strip()}".strip())
            continue
        match = _TRAILER_LINE.fullmatch(line)
        if match is not None:
            found.append((match.group(1), match.group(2).strip()))
    return found


def _last(message: str, key: str) -> str | None:
    values = [v for k, v in trailers(message) if k.lower() == key.lower()]
    return values[-1] if values and values[-1] else None


def patch_trailer(message: str) -> str | None:
    """The ``Imagepatch-Patch`` trailer of a commit message (the last one), or None."""
    return _last(message, PATCH_TRAILER)


def revert_trailer(message: str) -> str | None:
    """The ``Imagepatch-Revert`` trailer of a commit message (the last one), or None."""
    return _last(message, REVERT_TRAILER)
