"""scripts/lab-ca-sign.sh: the lab CA signs an appliance's CSR (SANs from the CSR, EKU given), idempotently."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[3]


def _sign(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts/lab-ca-sign.sh"), *args], capture_output=True, text=True,
                          check=False)


def test_signs_the_csr_keeping_its_names_and_does_nothing_the_second_time(tmp_path):
    subprocess.run(["bash", str(ROOT / "scripts/lab-pki.sh"), str(tmp_path / "pki")], check=True, capture_output=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("cs1.lab.jukics.example")]
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cs1.lab.jukics.example")]))
           .add_extension(x509.SubjectAlternativeName(names), critical=False).sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    (tmp_path / "r.csr").write_bytes(csr.public_bytes(Encoding.PEM))
    out = tmp_path / "out" / "cs1.crt"
    first = _sign(str(tmp_path / "pki"), str(tmp_path / "r.csr"), str(out), "serverAuth")
    assert first.returncode == 0 and first.stdout.startswith("signed"), first.stderr
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["cs1.lab.jukics.example"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    again = _sign(str(tmp_path / "pki"), str(tmp_path / "r.csr"), str(out), "serverAuth")
    assert again.returncode == 0 and again.stdout.startswith("unchanged")
    (tmp_path / "bad.csr").write_text("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
    bad = _sign(str(tmp_path / "pki"), str(tmp_path / "bad.csr"), str(out), "serverAuth")
    assert bad.returncode == 2 and "not a valid" in bad.stderr
    assert _sign(str(tmp_path / "pki"), str(tmp_path / "r.csr"), str(out), "codeSigning").returncode == 2
