"""STAND-IN (branch wb-git) for wb-core's pure write-back editors: replace with theirs.

Only what the Git write-back path needs to run end to end: ``edit`` for a
plain manifest's ``image:`` and a kustomization's ``images:`` entry (line
edits, so comments and formatting stay), Flux ``$imagepolicy`` lines left
alone and reported, and the commit message with its trailers.

Pure: edits the text it is given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "EditResult",
    "NewImage",
    "Target",
    "commit_message",
    "edit",
    "patch_trailer",
    "revert_message",
    "revert_trailer",
]

PATCH_TRAILER = "Imagepatch-Patch"
REVERT_TRAILER = "Imagepatch-Revert"
_FLUX_MARKER = re.compile(r'#\s*\{\s*"\$imagepolicy"')


@dataclass(frozen=True, kw_only=True, slots=True)
class NewImage:
    repository: str
    tag: str
    digest: str

    def reference(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.repository}{tag}@{self.digest}"


@dataclass(frozen=True, slots=True)
class Target:
    repository: str
    policy: str
    helm_values_key: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class EditResult:
    text: str
    changes: tuple[str, ...] = ()
    flux_owned: tuple[str, ...] = ()
    declares: bool = False  # the file sets the image where edit owns it (even if already pinned)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _repo_of(reference: str) -> str:
    ref = reference.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref[:colon] if colon > slash else ref


_IMAGE_LINE = re.compile(
    r"^(?P<lead>\s*(-\s+)?image:\s*)(?P<q>[\"']?)(?P<ref>[^\s\"'#]+)(?P=q)(?P<rest>.*)$"
)


def edit(path: str, text: str, target: Target, new: NewImage) -> EditResult:
    """``text`` (the file at ``path``) with ``target``'s image set to ``new``."""
    lines = text.splitlines(keepends=True)
    declares = False
    changes: list[str] = []
    owned: list[str] = []
    for i, line in enumerate(lines):
        m = _IMAGE_LINE.match(line.rstrip("\n"))
        if m and _repo_of(m["ref"]) == target.repository:
            declares = True
            if _FLUX_MARKER.search(m["rest"]):
                owned.append(f"{path}:{i + 1}")
                continue
            if m["ref"] != new.reference():
                end = "\n" if line.endswith("\n") else ""
                lines[i] = f"{m['lead']}{m['q']}{new.reference()}{m['q']}{m['rest']}{end}"
                changes.append(f"{path}:{i + 1}: {m['ref']} -> {new.reference()}")
    lines, kchanges, kowned, kdeclares = _kustomization_images(path, lines, target, new)
    return EditResult(text="".join(lines), changes=(*changes, *kchanges),
                      flux_owned=(*owned, *kowned), declares=declares or kdeclares)


def _kustomization_images(
    path: str, lines: list[str], target: Target, new: NewImage
) -> tuple[list[str], list[str], list[str], bool]:
    if path.rsplit("/", 1)[-1] not in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        return lines, [], [], False
    out = list(lines)
    changes: list[str] = []
    owned: list[str] = []
    declares = False
    i, n = 0, len(out)
    in_images = False
    while i < n:
        line = out[i]
        if re.match(r"^images:\s*(#.*)?$", line.rstrip("\n")):
            in_images = True
            i += 1
            continue
        if in_images and re.match(r"^\S", line):
            in_images = False
        start = re.match(r"^(\s*)-\s+", line) if in_images else None
        if start is None:
            i += 1
            continue
        # One entry: from this "- " to the next one (or the end of the list).
        indent = len(start.group(1))
        j = i + 1
        while j < n and not re.match(rf"^\s{{{indent}}}-\s|^\S", out[j]):
            j += 1
        entry = out[i:j]
        body = "".join(entry)
        name = re.search(r"\bname:\s*([^\s#]+)", body)
        new_name = re.search(r"\bnewName:\s*([^\s#]+)", body)
        repo = new_name.group(1) if new_name else (name.group(1) if name else "")
        if repo == target.repository:
            declares = True
            if _FLUX_MARKER.search(body):
                owned.append(f"{path}:{i + 1}")
            else:
                new_entry = _set_fields(entry, indent + 2,
                                        {"newTag": new.tag, "digest": new.digest})
                if new_entry != entry:
                    out[i:j] = new_entry
                    changes.append(f"{path}:{i + 1}: images {repo} -> {new.reference()}")
                    n = len(out)
                    j = i + len(new_entry)
        i = j
    return out, changes, owned, declares


def _set_fields(entry: list[str], indent: int, fields: dict[str, str]) -> list[str]:
    """``entry`` with each field's value set in place (quotes and comment kept), or added."""
    out = list(entry)
    if not out[-1].endswith("\n"):
        out[-1] += "\n"
    for key, value in fields.items():
        if not value:
            continue
        line = re.compile(rf"^(\s*(?:-\s+)?{key}:\s*)([\"']?)[^\"'\s#]*\2(.*)$")
        for i, text in enumerate(out):
            m = line.match(text.rstrip("\n"))
            if m:
                quote = m[2] or '"'
                out[i] = f"{m[1]}{quote}{value}{quote}{m[3]}\n"
                break
        else:
            out.append(f"{' ' * indent}{key}: \"{value}\"\n")
    return out


_DEFAULT = (
    "imagepatch: {workload} to {new}\n\n"
    "{old} -> {new}\n"
    "Reason: {reason}\n"
    "{findings}"
)


def commit_message(
    template: str | None,
    *,
    patch: str,
    workload: str,
    old: str,
    new: str,
    reason: str,
    findings: Sequence[str] = (),
) -> str:
    """The commit message from ``template`` (or the default), ending with the patch trailer."""
    fixed = ("Fixes: " + ", ".join(findings) + "\n") if findings else ""
    body = (template or _DEFAULT).format(
        patch=patch, workload=workload, old=old, new=new, reason=reason, findings=fixed
    )
    return f"{body.rstrip()}\n\n{PATCH_TRAILER}: {patch}\n"


def _trailer(message: str, key: str) -> str | None:
    found = None
    for line in message.splitlines():
        if line.startswith(f"{key}: "):
            found = line.split(": ", 1)[1].strip()
    return found


def patch_trailer(message: str) -> str | None:
    return _trailer(message, PATCH_TRAILER)


def revert_message(original_subject: str, *, patch: str, reason: str) -> str:
    return f'Revert "{original_subject}"\n\n{reason}\n\n{REVERT_TRAILER}: {patch}\n'


def revert_trailer(message: str) -> str | None:
    return _trailer(message, REVERT_TRAILER)
