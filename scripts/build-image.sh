#!/usr/bin/env bash
# Builds relay's container image (see Dockerfile) offline from the static
# binary `make build` produces, the host's CA certificates and one
# unprivileged user, FROM scratch. `make image` runs it after `make build`.
#
#   scripts/build-image.sh [TAG]        default TAG relay:dev
#
# Environment:
#   RELAY_BINARY      the binary to put in (default bin/relay)
#   IMAGE_STAGE       build context directory (default bin/image)
#   CONTAINER_ENGINE  podman or docker (default: podman if installed, else docker)
#   CA_BUNDLE         CA certificates to copy (default /etc/ssl/certs/ca-certificates.crt,
#                     from Debian's ca-certificates package)
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-relay:dev}"
stage="${IMAGE_STAGE:-bin/image}"
binary="${RELAY_BINARY:-bin/relay}"
ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v podman >/dev/null 2>&1; then engine=podman
  elif command -v docker >/dev/null 2>&1; then engine=docker
  else
    echo "build-image: neither podman nor docker is installed (apt-get install -y podman runc)" >&2
    exit 1
  fi
fi
if [ ! -s "$ca" ]; then
  echo "build-image: no CA bundle at $ca (apt-get install -y ca-certificates, or set CA_BUNDLE)" >&2
  exit 1
fi

if [ ! -x "$binary" ]; then
  echo "build-image: no binary at $binary: run make build first" >&2
  exit 1
fi
# scratch has no libc: the binary must not ask for a dynamic loader.
if command -v readelf >/dev/null 2>&1 && readelf -l "$binary" | grep -q 'Requesting program interpreter'; then
  echo "build-image: $binary is dynamically linked; build it with CGO_ENABLED=0 (make build does)" >&2
  exit 1
fi

mkdir -p "$stage"
cp "$binary" "$stage/relay"
cp "$ca" "$stage/ca-certificates.crt"
printf 'relay:x:65532:65532:relay:/nonexistent:/sbin/nologin\n' >"$stage/passwd"
printf 'relay:x:65532:\n' >"$stage/group"
chmod 0644 "$stage/ca-certificates.crt" "$stage/passwd" "$stage/group"

"$engine" build --quiet -f Dockerfile -t "$tag" "$stage" >/dev/null
echo "build-image: built $tag with $engine from $stage"
