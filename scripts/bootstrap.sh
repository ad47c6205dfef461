#!/usr/bin/env bash
# Install what `make lab` and `make test` need on a Debian 12 controller, and cache it.
#   - Debian packages (podman, debootstrap, nftables, PostgreSQL, swtpm, promtool, ...)
#   - /etc/containers/containers.conf fixes this kind of host needs (runc, ulimits)
#   - a venv with the pinned tools and the service's dependencies, cached by content hash
# Everything is idempotent: a second run costs a few seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${JUKICS_CACHE:-/var/cache/jukics}
mkdir -p "$cache"
log() { printf '[bootstrap] %s\n' "$*"; }

apt_packages=(
  podman runc debootstrap nftables iproute2 iputils-ping curl ca-certificates git openssl
  python3 python3-venv python3-dev build-essential pkg-config
  postgresql
  swtpm swtpm-tools tpm2-tools tpm2-abrmd libtss2-tcti-tabrmd0 libtss2-dev tpm2-openssl
  prometheus
  zstd gnupg
)
apt_stamp="$cache/apt-$(printf '%s\n' "${apt_packages[@]}" | sha256sum | cut -c1-12).done"
if [ ! -f "$apt_stamp" ]; then
  log "installing Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q "${apt_packages[@]}" >/dev/null
  touch "$apt_stamp"
fi

# Podman on this host kind: the VM lacks CAP_SYS_RESOURCE (rlimits above the hard limit fail)
# and crun refuses the hybrid cgroup layout; runc handles it (reference/harness-notes.md).
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576; [ "$nofile" -gt 16384 ] && nofile=16384
want_conf=$(cat <<CONF
# written by jukics scripts/bootstrap.sh
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=16384:16384"]
[engine]
runtime = "runc"
CONF
)
if [ "$(cat /etc/containers/containers.conf 2>/dev/null)" != "$want_conf" ]; then
  log "writing /etc/containers/containers.conf"
  mkdir -p /etc/containers
  printf '%s\n' "$want_conf" > /etc/containers/containers.conf
fi

# The venv lives in the cache, keyed by the pinned requirement files, and .venv points at it.
venv_key=$(cat "$here/requirements/tools.txt" "$here/requirements/app.txt" | sha256sum | cut -c1-12)
venv="$cache/venv-$venv_key"
if [ ! -f "$venv/.complete" ]; then
  log "building venv $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
  "$venv/bin/pip" install -q --disable-pip-version-check \
    -r "$here/requirements/tools.txt" -r "$here/requirements/app.txt" 2>&1 | grep -v "is ignored" || true
  "$venv/bin/python" -c "import molecule, falcon, sqlalchemy, ansiblelint, tpm2_pytss"
  touch "$venv/.complete"   # only a venv that finished installing is reused
fi
ln -sfn "$venv" "$here/.venv"
log "ready: venv=$venv"
