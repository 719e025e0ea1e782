#!/usr/bin/env bash
# Builds the DAF worker image (docker/Dockerfile) from the repository root.
#
# Usage: docker/build.sh [--local-base] [--tag TAG] [-- EXTRA DOCKER BUILD ARGS...]
#
#   (default)     the documented GPU image: CUDA runtime base, uv from ghcr.io, torch's CUDA build from
#                 download.pytorch.org. Needs those registries.
#   --local-base  the same Dockerfile on a machine that reaches only PyPI and Debian's package mirror (an air-gapped
#                 cluster with a package mirror, or CI): a Debian 12 base made here with debootstrap (root), a uv
#                 image made from PyPI's uv wheel, and torch 2.13.0 as this machine's pip resolves it (a CPU build
#                 where pip is configured so), served to the build on 127.0.0.1. Base images are made once and kept.
#
# DOCKER_HOST selects the daemon as usual. The image is tagged daf-worker:latest unless --tag says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

local_base=false tag=daf-worker:latest
while [ $# -gt 0 ]; do
  case "$1" in
    --local-base) local_base=true ;;
    --tag) tag=$2; shift ;;
    --) shift; break ;;
    *) echo "usage: $0 [--local-base] [--tag TAG] [-- DOCKER BUILD ARGS...]" >&2; exit 2 ;;
  esac
  shift
done

if ! $local_base; then
  exec docker build -f docker/Dockerfile -t "$tag" "$@" .
fi

# ---- --local-base ----
PY=${PYTHON:-python3}
UV_VERSION=$(sed -n 's/^ARG UV_IMAGE=.*uv:\(.*\)$/\1/p' docker/Dockerfile)
BASE_IMAGE=daf-base:bookworm
UV_IMAGE=daf-uv:$UV_VERSION
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Debian 12 (bookworm) ships Python 3.11, the version DAF pins (uv makes the venv: no python3.11-venv); git is for
# Prefect's git_clone pull step.
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "--local-base needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
  [ "$(id -u)" -eq 0 ] || { echo "--local-base makes its Debian base with debootstrap, which needs root" >&2; exit 1; }
  echo "making $BASE_IMAGE with debootstrap (about 2 minutes)"
  debootstrap --variant=minbase --include=python3.11,ca-certificates,git \
    bookworm "$work/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # The host's CA bundle: where HTTPS to the package registry is re-signed by a local CA (as on these machines),
  # pip and uv inside the build trust what the host's pip trusts.
  cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$work/rootfs"
fi

# uv's PyPI wheel carries the same static binary as its ghcr.io image: an image holding only /uv stands in for it.
if ! docker image inspect "$UV_IMAGE" >/dev/null 2>&1; then
  "$PY" -m pip download --quiet --no-deps --only-binary :all: --platform manylinux_2_17_x86_64 \
    --dest "$work/uv" "uv==$UV_VERSION"
  mkdir -p "$work/uvroot"
  "$PY" - "$work/uv" "$work/uvroot/uv" <<'EOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("uv-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    name = next(n for n in zf.namelist() if n.endswith(".data/scripts/uv"))
    pathlib.Path(sys.argv[2]).write_bytes(zf.read(name))
EOF
  chmod 755 "$work/uvroot/uv"
  tar -C "$work/uvroot" -c uv | docker import - "$UV_IMAGE" >/dev/null
fi

# torch and its dependencies as this machine's pip resolves them (its configured wheel folders included, which a
# build cannot see), served on 127.0.0.1 to a build on the host's network.
"$PY" -m pip download --quiet --dest "$work/torch" "torch==2.13.0"
# A fixed port where it is free: the URL is a build argument, and a new one would rebuild every layer after torch.
port=$("$PY" -c '
import socket
s = socket.socket()
try:
    s.bind(("127.0.0.1", 38611))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
"$PY" -m http.server --bind 127.0.0.1 --directory "$work/torch" "$port" >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 50); do
  "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break
  sleep 0.1
done

docker build -f docker/Dockerfile -t "$tag" --network host \
  --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg UV_IMAGE="$UV_IMAGE" \
  --build-arg TORCH_FIND_LINKS="http://127.0.0.1:$port/" \
  "$@" .
