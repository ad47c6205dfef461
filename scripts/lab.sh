#!/usr/bin/env bash
# The local lab: the CS appliance and its neighbours as systemd containers on two podman networks.
#   internal (庁内, 10.233.10.0/24): cs1 (eth0), kizon1 (既存住基), stranger1 (a device not on the MAC allowlist),
#            mon1 (the monitoring host: Prometheus + Alertmanager scraping cs1)
#   jukinet  (住基ネット, 10.233.20.0/24, no route out): cs1 (eth1), pref1 (都道府県サーバ sim),
#            nat1 (全国サーバ sim)
# `lab.sh up` creates what is missing, provisions the sims and cs1 with playbooks/lab.yml (sims.yml + site.yml) and runs the demo;
# `lab.sh down` removes containers and networks. Addresses and MACs are fixed: the lab inventory
# (inventories/lab/) names them for the firewall's allowlists.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
image=${JUKICS_BASE_IMAGE:-localhost/jukics-base:trixie}
state=$root/.lab
export PATH="$root/.venv/bin:$PATH" PYTHONPATH="$root/app"
export ANSIBLE_CONFIG=$root/ansible.cfg

say() { printf '\n== %s\n' "$*"; }

# name subnet bridge-MAC [options]. The bridges' MACs are pinned (a bridge otherwise takes the lowest
# MAC of its ports) because the controller, reaching the lab through them, is on the MAC allowlist.
networks=(
  "jukics-internal 10.233.10.0/24 02:00:0a:e9:0a:01"
  "jukics-jukinet 10.233.20.0/24 02:00:0a:e9:14:01 --internal"
)
# name  networks (name:ip=..,mac=..)
hosts=(
  "jukics-cs1 --network jukics-internal:ip=10.233.10.10,mac=02:00:0a:e9:0a:0a --network jukics-jukinet:ip=10.233.20.10,mac=02:00:0a:e9:14:0a"
  "jukics-kizon1 --network jukics-internal:ip=10.233.10.20,mac=02:00:0a:e9:0a:14"
  "jukics-stranger1 --network jukics-internal:ip=10.233.10.99,mac=02:00:0a:e9:0a:63"
  "jukics-mon1 --network jukics-internal:ip=10.233.10.30,mac=02:00:0a:e9:0a:1e"
  "jukics-pref1 --network jukics-jukinet:ip=10.233.20.20,mac=02:00:0a:e9:14:14"
  "jukics-nat1 --network jukics-jukinet:ip=10.233.20.30,mac=02:00:0a:e9:14:1e"
)

up_infra() {
  say "networks and hosts"
  for n in "${networks[@]}"; do
    set -- $n
    podman network exists "$1" || podman network create --subnet "$2" ${4:-} "$1" >/dev/null
  done
  for h in "${hosts[@]}"; do
    set -- $h
    name=$1; shift
    if [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != "true" ]; then
      podman rm -f "$name" >/dev/null 2>&1 || true
      podman run -d --name "$name" --hostname "${name#jukics-}" --systemd=always \
        --cap-add SYS_ADMIN --cap-add NET_ADMIN "$@" "$image" /sbin/init >/dev/null
    fi
  done
  for n in "${networks[@]}"; do
    set -- $n
    bridge=$(podman network inspect --format '{{.NetworkInterface}}' "$1")
    ip link set dev "$bridge" address "$3"
  done
  for h in "${hosts[@]}"; do
    set -- $h
    for _ in $(seq 60); do
      s=$(podman exec "$1" systemctl is-system-running 2>/dev/null || true)
      case "$s" in running|degraded) break ;; esac
      sleep 0.5
    done
    printf '  %-18s %s\n' "$1" "$(podman exec "$1" ip -br -4 addr show scope global | awk '{print $1" "$3}' | tr '\n' ' ')"
  done
}

down() {
  for h in "${hosts[@]}"; do set -- $h; podman rm -f "$1" >/dev/null 2>&1 || true; done
  for n in "${networks[@]}"; do set -- $n; podman network rm "$1" >/dev/null 2>&1 || true; done
  echo "lab removed"
}

provision() {
  say "throwaway lab PKI (.lab/pki, generated now, never committed)"
  bash scripts/lab-pki.sh "$state/pki" cs1 10.233.10.10 >/dev/null
  ls "$state/pki" | tr '\n' ' '; echo
  say "ansible-playbook playbooks/lab.yml -i inventories/lab (sims, then site.yml)"
  ansible-playbook -i inventories/lab/hosts.yml playbooks/lab.yml -e jukics_lab_pki_dir="$state/pki" \
    | tee "$state/site.log" | grep -E '^(PLAY|TASK \[.*(Validate|health|allowlist)|ok:|changed:|fatal:|failed:|[a-z0-9-]+ +: ok=)' \
    | grep -vE '^(ok|changed): \[' || true
  grep -qE 'failed=0 ' "$state/site.log" && ! grep -qE 'failed=[1-9]|unreachable=[1-9]' "$state/site.log" \
    || { echo "site.yml failed: see $state/site.log"; exit 1; }
}

demo() {
  python3 -m jukics.sim.lab_demo --state "$state"
}

case "${1:-up}" in
  up) mkdir -p "$state"; up_infra; provision; demo ;;
  down) down ;;
  demo) demo ;;
  *) echo "usage: lab.sh up|down|demo" >&2; exit 2 ;;
esac
