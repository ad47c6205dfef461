#!/usr/bin/env bash
# Benchmark: full converge of playbooks/site.yml on a fresh appliance container, then the idempotent
# re-run (target: re-run < 60 s on 2 cores). Prints the figures and the re-run's changed count.
# Uses its own podman networks and containers (bench-*), removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$root/.venv/bin:$PATH" PYTHONPATH="$root/app" ANSIBLE_CONFIG=$root/ansible.cfg
image=${JUKICS_BASE_IMAGE:-localhost/jukics-base:trixie}
work=$(mktemp -d)
cleanup() {
  podman rm -f bench-cs1 >/dev/null 2>&1 || true
  podman network rm bench-internal bench-jukinet >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cleanup; mkdir -p "$work"

podman network create --subnet 10.233.110.0/24 bench-internal >/dev/null
podman network create --internal --subnet 10.233.120.0/24 bench-jukinet >/dev/null
podman run -d --name bench-cs1 --hostname cs1 --systemd=always --cap-add SYS_ADMIN --cap-add NET_ADMIN \
  --network bench-internal:ip=10.233.110.10,mac=02:00:0a:e9:6e:0a \
  --network bench-jukinet:ip=10.233.120.10,mac=02:00:0a:e9:78:0a "$image" /sbin/init >/dev/null
until podman exec bench-cs1 systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded'; do sleep 0.5; done
bash scripts/lab-pki.sh "$work/pki" cs1 10.233.110.10 >/dev/null

run() {
  ansible-playbook -i inventories/lab/hosts.yml playbooks/site.yml --limit cs1 \
    -e ansible_host=bench-cs1 -e jukics_lab_pki_dir="$work/pki" \
    -e '{"lab_internal_prefix": "10.233.110", "lab_jukinet_prefix": "10.233.120"}' > "$work/$1.log" 2>&1
}
t0=$(date +%s%N); run converge; t1=$(date +%s%N)
run rerun; t2=$(date +%s%N)
recap=$(grep -E '^cs1 +:' "$work/rerun.log" || true)
secs() { printf '%d.%01d' $(( ($2 - $1) / 1000000000 )) $(( ($2 - $1) / 100000000 % 10 )); }
printf 'site.yml full converge (fresh container): %6s s\n' "$(secs "$t0" "$t1")"
printf 'site.yml idempotent re-run:               %6s s   (target < 60 s)\n' "$(secs "$t1" "$t2")"
printf 're-run recap: %s\n' "$recap"
printf 'cores: %s\n' "$(nproc)"
