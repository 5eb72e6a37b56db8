#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, then runs lint, the layer contracts and the tests.
# Debian packages: mosquitto (the external-broker path), socat (serial pairs), chromium (browser tests),
# postgresql (the server database), python3-venv (the project's own environment on a PEP 668 Python),
# libgammu-dev and pkg-config (python-gammu, the SMS fallback's modem library, builds against them where PyPI
# has no wheel for the machine).
# Python packages go into the project's own environment, .venv (scripts/venv.sh), never into the system Python.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for package in mosquitto mosquitto-clients socat chromium postgresql python3-venv libgammu-dev pkg-config; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

bash scripts/venv.sh '.[test,dev]'
.venv/bin/ruff check --quiet .
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
.venv/bin/mypy
exec .venv/bin/python -m pytest -n 2 "$@"
