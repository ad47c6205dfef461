#!/usr/bin/env bash
# Build the CS appliance image (make appliance-image; docs/image.md). Everything is built in a temp
# dir and moved into out/image/ only when every step passed, so a failed build leaves no artifact.
#   bash scripts/build-appliance-image.sh            whole build (runs playbooks/image.yml)
#   bash scripts/build-appliance-image.sh rootfs W   stage 1 (called by image.yml): debootstrap W/rootfs
#   bash scripts/build-appliance-image.sh finalize W stage 3 (called by image.yml): kernel, disks, OCI, manifest
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${JUKICS_CACHE:-/var/cache/jukics}
out=${JUKICS_IMAGE_OUT:-$here/out/image}
name=${JUKICS_IMAGE_NAME:-jukics-appliance}
disk_size=${JUKICS_IMAGE_DISK_SIZE:-3G}
log() { printf '[appliance-image] %s\n' "$*"; }
die() { printf '[appliance-image] ERROR: %s\n' "$*" >&2; exit 1; }

# The appliance's own packages on top of debootstrap's minbase: what the base image has, plus a kernel
# that boots under QEMU/KVM and on hardware, its initramfs, udev (the TPM device node) and networkd.
include=python3,python3-apt,python3-venv,systemd,systemd-sysv,udev,kmod,dbus,nftables,iproute2,iputils-ping,openssh-server,ca-certificates,sudo,procps,gnupg,linux-image-amd64,initramfs-tools,zstd

# Mirror detection, debootstrap, sources and the security upgrade are shared with the base image.
# shellcheck source=scripts/lib/debootstrap.sh
. "$here/scripts/lib/debootstrap.sh"

stage_rootfs() {
  local work=$1 rootfs=$1/rootfs
  jukics_mirrors || exit 2
  # Development only (JUKICS_IMAGE_DEV_WORK): reuse a finished debootstrap stage.
  if [ -e "$work/rootfs.done" ]; then log "reusing $rootfs (development)"; mount_proc "$rootfs"; return 0; fi
  jukics_probe_mirror || exit 1
  log "debootstrap trixie from $mirror"
  jukics_debootstrap "$rootfs" "$include" "$work/debootstrap.log" || exit 1
  jukics_write_sources "$rootfs"
  log "security updates; systemd-networkd if trixie ships it apart"
  jukics_upgrade "$rootfs" "$work/upgrade.log" \
    '{ ! apt-cache show systemd-networkd >/dev/null 2>&1 || apt-get -y -q --no-install-recommends install systemd-networkd; }' \
    || exit 1
  # The boot disk (no partition table: direct kernel boot, root=/dev/vda) and DHCP on the first NIC.
  printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' > "$rootfs/etc/fstab"
  printf 'jukics-cs\n' > "$rootfs/etc/hostname"
  # sudo resolves the host name; without this line it warns "unable to resolve host" on every call
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tjukics-cs\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$rootfs/etc/hosts"
  mkdir -p "$rootfs/etc/systemd/network"
  printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' > "$rootfs/etc/systemd/network/20-wired.network"
  ln -sf /usr/lib/systemd/system/systemd-networkd.service "$rootfs/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
  # The initramfs must find the root disk under QEMU (virtio) and on the usual hardware.
  printf 'virtio_pci\nvirtio_blk\next4\ntpm_crb\ntpm_tis\n' >> "$rootfs/etc/initramfs-tools/modules"
  chroot "$rootfs" update-initramfs -u -k all > "$work/initramfs.log" 2>&1 || { tail -20 "$work/initramfs.log" >&2; die "update-initramfs failed"; }
  # Per-host identity is made at first boot, never baked in: machine-id, SSH host keys.
  : > "$rootfs/etc/machine-id"
  echo "$mirror" > "$work/mirror"
  [ -z "${JUKICS_IMAGE_DEV_WORK:-}" ] || touch "$work/rootfs.done"
  mount_proc "$rootfs"
}

# The roles read the kernel's settings (sysctl, base_hardening) and run apt and pip in the chroot, which
# needs /proc; the kernel they read is the build host's, nothing is written to it
# (base_hardening_runtime_apply: false). Unmounted by finalize, and by the build's exit trap.
mount_proc() {
  mountpoint -q "$1/proc" || mount -t proc proc "$1/proc" || die "cannot mount /proc in $1"
}

stage_finalize() {
  local work=$1 rootfs=$1/rootfs art=$1/artifacts
  ! mountpoint -q "$rootfs/proc" || umount -R "$rootfs/proc" || die "cannot unmount $rootfs/proc"
  mkdir -p "$art"
  # Kernel and initramfs for direct kernel boot (missing ones stop the build here).
  local kernel initrd
  kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -1)
  initrd=$(find "$rootfs/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -1)
  [ -n "$kernel" ] && [ -s "$kernel" ] || die "no kernel in the rootfs (/boot/vmlinuz-*): is linux-image-amd64 installed?"
  [ -n "$initrd" ] && [ -s "$initrd" ] || die "no initramfs in the rootfs (/boot/initrd.img-*)"
  cp "$kernel" "$art/vmlinuz"; cp "$initrd" "$art/initrd.img"
  # Package list before the apt lists go (the manifest records name and version of each).
  chroot "$rootfs" dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' | LC_ALL=C sort > "$work/packages.tsv"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  rm -rf "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.ansible
  # SSH host keys are made per host at first boot (they were needed until now for `sshd -T`).
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  find "$rootfs/var/log" -type f -exec truncate -s 0 {} +
  log "disk image ($disk_size ext4, mkfs.ext4 -d, no loop mount)"
  mkfs.ext4 -q -F -L jukics-root -d "$rootfs" "$art/$name.raw" "$disk_size" > "$work/mkfs.log" 2>&1 \
    || { tail -20 "$work/mkfs.log" >&2; die "mkfs.ext4 -d failed"; }
  qemu-img convert -f raw -O qcow2 -c "$art/$name.raw" "$art/$name.qcow2" || die "qemu-img convert failed"
  log "OCI archive (podman load/import)"
  # A container has no kernel or TPM: the same rootfs, for podman (docs/image.md).
  tar -C "$rootfs" --numeric-owner --sort=name --mtime=@0 -c . > "$work/rootfs.tar"
  PYTHONPATH=$here/app python3 -m jukics.image.oci "$work/rootfs.tar" "$art/$name.oci.tar" "$name:latest"
  rm -f "$work/rootfs.tar"
  PYTHONPATH=$here/app python3 -m jukics.image.manifest --packages "$work/packages.tsv" --artifacts "$art" \
    --roles "$here/roles" --mirror "$(cat "$work/mirror" 2>/dev/null || echo unknown)" \
    --command "make -C $here appliance-image" --repo "$here" > "$work/manifest.json" || die "manifest failed"
  # Written beside the artifacts, not among them: the manifest must not hash itself.
  mv "$work/manifest.json" "$art/manifest.json"
  # Signed when a release key is configured (its secret key in the builder's GnuPG home); a site checks
  # it with `python3 -m jukics.image.release verify DIR --keyring release-key.gpg`.
  if [ -n "${JUKICS_IMAGE_SIGN_KEY:-}" ]; then
    PYTHONPATH=$here/app python3 -m jukics.image.release sign "$art" --key "$JUKICS_IMAGE_SIGN_KEY" \
      || die "signing the manifest failed; nothing was written to $out"
  fi
  # Into place only now; the previous build's artifacts are replaced as a whole.
  mkdir -p "$(dirname "$out")"
  rm -rf "$out.new"; mv "$art" "$out.new"
  rm -rf "$out.old"; [ ! -e "$out" ] || mv "$out" "$out.old"
  mv "$out.new" "$out"; rm -rf "$out.old"
  log "built: $(cd "$out" && ls | tr '\n' ' ')"
}

build() {
  local work start
  start=$(date +%s)
  command -v debootstrap >/dev/null && command -v qemu-img >/dev/null && command -v mkfs.ext4 >/dev/null \
    || die "missing tools: run 'bash scripts/bootstrap-image.sh' (debootstrap, qemu-utils, e2fsprogs)"
  mkdir -p /var/tmp
  if [ -n "${JUKICS_IMAGE_DEV_WORK:-}" ]; then
    # Development only: a kept work dir, so a failing role is retried without a new debootstrap.
    work=$JUKICS_IMAGE_DEV_WORK; mkdir -p "$work"
    # shellcheck disable=SC2064
    trap "umount -R '$work/rootfs/proc' 2>/dev/null || true" EXIT
  else
    work=$(mktemp -d /var/tmp/jukics-appliance.XXXXXX)
    # shellcheck disable=SC2064
    trap "umount -R '$work/rootfs/proc' 2>/dev/null || true; rm -rf '$work'" EXIT
  fi
  PATH=$here/.venv/bin:$PATH PYTHONPATH=$here/app ANSIBLE_CONFIG=$here/ansible.cfg \
    ansible-playbook -i localhost, -c local "$here/playbooks/image.yml" -e "jukics_image_work=$work" "$@" \
    || die "build failed (see above); nothing was written to $out"
  log "build took $(( $(date +%s) - start )) s"
}

case "${1:-build}" in
  rootfs) stage_rootfs "$2" ;;
  finalize) stage_finalize "$2" ;;
  build) shift || true; build "$@" ;;
  *) die "usage: $0 [build|rootfs WORK|finalize WORK]" ;;
esac
