"""``__main__`` of the ``kubectl-imagepatch`` zip application that krew installs.

The zip holds imagepatch's own code and ``requirements.lock`` (the release's
``requirements/runtime.lock``: every dependency pinned, with hashes), not the
dependencies themselves: the Kubernetes client needs pydantic-core and
imagepatch needs cryptography, compiled per platform and (pydantic-core) per
Python minor, which one archive for every os/arch cannot carry. So the first
run with a given python3 makes a private virtualenv for this version and that
interpreter, installs the locked wheels into it with pip (``--require-hashes``,
wheels only, from PyPI or whatever index pip is configured to use, e.g.
``PIP_INDEX_URL``), and every run re-executes the zip with that virtualenv's
Python. Where it lives: ``$IMAGEPATCH_PLUGIN_HOME``, else
``$XDG_CACHE_HOME/imagepatch/kubectl-plugin``, else
``~/.cache/imagepatch/kubectl-plugin``; deleting it only costs the next run
the install again.
"""

import os
import sys

# This file must run on any python3 long enough to say that it is too old.
if sys.version_info < (3, 11):  # noqa: UP036 - the point is to refuse older ones
    # %-formatting, not an f-string: an old python3 must parse this file to say so.
    sys.exit("kubectl-imagepatch needs Python 3.11 or newer as python3; this is %s"  # noqa: UP031
             % sys.version.split()[0])

import fcntl  # noqa: E402 - after the version check
import hashlib  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import venv  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

ZIP = Path(__file__).resolve().parent
LOCK = "requirements.lock"


def env_dir(lock: bytes) -> Path:
    """One virtualenv per lock and interpreter: a new release or python3 gets its own."""
    home = os.environ.get("IMAGEPATCH_PLUGIN_HOME")
    if not home:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        home = os.path.join(cache, "imagepatch", "kubectl-plugin")
    # base_prefix: the same in the virtualenv's Python as in the python3 that made it.
    key = hashlib.sha256(lock + sys.base_prefix.encode() + sys.version.encode()).hexdigest()[:16]
    return Path(home) / f"py{sys.version_info[0]}.{sys.version_info[1]}-{key}"


def ensure_env(lock: bytes) -> Path:
    """The virtualenv's python, made and filled once (two first runs: one installs)."""
    target = env_dir(lock)
    python = target / "bin" / "python"
    if (target / ".complete").exists():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return python
        shutil.rmtree(target, ignore_errors=True)
        print(f"kubectl-imagepatch: first run of this version with {sys.executable}: "
              f"installing its locked dependencies into {target}", file=sys.stderr)
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(target)
        except Exception as err:  # ensurepip missing (Debian: the python3-venv package)
            sys.exit(f"kubectl-imagepatch: cannot create a virtualenv with {sys.executable} "
                     f"({err}); on Debian or Ubuntu install python3-venv")
        (target / LOCK).write_bytes(lock)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-input", "--require-hashes", "--only-binary", ":all:", "--no-deps",
             "-r", str(target / LOCK)], check=False)
        if done.returncode:
            sys.exit("kubectl-imagepatch: installing its dependencies failed (pip's message "
                     "above); the next run tries again")
        (target / ".complete").touch()
    return python


def main() -> None:
    with zipfile.ZipFile(ZIP) as archive:
        lock = archive.read(LOCK)
    target = env_dir(lock)
    if Path(sys.prefix).resolve() != target.resolve():
        python = ensure_env(lock)
        os.execv(python, [str(python), str(ZIP), *sys.argv[1:]])
    from imagepatch.cli import kubectl_main

    sys.exit(kubectl_main())


main()
