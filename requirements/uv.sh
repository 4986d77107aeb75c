#!/usr/bin/env bash
# Install uv, the tool that writes and checks requirements/*.lock, into its own
# virtualenv (.venv-uv), never the project's: print the path of its binary.
# Idempotent; called by .ci/setup and requirements/lock.sh.
#
# uv rather than pip-tools: one static binary (a wheel from PyPI, no
# dependencies to pin in turn), a lock of the operator plus the dev extra in
# seconds rather than minutes, --universal locks that hold for every platform
# (a developer's macOS and the linux/arm64 image alike), and `uv pip sync`,
# which makes .venv exactly the lock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=0.13.8
if [[ "$(cat .venv-uv/.version 2>/dev/null)" != "$version" ]]; then
  rm -rf .venv-uv
  "${PYTHON:-python3}" -m venv .venv-uv
  .venv-uv/bin/python -m pip install -q --disable-pip-version-check "uv==$version"
  echo "$version" > .venv-uv/.version
fi
echo "$PWD/.venv-uv/bin/uv"
