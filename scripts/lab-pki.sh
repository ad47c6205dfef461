#!/usr/bin/env bash
# Throwaway lab PKI for the jukics lab, molecule scenarios and tests. NEVER for a real site, never committed.
#
#   scripts/lab-pki.sh OUTDIR [CS_NAME...]
#
# Creates, in OUTDIR (EC P-256, 30 days):
#   ca.crt / ca.key               lab CA ("jukics lab CA"): signs the CS server cert and the 既存住基 client cert
#   cs.crt / cs.key               the CS intake server cert (serverAuth), SAN = DNS:localhost, IP:127.0.0.1 and each
#                                 CS_NAME (a name that parses as an IP address becomes IP:, anything else DNS:)
#   kizon.crt / kizon.key         the 既存住基 client cert (clientAuth), SAN = DNS:kizon.lab.jukics.example
#   wrongname.crt / wrongname.key a client cert from the lab CA with an identity that is not on the allowlist
#                                 (SAN = DNS:wrongname.lab.jukics.example): the TLS handshake succeeds, the app refuses
#   stranger-ca.crt / .key        a second, unrelated CA
#   stranger.crt / stranger.key   a client cert from the stranger CA, claiming the 既存住基 name: TLS must refuse it
#   terminal.crt / terminal.key   a counter terminal (統合端末) client cert (clientAuth), SAN = DNS:term-01.lab.jukics.example
#   pref1.crt / pref1.key         the simulated 都道府県サーバ (serverAuth + clientAuth: it also calls the national),
#                                 SAN = DNS:pref1
#   nat1.crt / nat1.key           the simulated 全国サーバ (serverAuth + clientAuth), SAN = DNS:nat1
#   pref1-wrongca.crt / .key      pref1's name from the stranger CA: the sim's wrong-certificate fault
#   escrow.key / escrow.pub       the backup escrow age identity (AGE-SECRET-KEY-1...) and its public key (age1...):
#                                 the lab's stand-in for the key a real site keeps offline (docs/backup.md)
#
# Idempotent: existing files are kept unless missing, expiring within a day, or (cs.crt) issued for other names.
# Private keys are 0600, certificates 0644, the directory 0700.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 OUTDIR [CS_NAME...]" >&2
  exit 2
fi
out=$1
shift
days=30
kizon_name=kizon.lab.jukics.example

repo=$(cd "$(dirname "$0")/.." && pwd) # before the cd below: the escrow key needs the repo's venv
umask 077
mkdir -p "$out"
chmod 0700 "$out"
cd "$out"

# A file is fresh when it exists and stays valid for at least one more day.
fresh() { [ -s "$1" ] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1; }

new_ca() { # name subject
  if fresh "$1.crt" && [ -s "$1.key" ]; then return 1; fi
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc -keyout "$1.key" -out "$1.crt" \
    -subj "$2" -days "$days" -sha256 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  echo "created $out/$1.crt"
}

new_leaf() { # name ca subject san eku
  local name=$1 ca=$2 subj=$3 san=$4 eku=$5
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key"
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n' \
    "$san" "$eku" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days "$days" -sha256 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
  printf '%s\n' "$san" > "$name.san"
  echo "created $out/$name.crt ($san)"
}

# Reissue a leaf when it is missing, expiring, for other names, or no longer signed by its CA (CA recreated).
leaf() { # name ca subject san eku
  if fresh "$1.crt" && [ -s "$1.key" ] && [ "$(cat "$1.san" 2>/dev/null)" = "$4" ] \
    && openssl verify -CAfile "$2.crt" "$1.crt" >/dev/null 2>&1; then
    return 0
  fi
  new_leaf "$@"
}

san="DNS:localhost,IP:127.0.0.1"
for n in "$@"; do
  if python3 -c 'import ipaddress, sys; ipaddress.ip_address(sys.argv[1])' "$n" 2>/dev/null; then
    san="$san,IP:$n"
  else
    san="$san,DNS:$n"
  fi
done

new_ca ca "/O=jukics lab/CN=jukics lab CA" || true
new_ca stranger-ca "/O=stranger/CN=stranger CA" || true
leaf cs ca "/O=jukics lab/CN=${1:-localhost}" "$san" serverAuth
leaf kizon ca "/O=jukics lab/CN=$kizon_name" "DNS:$kizon_name" clientAuth
leaf wrongname ca "/O=jukics lab/CN=wrongname.lab.jukics.example" "DNS:wrongname.lab.jukics.example" clientAuth
leaf stranger stranger-ca "/O=stranger/CN=$kizon_name" "DNS:$kizon_name" clientAuth
leaf terminal ca "/O=jukics lab/CN=term-01.lab.jukics.example" "DNS:term-01.lab.jukics.example" clientAuth
leaf pref1 ca "/O=jukics lab/CN=pref1" "DNS:pref1" serverAuth,clientAuth
leaf nat1 ca "/O=jukics lab/CN=nat1" "DNS:nat1" serverAuth,clientAuth
leaf pref1-wrongca stranger-ca "/O=stranger/CN=pref1" "DNS:pref1" serverAuth,clientAuth
# The backup escrow key (age X25519), made with pyrage from the repo's venv (or any python3 that has it).
if [ ! -s escrow.key ] || [ ! -s escrow.pub ]; then
  py=""
  for cand in "$repo/.venv/bin/python" python3; do
    if "$cand" -c 'import pyrage' 2>/dev/null; then py=$cand; break; fi
  done
  if [ -z "$py" ]; then
    echo "lab-pki: no python with pyrage for the escrow key (run make setup)" >&2
    exit 1
  fi
  "$py" - <<'AGE'
import os
import pyrage
ident = pyrage.x25519.Identity.generate()
fd = os.open("escrow.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, f"# jukics LAB backup escrow identity: throwaway, never for a real site\n{ident}\n".encode())
os.close(fd)
with open("escrow.pub", "w") as f:
    f.write(f"{ident.to_public()}\n")
AGE
  echo "created $out/escrow.pub"
fi
chmod 0600 ./*.key
chmod 0644 ./*.crt ./escrow.pub
