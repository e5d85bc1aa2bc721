#!/usr/bin/env bash
# Install and start the system services the test-suite needs, only when missing.
# Idempotent; needs root (or sudo) on Debian when something is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_updated=0

need_pkg() {  # need_pkg COMMAND PACKAGE...
  if ! command -v "$1" >/dev/null 2>&1; then
    if [ "$apt_updated" -eq 0 ]; then
      echo "system-deps: apt-get update"
      $SUDO apt-get update -qq
      apt_updated=1
    fi
    shift
    echo "system-deps: installing $*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
  fi
}

# The node itself needs nothing beyond Python; later suites add Mosquitto,
# PostgreSQL and Chromium here.
need_pkg python3 python3 python3-venv
echo "system-deps: ok"
