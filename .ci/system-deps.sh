#!/usr/bin/env bash
# Install and start the system services the test-suite needs, only when missing:
# Mosquitto (tests start their own TLS brokers from it) and PostgreSQL (HQ store
# tests use 127.0.0.1:5432, user postgres, database test). Idempotent; needs
# root (or sudo) on Debian when something is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_updated=0
PG_URL_HOST=127.0.0.1

apt_install() {  # apt_install PACKAGE...
  if [ "$apt_updated" -eq 0 ]; then
    echo "system-deps: apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  echo "system-deps: installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

have python3 || apt_install python3 python3-venv
have mosquitto || apt_install mosquitto
have chromium || apt_install chromium  # browser tests drive Debian's chromium; none is downloaded
fc-list 2>/dev/null | grep -q 'Noto Nastaliq Urdu' || apt_install fonts-noto-core  # Urdu screens
have systemd-analyze || apt_install systemd  # tests verify the unit files
have promtool || apt_install prometheus  # `tools` tests: promtool checks the alert rules and /metrics

pg_ok() { psql -h "$PG_URL_HOST" -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; }

if ! pg_ok; then
  have psql && ls /etc/postgresql/*/main >/dev/null 2>&1 || apt_install postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if ! pg_isready -h "$PG_URL_HOST" -q; then
    echo "system-deps: starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || \
      $SUDO pg_ctlcluster "$version" main start
    for _ in $(seq 1 30); do pg_isready -h "$PG_URL_HOST" -q && break; sleep 1; done
  fi
  if ! pg_ok; then
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! $SUDO grep -q "khidmat-edge tests" "$hba"; then
      echo "system-deps: allowing local test connections as postgres in $hba"
      $SUDO sed -i "1i host all postgres 127.0.0.1/32 trust  # khidmat-edge tests" "$hba"
      $SUDO pg_ctlcluster "$version" main reload 2>/dev/null || \
        $SUDO -u postgres psql -Atc 'select pg_reload_conf()' >/dev/null
    fi
    psql -h "$PG_URL_HOST" -U postgres -d postgres -Atc \
      "select 1 from pg_database where datname = 'test'" | grep -q 1 || \
      psql -h "$PG_URL_HOST" -U postgres -d postgres -c 'create database test' >/dev/null
  fi
  pg_ok || { echo "system-deps: PostgreSQL still unreachable at $PG_URL_HOST" >&2; exit 1; }
fi
echo "system-deps: ok (mosquitto, postgresql, chromium, fonts, promtool)"
