#!/usr/bin/env bash
# Build the Debian 13 (trixie) base image for the lab and molecule, and cache it.
# Images cannot be pulled here, so: debootstrap from the host's configured Debian mirror,
# apply pending security updates, clean up, `podman import`. The image carries a label with the
# hash of its recipe (version + package list); an unchanged recipe costs nothing.
set -euo pipefail
image=${JUKICS_BASE_IMAGE:-localhost/jukics-base:trixie}
cache=${JUKICS_CACHE:-/var/cache/jukics}
# What decides the image's content; bump recipe_version when the build steps change meaningfully.
recipe_version=3
# python3-apt: Ansible's apt and package_facts modules; python3-venv: the service's venv.
include=python3,python3-apt,python3-venv,systemd,systemd-sysv,dbus,nftables,iproute2,iputils-ping,openssh-server,ca-certificates,sudo,procps,gnupg
recipe=$(printf '%s %s trixie\n' "$recipe_version" "$include" | sha256sum | cut -c1-16)
log() { printf '[base-image] %s\n' "$*"; }

if [ "$(podman image inspect --format '{{ index .Labels "jukics.recipe" }}' "$image" 2>/dev/null)" = "$recipe" ]; then
  log "cached: $image (recipe $recipe)"
  exit 0
fi

# Mirror detection, debootstrap, sources and the security upgrade are shared with the appliance image.
# shellcheck source=scripts/lib/debootstrap.sh
. "$(dirname "$0")/lib/debootstrap.sh"
jukics_mirrors || exit 2
jukics_probe_mirror || exit 1

work=$(mktemp -d "${TMPDIR:-/tmp}/jukics-rootfs.XXXXXX")
trap 'umount -R "$work/rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
rootfs=$work/rootfs

log "debootstrap trixie from $mirror"
jukics_debootstrap "$rootfs" "$include" "$work/debootstrap.log" || exit 1
jukics_write_sources "$rootfs"
log "applying trixie security updates"
jukics_upgrade "$rootfs" "$work/upgrade.log" "apt-get clean" || exit 1
# No apt lists in the image, and no stamp claiming they are fresh (Ansible's apt cache_valid_time
# would then skip the update and find no package).
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/periodic/*
touch -d @0 "$rootfs"/var/lib/apt/lists  # its mtime is the fallback freshness stamp
: > "$rootfs/etc/machine-id"
# No kernel modules in containers: this unit can only fail there.
ln -sf /dev/null "$rootfs/etc/systemd/system/systemd-modules-load.service"

log "podman import $image"
tar -C "$rootfs" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'ENV container=podman' \
  --change "LABEL jukics.recipe=$recipe" - "$image" >/dev/null 2>&1
log "built $image (recipe $recipe)"
