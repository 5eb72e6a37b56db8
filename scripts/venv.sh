#!/usr/bin/env bash
# Makes the project's own environment, .venv, and installs kubmesh into it (editable), with the extras given
# (e.g. '.[test,dev]'; default '.'). Works on a Python that PEP 668 marks as externally managed (Debian 12,
# Ubuntu 24.04, Raspberry Pi OS), where 'pip install' outside a virtual environment is refused.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-.}
python=${PYTHON:-python3}
if ! .venv/bin/python -c '' 2>/dev/null; then
  rm -rf .venv
  "$python" -m venv .venv || {
    echo "could not make a virtual environment with $python: on Debian or Ubuntu, install python3-venv" >&2
    exit 1
  }
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$target"
