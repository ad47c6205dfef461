#!/usr/bin/env bash
# Appliance image figures: build time and size (make appliance-image), boot-to-ready under QEMU
# (make test-image; KVM or TCG is printed): QEMU start to first boot, the site.yml converge, first boot
# to service ready, intake to outbox drained. Goal with KVM: build < 10 min, image < 1 GiB, boot < 60 s.
# Slow (minutes): skipped by `make bench` unless JUKICS_BENCH_IMAGE=1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[ "${JUKICS_BENCH_IMAGE:-0}" = 1 ] || { echo "image bench skipped (set JUKICS_BENCH_IMAGE=1; takes minutes)"; exit 0; }
start=$(date +%s)
bash "$here/scripts/build-appliance-image.sh" >/dev/null
build_s=$(( $(date +%s) - start ))
out=$here/out/image
printf 'build: %d s\n' "$build_s"
for f in jukics-appliance.qcow2 jukics-appliance.raw jukics-appliance.oci.tar; do
  printf '%s: %d MiB on disk (%d MiB apparent)\n' "$f" "$(( $(du -k "$out/$f" | cut -f1) / 1024 ))" \
    "$(( $(stat -c %s "$out/$f") / 1048576 ))"
done
PYTHONPATH=$here/app python3 -m jukics.image.boottest | grep -E '^(boot to|timing |OK|FAILED)'
