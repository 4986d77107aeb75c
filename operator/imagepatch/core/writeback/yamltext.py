"""Edit YAML text in place: parse for positions, change only the bytes of a value.

A round-trip dump (even ruamel.yaml's) re-flows what it does not model: list
indentation, quoting, blank lines, a comment's column. Write-back must change
nothing but the value it pins, so the file is parsed only to *find* things
(a YAML composer gives every node its start and end offsets), and each
change is a splice into the original text: a scalar's span replaced by the
new value in the same quoting style, or a new ``key: value`` line inserted
after a sibling with the sibling's indentation. What the parser did not
point at is never touched, so the rest of the file stays byte-identical.

The composer is PyYAML's, on libyaml when it is built in (``CSafeLoader``):
only node positions are needed, and libyaml composes a 250 KiB manifest in
about 0.2 s where a pure-Python parser (ruamel.yaml's, or PyYAML's own) takes
several seconds, and a repository path may hold a thousand files. libyaml
does not count a byte-order mark in its offsets, so ``edit`` parses the text
after one.

Neighbours: ``edit.py`` decides what to change; this module knows how.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from imagepatch.core.writeback.model import WriteBackError

__all__ = [
    "Marker",
    "Splice",
    "apply",
    "child",
    "compose",
    "format_scalar",
    "insert_keys",
    "line_of",
    "marker_of",
    "replace_scalar",
    "scalar",
    "walk",
]

# A line comment that is one setter marker, as Flux's kyaml setters read it:
# ``# {"$imagepolicy": "ns:name[:tag|:name]"}``, and imagepatch's own
# ``# {"$imagepatch": "policy[:tag|:digest|:name]"}``.
_MARKER = re.compile(r"\s*#\s*(\{.*\})\s*$")

# Plain scalars that YAML (1.1, as Go's yaml.v2 in Helm and kustomize reads it,
# or 1.2) resolves to something other than a string: written quoted instead.
_NOT_STRING = re.compile(
    r"""(?x)
    ~|null|Null|NULL
    |y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF
    |[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?
    |[-+]?0x[0-9a-fA-F_]+|[-+]?0o?[0-7_]+|[-+]?0b[01_]+
    |[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)
    |[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?
    |[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*
    """
)
_PLAIN_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:/@+-]*")
# libyaml's composer when PyYAML was built with it; PyYAML's own otherwise.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Splice:
    """Replace ``text[start:end]`` with ``replacement`` (an insertion when start == end)."""

    start: int
    end: int
    replacement: str


@dataclass(frozen=True, slots=True)
class Marker:
    """A setter marker on a value's line: ``kind`` is ``imagepatch`` or ``imagepolicy``."""

    kind: str
    value: str


def compose(path: str, text: str) -> list[Node]:
    """Every document's root node (empty documents left out), for ``text`` without a
    byte-order mark (libyaml's offsets would not count it)."""
    try:
        return [doc for doc in yaml.compose_all(text, Loader=_LOADER) if doc is not None]
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())[:300]
        raise WriteBackError(f"{path} is not valid YAML: {problem}") from None


def walk(node: Node) -> Iterator[tuple[ScalarNode, MappingNode | None]]:
    """Every value scalar under ``node`` (mapping values and sequence items, not keys),
    with the mapping it is a value of (None for a sequence item or a root scalar)."""
    seen: set[int] = set()
    stack: list[tuple[Node, MappingNode | None]] = [(node, None)]
    while stack:
        current, parent = stack.pop()
        if id(current) in seen:  # an alias: the anchored node was visited already
            continue
        seen.add(id(current))
        if isinstance(current, ScalarNode):
            yield current, parent
        elif isinstance(current, MappingNode):
            stack.extend((value, current) for _key, value in reversed(current.value))
        else:  # a SequenceNode: the composer makes no other kind
            assert isinstance(current, SequenceNode)  # noqa: S101
            stack.extend((item, None) for item in reversed(current.value))


def child(node: Node | None, *keys: str) -> Node | None:
    """The node at ``keys`` under mapping ``node``, or None."""
    for key in keys:
        if not isinstance(node, MappingNode):
            return None
        node = next((v for k, v in node.value
                     if isinstance(k, ScalarNode) and k.value == key), None)
    return node


def scalar(node: Node | None, *keys: str) -> ScalarNode | None:
    """The scalar at ``keys`` under ``node``, or None."""
    found = child(node, *keys)
    return found if isinstance(found, ScalarNode) else None


def line_of(text: str, node: Node) -> tuple[int, str]:
    """(1-based line number, the line's text) where ``node`` ends."""
    index = node.end_mark.index
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    end = len(text) if end == -1 else end
    return node.end_mark.line + 1, text[start:end].rstrip("\r")


def marker_of(text: str, node: ScalarNode) -> Marker | None:
    """The setter marker in the comment after ``node`` on its line, if any."""
    end = text.find("\n", node.end_mark.index)
    rest = text[node.end_mark.index : len(text) if end == -1 else end]
    match = _MARKER.match(rest)
    if match is None:
        return None
    try:
        data = json.loads(match.group(1))
    except ValueError:
        return None
    if not isinstance(data, dict) or len(data) != 1:
        return None
    ((key, value),) = data.items()
    if key not in ("$imagepatch", "$imagepolicy") or not isinstance(value, str):
        return None
    return Marker(kind=key[1:], value=value)


def format_scalar(value: str, style: str | None) -> str:
    """``value`` written in ``style`` (None plain, ``'`` or ``"``); a plain value that
    YAML would not read back as this string is double-quoted instead."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style is None and _PLAIN_SAFE.fullmatch(value) and not _NOT_STRING.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def replace_scalar(text: str, node: ScalarNode, value: str, *, where: str) -> Splice:
    """A splice that writes ``value`` over ``node``, keeping its quoting style."""
    if node.style in ("|", ">"):
        raise WriteBackError(f"{where} is a block scalar; write the image on one line")
    start, end = node.start_mark.index, node.end_mark.index
    if start == end:  # an empty value (``tag:``): its marks sit wherever the parser stopped
        while start > 0 and text[start - 1] in " \t":
            start -= 1
        if start == 0 or text[start - 1] not in ":-":
            raise WriteBackError(f"{where} is empty in a way write-back cannot fill; give it a"
                                 " value by hand once")
        return Splice(start, start, " " + format_scalar(value, None))
    # Node properties (an anchor ``&name``, a tag ``!!str``) stay; the value follows them.
    while text[start] in "&!":
        token_end = start
        while not text[token_end].isspace():
            token_end += 1
        start = token_end
        while text[start].isspace():
            start += 1
    return Splice(start, end, format_scalar(value, node.style or None))  # libyaml: "" is plain


def insert_keys(text: str, mapping: MappingNode, pairs: list[tuple[str, str]], *,
                where: str) -> Splice:
    """A splice that adds ``key: value`` pairs at the end of ``mapping``: new lines with
    the keys' indentation after a block mapping's last entry, or ``, key: value``
    before a flow mapping's closing brace."""
    if mapping.flow_style:
        close = text.rfind("}", mapping.start_mark.index, mapping.end_mark.index)
        stop = len(text[:close].rstrip())
        added = "".join(f", {k}: {format_scalar(v, None)}" for k, v in pairs)
        return Splice(stop, stop, added)
    last_key, last_value = mapping.value[-1]
    if not isinstance(last_value, ScalarNode) or last_value.style in ("|", ">"):
        raise WriteBackError(f"{where}: cannot add {pairs[0][0]!r} after a nested value;"
                             f" add the key by hand once")
    newline = "\r\n" if "\r\n" in text else "\n"
    indent = " " * mapping.value[0][0].start_mark.column
    lines = "".join(f"{indent}{k}: {format_scalar(v, None)}{newline}" for k, v in pairs)
    end = text.find("\n", last_value.end_mark.index)
    if end == -1:  # the last line has no newline: give it one
        return Splice(len(text), len(text), newline + lines.removesuffix(newline))
    return Splice(end + 1, end + 1, lines)


def apply(text: str, splices: list[Splice]) -> str:
    """``text`` with every splice applied; insertions at one point land in the order
    they were made."""
    order = sorted(enumerate(splices), key=lambda p: (p[1].start, p[1].end, p[0]), reverse=True)
    for _, splice in order:
        text = text[: splice.start] + splice.replacement + text[splice.end :]
    return text
