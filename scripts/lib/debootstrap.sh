# shellcheck shell=bash
# Sourced by scripts/build-base-image.sh (the podman base of the lab and molecule) and
# scripts/build-appliance-image.sh (docs/image.md): one place for how a Debian 13 rootfs is made
# here. Nothing can be pulled, so everything comes from the host's configured mirror.
# Every function prints its own clear message on stderr and returns non-zero; the caller exits.

jukics_suite=trixie

# Sets $mirror and $security: JUKICS_MIRROR / JUKICS_SECURITY_MIRROR, else the host's deb822 sources.
jukics_mirrors() {
  local sources=${JUKICS_SOURCES_FILE:-/etc/apt/sources.list.d/debian.sources}
  mirror=${JUKICS_MIRROR:-$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$sources" 2>/dev/null || true)}
  security=${JUKICS_SECURITY_MIRROR:-$(awk '/^URIs:/ && $2 ~ /security/ {print $2; exit}' "$sources" 2>/dev/null || true)}
  if [ -z "$mirror" ]; then
    echo "no Debian mirror configured in $sources; set JUKICS_MIRROR" >&2
    return 2
  fi
  mirror=${mirror%/}
  [ -n "$security" ] || security="${mirror%/debian}/debian-security"
}

# Fail fast and clearly on a mirror that does not answer (debootstrap's own message is buried).
jukics_probe_mirror() {
  local err
  if ! err=$(curl -fsS --max-time "${JUKICS_MIRROR_TIMEOUT:-20}" -o /dev/null "$mirror/dists/$jukics_suite/Release" 2>&1); then
    echo "mirror unreachable: $mirror ($(printf '%s' "$err" | tr -d '\n')); set JUKICS_MIRROR" >&2
    return 1
  fi
}

# jukics_debootstrap ROOTFS INCLUDE LOG: minbase + INCLUDE, packages cached under $cache/debcache.
jukics_debootstrap() {
  local rootfs=$1 include=$2 log=$3
  mkdir -p "$cache/debcache"
  if ! debootstrap --variant=minbase --cache-dir="$cache/debcache" --include="$include" \
      "$jukics_suite" "$rootfs" "$mirror" > "$log" 2>&1; then
    tail -20 "$log" >&2
    echo "debootstrap failed (mirror $mirror)" >&2
    return 1
  fi
}

# The rootfs's own apt sources: the same mirror, with -updates and -security.
jukics_write_sources() {
  local rootfs=$1
  rm -f "$rootfs/etc/apt/sources.list"
  cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $mirror
Suites: $jukics_suite $jukics_suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $jukics_suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

# jukics_upgrade ROOTFS LOG [SHELL]: pending (security) updates, then SHELL in the chroot if given.
jukics_upgrade() {
  local rootfs=$1 log=$2 extra=${3:-} rc=0
  mount -t proc proc "$rootfs/proc" || { echo "cannot mount proc in $rootfs" >&2; return 1; }
  chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
    "apt-get -q update && apt-get -y -q upgrade${extra:+ && $extra}" > "$log" 2>&1 || rc=$?
  umount "$rootfs/proc"
  if [ "$rc" -ne 0 ]; then
    tail -20 "$log" >&2
    echo "apt upgrade in the rootfs failed (mirror $mirror)" >&2
    return 1
  fi
}
