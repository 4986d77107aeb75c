"""`make krew-archive`: the kubectl plugin's release archive and its krew manifest.

Builds ``kubectl-imagepatch_v<version>.tar.gz`` holding ``kubectl-imagepatch``
(a zip application: imagepatch's code, ``requirements/runtime.lock`` and
``release/kubectl_plugin_main.py`` as its ``__main__``, which installs the
locked dependencies into a private virtualenv on first run) and ``LICENSE``,
and writes deploy/krew/imagepatch.yaml's text with that release's version,
uri and sha256 (every comment kept). The version is
``operator/imagepatch/__init__.py``'s, as for the image.

The bytes depend only on the sources: entries sorted, every timestamp fixed
(the zip's 1980-01-01, the tar's 0), uid/gid 0 without names, and gzip's header
without a name or time; so two builds of one commit (with the same zlib) give
the same sha256, which anyone can check against the manifest.

Usage: python release/krew.py [--out DIR] [--base-url URL] [--manifest-out PATH]
  --base-url  where the release's assets are published (else $KREW_RELEASE_URL,
              else the project's GitHub release of the tag)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "deploy" / "krew" / "imagepatch.yaml"
PLUGIN = "kubectl-imagepatch"
DEFAULT_BASE_URL = "https://github.com/imagepatch/imagepatch/releases/download/{tag}"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# What the plugin's modules import of pyproject's dependencies (cli, cli_plugin,
# cli_report, adapters.report_source and what they import): not kopf, boto3,
# stamina, prometheus-client or ruamel.yaml, which only the operator runs.
# tests/integration/test_krew_install.py runs the verbs that reach furthest.
PLUGIN_ROOTS = ("kubernetes", "httpx", "croniter", "cryptography", "pyyaml")


def version() -> str:
    """The one version source, read as release/build-image.sh reads it."""
    text = (REPO / "operator" / "imagepatch" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "(.+)"$', text, re.M)
    if not found:
        raise ValueError("operator/imagepatch/__init__.py has no __version__")
    return found[1]


def archive_name(tag: str) -> str:
    return f"{PLUGIN}_{tag}.tar.gz"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def plugin_lock(lock: str) -> str:
    """runtime.lock cut to PLUGIN_ROOTS and what they need, from its ``# via`` lines.

    Each kept block is the lock's own (pin, hashes, markers), so pip installs
    exactly what the image does, less what the plugin never imports.
    """
    blocks: dict[str, str] = {}
    needed_by: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock):
        head = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", block)
        if not head:
            continue
        name = canonical(head[1])
        blocks[name] = block.rstrip("\n") + "\n"
        vias = re.findall(r"^\s+#(?:\s+via)?\s+([A-Za-z0-9][A-Za-z0-9._-]*)", block, re.M)
        needed_by[name] = {canonical(v) for v in vias if v != "via"}
    kept = {canonical(root) for root in PLUGIN_ROOTS}
    if not kept <= set(blocks):
        raise ValueError(f"not in requirements/runtime.lock: {sorted(kept - set(blocks))}")
    while True:
        more = {name for name, users in needed_by.items() if users & kept} - kept
        if not more:
            break
        kept |= more
    header = "# requirements/runtime.lock, only what the kubectl plugin needs (release/krew.py)\n"
    return header + "".join(blocks[name] for name in sorted(kept))


def zipapp_bytes() -> bytes:
    """The executable: a shebang line, then a zip of __main__.py, the lock and imagepatch."""
    entries = {
        "__main__.py": (REPO / "release" / "kubectl_plugin_main.py").read_bytes(),
        "requirements.lock": plugin_lock((REPO / "requirements" / "runtime.lock").read_text())
        .encode(),
    }
    package = REPO / "operator" / "imagepatch"
    for source in package.rglob("*.py"):
        if "__pycache__" not in source.parts:
            entries[source.relative_to(package.parent).as_posix()] = source.read_bytes()
    buf = io.BytesIO()
    buf.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buf, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever builds it
            archive.writestr(info, entries[name], compresslevel=9)
    return buf.getvalue()


def build_archive(out_dir: Path, tag: str) -> Path:
    """Write kubectl-imagepatch_<tag>.tar.gz into out_dir; return its path."""
    members = {
        PLUGIN: (zipapp_bytes(), 0o755),
        "LICENSE": ((REPO / "LICENSE").read_bytes(), 0o644),
    }
    raw = io.BytesIO()
    # filename="" and mtime=0: gzip's header names no file and no time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in sorted(members):
                data, mode = members[name]
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / archive_name(tag)
    path.write_bytes(raw.getvalue())
    return path


def fill_manifest(text: str, tag: str, uri: str, sha256: str) -> str:
    """The manifest's text with spec.version, each uri and each sha256 set; comments kept."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    if not uri.startswith("https://"):
        raise ValueError(f"krew indexes want an https uri, not {uri!r}")
    replacements: list[tuple[str, int | None, str]] = [
        (r"^(  version: ).*$", 1, tag),
        (r"^(    uri: ).*$", None, uri),
        (r"^(    sha256: ).*$", None, f'"{sha256}"'),
    ]
    for pattern, count, value in replacements:

        def put(m: re.Match[str], value: str = value) -> str:
            return m[1] + value

        text, made = re.subn(pattern, put, text, flags=re.M)
        if not made or (count is not None and made != count):
            raise ValueError(f"the manifest has {made} lines matching {pattern}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="release/krew.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "krew")
    parser.add_argument("--base-url",
                        default=os.environ.get("KREW_RELEASE_URL") or DEFAULT_BASE_URL,
                        help="the release's asset URL; {tag} is replaced by v<version>")
    parser.add_argument("--manifest-out", type=Path,
                        help="where to write the manifest (default OUT/imagepatch.yaml)")
    args = parser.parse_args(argv)
    tag = f"v{version()}"
    archive = build_archive(args.out, tag)
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    uri = f"{args.base_url.format(tag=tag).rstrip('/')}/{archive.name}"
    manifest_out = args.manifest_out or args.out / MANIFEST.name
    manifest_out.parent.mkdir(parents=True, exist_ok=True)
    manifest_out.write_text(fill_manifest(MANIFEST.read_text(), tag, uri, sha256))
    print(f"krew: {archive} ({archive.stat().st_size} bytes, sha256 {sha256})", file=sys.stderr)
    print(f"krew: {manifest_out} (uri {uri})", file=sys.stderr)
    print(archive)
    print(manifest_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
