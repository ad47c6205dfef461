#!/bin/bash
# tpm_keystore molecule verify: run on the converged container as root. One line per check,
# "<label>: <output on one line> rc=<exit status>"; verify.yml asserts on them.
# TK_TCTI: the TCTI the role publishes; TK_HANDLE: a persistent handle for the test object.
set -u -o pipefail
try() { label=$1; shift; out=$("$@" 2>&1); rc=$?; echo "$label: $(printf %s "$out" | tr '\n' ' ' | sed 's/ *$//') rc=$rc"; }
as() { user=$1; shift; setpriv --reuid "$user" --regid "$user" --init-groups -- "$@"; }
w=$(mktemp -d /var/tmp/tk-verify.XXXXXX)
chmod 0755 "$w"
trap 'rm -rf "$w"' EXIT
cd "$w" || exit 1
export TPM2TOOLS_TCTI=$TK_TCTI TPM2OPENSSL_TCTI=$TK_TCTI
P=(-provider tpm2 -provider default)

# --- who may use the TPM: root and tss members through abrmd, nobody else, nobody past abrmd ----------
id tk-member >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin --groups tss tk-member
id tk-outsider >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin tk-outsider
# Like the jukics user: not in /etc/group's tss, the unit gives it the group (SupplementaryGroups=).
id tk-service >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin tk-service
try root-tabrmd tpm2_getrandom -T tabrmd 8 --hex
try root-tcti tpm2_getrandom -T "$TK_TCTI" 8 --hex
try tss-member as tk-member tpm2_getrandom -T "$TK_TCTI" 8 --hex
try outsider as tk-outsider tpm2_getrandom -T "$TK_TCTI" 8 --hex
try member-raw-swtpm as tk-member tpm2_getrandom -T swtpm:path=/run/swtpm/swtpm.sock 8 --hex

# --- objects made before the restarts: a sealed secret at a persistent handle, a TSS2 key -------------
head -c 32 /dev/urandom > secret.bin
tpm2_evictcontrol -Q -C o -c "$TK_HANDLE" >/dev/null 2>&1 || true # left over from an earlier verify
tpm2_createprimary -Q -C o -g sha256 -G ecc256 -c primary.ctx
tpm2_create -Q -C primary.ctx -i secret.bin -u seal.pub -r seal.priv
tpm2_load -Q -C primary.ctx -u seal.pub -r seal.priv -c seal.ctx
try persist sh -c "tpm2_evictcontrol -Q -C o -c seal.ctx $TK_HANDLE && tpm2_getcap handles-persistent | grep -o $TK_HANDLE"
try genpkey sh -c "openssl genpkey ${P[*]} -algorithm EC -pkeyopt group:P-256 -out key.pem && head -n 1 key.pem"
openssl pkey "${P[@]}" -in key.pem -pubout -out key.pub 2>/dev/null
lockout_before=$(tpm2_getcap properties-variable | awk '/TPM2_PT_LOCKOUT_COUNTER/ {print $2}')

# --- a unit PartOf=tpm2-abrmd.service (as jukics.service is): sandboxed, tss group, uses the TPM -------
cat > /etc/systemd/system/tk-partof-probe.service <<UNIT
[Unit]
Description=tpm_keystore molecule: stands in for jukics.service
Requires=tpm2-abrmd.service
After=tpm2-abrmd.service
PartOf=tpm2-abrmd.service
[Service]
User=tk-service
SupplementaryGroups=tss
Environment=TPM2TOOLS_TCTI=$TK_TCTI
ExecStartPre=/usr/bin/tpm2_getrandom 8 --hex
ExecStart=/bin/sleep infinity
ProtectSystem=strict
PrivateDevices=yes
RestrictAddressFamilies=AF_UNIX
UNIT
systemctl daemon-reload
systemctl restart tk-partof-probe.service
try probe-before systemctl is-active tk-partof-probe.service
before=$(systemctl show -P InvocationID tk-partof-probe.service)
systemctl restart tpm2-abrmd.service
# systemctl returns once abrmd is up; the restart it propagates to the probe may still be running.
for _ in $(seq 50); do systemctl is-active --quiet tk-partof-probe.service && break; sleep 0.2; done
after=$(systemctl show -P InvocationID tk-partof-probe.service)
try probe-restarted sh -c "[ -n '$before' ] && [ '$before' != '$after' ] && echo yes"
try probe-after systemctl is-active tk-partof-probe.service

# --- restart the TPM itself: state, keys and the DA counter survive (orderly shutdown) ------------------
systemctl restart swtpm.service tpm2-abrmd.service
try unseal-after sh -c "tpm2_unseal -c $TK_HANDLE -o unsealed.bin && cmp -s secret.bin unsealed.bin && echo same"
try key-after sh -c "openssl pkey ${P[*]} -in key.pem -pubout | head -n 1"
echo data > msg.txt
try sign-after sh -c "openssl pkeyutl ${P[*]} -sign -rawin -digest sha256 -inkey key.pem -in msg.txt -out msg.sig \
  && openssl pkeyutl -verify -rawin -digest sha256 -pubin -inkey key.pub -in msg.txt -sigfile msg.sig"
lockout_after=$(tpm2_getcap properties-variable | awk '/TPM2_PT_LOCKOUT_COUNTER/ {print $2}')
try lockout echo "$((lockout_before)) -> $((lockout_after))"

# --- clean up what only the test needed --------------------------------------------------------------------
tpm2_evictcontrol -Q -C o -c "$TK_HANDLE" >/dev/null 2>&1 || true
systemctl stop tk-partof-probe.service
rm -f /etc/systemd/system/tk-partof-probe.service
systemctl daemon-reload
userdel tk-member
userdel tk-outsider
userdel tk-service
