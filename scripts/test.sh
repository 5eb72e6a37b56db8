#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, then runs them.
# Debian packages: mosquitto (the external-broker path), socat (serial pairs), chromium (browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for package in mosquitto mosquitto-clients socat chromium; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
exec python3 -m pytest -n 2 "$@"
