#!/usr/bin/env bash
# The lab's certificate authority at work: sign a CSR that an appliance made (its key is in the TPM and
# never leaves it) with the throwaway lab CA of scripts/lab-pki.sh. NEVER for a real site: there the CSR
# goes to the issuing CA and the certificate comes back out of band.
#
#   scripts/lab-ca-sign.sh PKIDIR CSR CERT serverAuth|clientAuth [DAYS]
#
# The certificate gets the SANs the CSR asks for (copied from its extension request), the given EKU,
# digitalSignature, and the Subject/Authority Key Identifiers. Idempotent: when CERT already certifies
# the CSR's key, is signed by the current CA and stays valid for more than a day, nothing happens.
# Prints "unchanged CERT" or "signed CERT (serial)"; exit 2 on bad input.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 PKIDIR CSR CERT serverAuth|clientAuth [DAYS]" >&2
  exit 2
fi
pki=$1 csr=$2 cert=$3 eku=$4 days=${5:-30}
case $eku in serverAuth|clientAuth) ;; *) echo "lab-ca-sign: EKU must be serverAuth or clientAuth" >&2; exit 2 ;; esac
[ -s "$pki/ca.crt" ] && [ -s "$pki/ca.key" ] || { echo "lab-ca-sign: no lab CA in $pki (run scripts/lab-pki.sh)" >&2; exit 2; }
openssl req -in "$csr" -noout -verify >/dev/null 2>&1 || { echo "lab-ca-sign: $csr is not a valid, self-signed CSR" >&2; exit 2; }

pub() { openssl "$1" -in "$2" -noout -pubkey 2>/dev/null | openssl pkey -pubin -outform DER 2>/dev/null | sha256sum; }
if [ -s "$cert" ] && [ "$(pub x509 "$cert")" = "$(pub req "$csr")" ] \
  && openssl verify -CAfile "$pki/ca.crt" "$cert" >/dev/null 2>&1 \
  && openssl x509 -in "$cert" -noout -checkend 86400 >/dev/null 2>&1; then
  echo "unchanged $cert"
  exit 0
fi

umask 022
mkdir -p "$(dirname "$cert")"
ext=$(mktemp)
trap 'rm -f "$ext" "$cert.tmp"' EXIT
printf 'extendedKeyUsage=%s\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' \
  "$eku" > "$ext"
# -copy_extensions copy: the SANs come from the CSR (the appliance knows its own names).
openssl x509 -req -in "$csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days "$days" -sha256 \
  -copy_extensions copy -extfile "$ext" -out "$cert.tmp" 2>/dev/null
mv "$cert.tmp" "$cert"
echo "signed $cert ($(openssl x509 -in "$cert" -noout -serial))"
