"""`jukics cert` with the TPM key store: the TLS key is made in the TPM and only a TSS2 blob is on disk."""

from __future__ import annotations

import sys
from pathlib import Path

from cryptography import x509

from jukics.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "certs"))
from test_cert_lifecycle import NAMES, Ca, pem


def test_tpm_key_csr_stage_activate(swtpm, tmp_path):
    config = tmp_path / "jukics.toml"
    config.write_text(f"""
[cs]
municipality_code = "142140"
environment = "production"
[database]
url = "sqlite:///{tmp_path}/jukics.db"
[keystore]
backend = "tpm"
tcti = "{swtpm.tcti}"
state_dir = "{tmp_path}/keystore"
[intake]
listen = "127.0.0.1:9443"
cert_file = "{tmp_path}/tls/intake/current/cert.pem"
key_file = "{tmp_path}/tls/intake/current/key.pem"
client_ca_file = "{tmp_path}/tls/intake/trust.pem"
allowed_clients = ["kizon.lab.jukics.example"]
[tls]
dir = "{tmp_path}/tls"
[tls.identities.intake]
role = "server"
subject_names = ["cs1.lab.jukics.example", "127.0.0.1"]
""")

    def run(*args: str) -> int:
        return main(["--config", str(config), *args])

    assert run("db", "upgrade") == 0
    assert run("keystore", "provision") == 0
    assert run("cert", "csr", "intake") == 0
    key = (tmp_path / "tls/intake/pending/key.pem").read_bytes()
    assert key.startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")
    csr = x509.load_pem_x509_csr((tmp_path / "tls/intake/pending/csr.pem").read_bytes())
    assert csr.is_signature_valid  # signed inside the TPM
    ca = Ca("lab CA")
    (tmp_path / "c.crt").write_bytes(pem(ca.issue(csr.public_key(), names=NAMES)))
    (tmp_path / "ca.crt").write_bytes(pem(ca.cert))
    assert run("cert", "stage", "intake", "--cert", str(tmp_path / "c.crt"), "--chain", str(tmp_path / "ca.crt")) == 0
    assert run("cert", "activate", "intake") == 0
    assert (tmp_path / "tls/intake/current/key.pem").read_bytes() == key
    # A certificate for a software key does not fit the TPM key: refused.
    from cryptography.hazmat.primitives.asymmetric import ec

    assert run("cert", "csr", "intake") == 0
    (tmp_path / "other.crt").write_bytes(pem(ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key())))
    assert run("cert", "stage", "intake", "--cert", str(tmp_path / "other.crt")) == 1
    for path in tmp_path.rglob("*.pem"):
        assert b"BEGIN PRIVATE KEY" not in path.read_bytes() and b"BEGIN EC PRIVATE KEY" not in path.read_bytes()
