#!/usr/bin/env bash
# Write the lock files (`make lock`), or check that they still match pyproject.toml
# and requirements/build.in (`lock.sh --check`, run by `make lint`).
#
#   runtime.lock  the operator's dependencies, with hashes: the image installs
#                 exactly these (pip install --require-hashes), then its own wheel
#                 with --no-deps.
#   dev.lock      runtime + the dev extra, constrained to runtime.lock's pins:
#                 what `make setup` installs into .venv.
#   build.lock    the image build's tools (requirements/build.in).
#
# uv (pinned in .ci/setup, in its own .venv-uv) resolves for every platform
# (--universal) on Python 3.11, the image's Python. A lock passed as the output
# is also the preference: regenerating keeps its pins unless pyproject.toml no
# longer allows them, so --check regenerates into a copy and compares, and only
# a real disagreement (a dependency added, removed or re-ranged) fails.
# `make lock UPGRADE=1` moves every pin to the newest allowed release.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv=${UV:-$(bash requirements/uv.sh)}
check=false; [[ ${1:-} == --check ]] && check=true
out=requirements
if $check; then
  out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
  cp requirements/*.lock "$out"/
fi
upgrade=(); [[ ${UPGRADE:-} == 1 ]] && ! $check && upgrade=(--upgrade)
common=(--quiet --generate-hashes --universal --python-version 3.11 --no-strip-extras
        --custom-compile-command "make lock" "${upgrade[@]}")
same() {  # --check: the regenerated lock equals the committed one
  $check || return 0
  diff -u "requirements/$1" "$out/$1" >&2 && return 0
  echo "requirements/$1 does not match pyproject.toml / requirements/build.in: run make lock" >&2
  exit 1
}
"$uv" pip compile "${common[@]}" pyproject.toml -o "$out/runtime.lock"
same runtime.lock
# Constrained by the committed runtime.lock (equal to the regenerated one by now),
# so the "via -c" annotations name the same path either way.
"$uv" pip compile "${common[@]}" pyproject.toml --extra dev -c requirements/runtime.lock -o "$out/dev.lock"
same dev.lock
"$uv" pip compile "${common[@]}" requirements/build.in -o "$out/build.lock"
same build.lock
if $check; then echo "locks match pyproject.toml and requirements/build.in" >&2; fi
