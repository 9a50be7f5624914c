#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need on a Debian
# machine first (oathtool for the cross-check, PostgreSQL for the store suite,
# Chromium, chromedriver and CJK fonts for the browser tests), so it works on a
# fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

missing=()
command -v oathtool >/dev/null 2>&1 || missing+=(oathtool)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# Japanese text in the screenshots of the browser tests.
[ -d /usr/share/fonts/opentype/noto ] && ls /usr/share/fonts/opentype/noto | grep -q CJK ||
  missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt_install "${missing[@]}"
fi

# PostgreSQL for the store's conformance suite, which runs every test on SQLite
# and on postgres://postgres@127.0.0.1:5432/test (trust auth). Skipped when
# ICHIDO_TEST_POSTGRES_URL names another server: that one is yours to run.
pg_answers() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }
if [ -z "${ICHIDO_TEST_POSTGRES_URL:-}" ]; then
  if ! command -v pg_isready >/dev/null 2>&1 || ! pg_answers; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    fresh_pg=""
    if [ ! -d /etc/postgresql ] || [ -z "$(ls -A /etc/postgresql)" ]; then
      echo "installing: postgresql"
      apt_install postgresql
      fresh_pg=1
    fi
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    if [ -n "$fresh_pg" ]; then
      # A new server: let the tests' role in over loopback without a password.
      hba="/etc/postgresql/$version/main/pg_hba.conf"
      $sudo sed -i '1i host all postgres 127.0.0.1/32 trust # ichido tests' "$hba"
    fi
    echo "starting PostgreSQL $version"
    $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
      $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    for _ in $(seq 1 30); do
      pg_answers && break
      sleep 1
    done
    if ! pg_answers; then
      echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2
      exit 1
    fi
  fi
  # The tests' database, made as the tests connect (role postgres over loopback).
  exists="$(psql -h 127.0.0.1 -U postgres -d postgres -qtAc \
    "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null || true)"
  if [ "$exists" != 1 ]; then
    createdb -h 127.0.0.1 -U postgres test ||
      echo "warning: cannot create database test on 127.0.0.1:5432" >&2
  fi
fi

exec cargo test --workspace --locked "$@"
