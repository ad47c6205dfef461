#!/usr/bin/env bash
# Benchmark: TLS with TPM-resident keys on a real appliance, and a certificate swap under load.
# Converges a fresh appliance container with playbooks/site.yml (the same roles: swtpm + tpm2-abrmd as
# its TPM, the service from the offline wheelhouse), then runs bench/tls_tpm_appliance.py inside it
# with the installed venv (loopback inside the container only). Prints that script's figures:
# per-request latency TPM key vs software key (ratio, target <= 2.0 on swtpm) and the swap under
# 200 new-connection requests/s (target: 0 failed, new certificate within 1 s). Own networks and
# container (bench-tls-*), removed at the end. Extra arguments go to tls_tpm_appliance.py (--quick).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$root/.venv/bin:$PATH" PYTHONPATH="$root/app" ANSIBLE_CONFIG=$root/ansible.cfg
image=${JUKICS_BASE_IMAGE:-localhost/jukics-base:trixie}
work=$(mktemp -d)
cleanup() {
  podman rm -f bench-tls-cs1 >/dev/null 2>&1 || true
  podman network rm bench-tls-internal bench-tls-jukinet >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cleanup; mkdir -p "$work"

podman network create --subnet 10.233.130.0/24 bench-tls-internal >/dev/null
podman network create --internal --subnet 10.233.140.0/24 bench-tls-jukinet >/dev/null
podman run -d --name bench-tls-cs1 --hostname cs1 --systemd=always --cap-add SYS_ADMIN --cap-add NET_ADMIN \
  --network bench-tls-internal:ip=10.233.130.10,mac=02:00:0a:e9:82:0a \
  --network bench-tls-jukinet:ip=10.233.140.10,mac=02:00:0a:e9:8c:0a "$image" /sbin/init >/dev/null
until podman exec bench-tls-cs1 systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded'; do sleep 0.5; done
bash scripts/lab-pki.sh "$work/pki" cs1 10.233.130.10 >/dev/null
# The controller reaches the appliance through the bridges: their MACs go on the MAC allowlists.
bridge_mac() { cat "/sys/class/net/$(podman network inspect --format '{{.NetworkInterface}}' "$1")/address"; }
internal_mac=$(bridge_mac bench-tls-internal) jukinet_mac=$(bridge_mac bench-tls-jukinet)

echo "converging the appliance with playbooks/site.yml (log: kept on failure)"
if ! ansible-playbook -i inventories/lab/hosts.yml playbooks/site.yml --limit cs1 \
    -e ansible_host=bench-tls-cs1 -e jukics_lab_pki_dir="$work/pki" \
    -e '{"lab_internal_prefix": "10.233.130", "lab_jukinet_prefix": "10.233.140"}' \
    -e lab_internal_bridge_mac="$internal_mac" -e lab_jukinet_bridge_mac="$jukinet_mac" -e '{"cs_service_links_peers": []}' > "$work/converge.log" 2>&1; then
  tail -40 "$work/converge.log"; exit 1
fi
podman cp bench/tls_tpm_appliance.py bench-tls-cs1:/root/tls_tpm_appliance.py
tcti=$(podman exec bench-tls-cs1 sh -c 'sed -n "s/^tcti = \"\(.*\)\"/\1/p" /etc/jukics/jukics.toml')
podman exec bench-tls-cs1 /opt/jukics/venv/bin/python /root/tls_tpm_appliance.py --tcti "${tcti:-tabrmd}" "$@"
echo "cores: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
