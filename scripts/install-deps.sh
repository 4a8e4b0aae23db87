#!/usr/bin/env bash
# Installs what `make test` needs on a fresh machine: the PostgreSQL server
# binaries (when initdb is missing), Chromium for the browser tests, the
# tools of the deployment tests (podman and runc for the container image,
# promtool for the alert rules, systemd-analyze for the unit, the CA
# bundle the image ships), the Node packages of the interoperability test,
# Go modules and staticcheck.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

have_pg() {
  command -v initdb >/dev/null 2>&1 && return 0
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

apt_updated=""
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: $* missing and apt-get is not available; install it by hand" >&2
    return 1
  fi
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! have_pg; then
  echo "install-deps: installing PostgreSQL server (apt-get install postgresql)"
  apt_install postgresql
fi

if [ "${RELAY_SKIP_BROWSER:-}" != "1" ] && ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  echo "install-deps: installing chromium for the browser tests"
  apt_install chromium || echo "install-deps: chromium unavailable; browser tests will be skipped" >&2
fi

# deploy/: each missing tool is installed; a test whose tool is still
# missing skips and says why. RELAY_SKIP_DEPLOY_TOOLS=1 skips them all.
if [ "${RELAY_SKIP_DEPLOY_TOOLS:-}" != "1" ]; then
  deploy_pkgs=()
  command -v podman >/dev/null 2>&1 || deploy_pkgs+=(podman)
  command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || deploy_pkgs+=(runc)
  command -v promtool >/dev/null 2>&1 || deploy_pkgs+=(prometheus)
  command -v systemd-analyze >/dev/null 2>&1 || deploy_pkgs+=(systemd)
  [ -s /etc/ssl/certs/ca-certificates.crt ] || deploy_pkgs+=(ca-certificates)
  if [ "${#deploy_pkgs[@]}" -gt 0 ]; then
    echo "install-deps: installing ${deploy_pkgs[*]} for the deployment tests"
    apt_install "${deploy_pkgs[@]}" || echo "install-deps: ${deploy_pkgs[*]} unavailable; those deployment tests will be skipped" >&2
  fi
fi

if [ -f testdata/interop/package-lock.json ] && [ ! -d testdata/interop/node_modules ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "install-deps: npm ci in testdata/interop"
    (cd testdata/interop && npm ci --no-audit --no-fund --silent)
  else
    echo "install-deps: npm missing; apt-get install nodejs npm" >&2
    apt_install nodejs npm
    (cd testdata/interop && npm ci --no-audit --no-fund --silent)
  fi
fi

go mod download
if [ ! -x bin/staticcheck ]; then
  echo "install-deps: installing staticcheck into ./bin"
  GOBIN="$PWD/bin" GOFLAGS=-mod=mod go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
