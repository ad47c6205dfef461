"""The TPM key store against real software TPMs (swtpm): sealing, binding, errors, signing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID
from softtpm import set_lockout

from jukics.keystore import KeyStoreError, open_keystore
from jukics.keystore.tpm import TpmKeyStore

ROOT = Path(__file__).resolve().parents[2]


def provisioned(tcti: str, state: Path, **kw: object) -> TpmKeyStore:
    ks = TpmKeyStore(tcti, state, **kw)  # type: ignore[arg-type]
    ks.provision()
    return ks


def test_provision_creates_keys_once_and_reports_what_exists(swtpm, tmp_path):
    state = tmp_path / "ks"
    ks = TpmKeyStore(swtpm.tcti, state)
    first = ks.provision()
    assert first.created == ["srk", "sealed-secret", "checkpoint-key"] and first.changed
    blobs = {p.name: p.read_bytes() for p in state.iterdir()}
    again = TpmKeyStore(swtpm.tcti, state).provision()
    assert not again.changed and again.present == ["srk", "sealed-secret", "checkpoint-key"]
    assert {p.name: p.read_bytes() for p in state.iterdir()} == blobs  # nothing rewritten
    assert (state / "secret.sealed").stat().st_mode & 0o007 == 0
    assert b"BEGIN TSS2 PRIVATE KEY" in blobs["checkpoint.tss2.pem"]


def test_the_sealed_file_does_not_hold_the_secret(swtpm, tmp_path):
    ks = provisioned(swtpm.tcti, tmp_path / "ks")
    secret = ks._secret()
    assert len(secret) == 32
    for path in (tmp_path / "ks").iterdir():
        assert secret not in path.read_bytes()
        assert secret.hex().encode() not in path.read_bytes()


def test_same_keys_from_every_process_and_distinct_subkeys(swtpm, tmp_path):
    state = tmp_path / "ks"
    ks = provisioned(swtpm.tcti, state)
    other = TpmKeyStore(swtpm.tcti, state)  # a second worker: unseals on its own
    assert other.data_key() == ks.data_key()
    assert len({ks.data_key(), ks.hmac_key(), ks.audit_hmac_key()}) == 3


def test_a_sealed_blob_does_not_unseal_on_another_tpm(swtpm_factory, tmp_path):
    tpm_a, tpm_b = swtpm_factory(), swtpm_factory()
    state = tmp_path / "ks"
    provisioned(tpm_a.tcti, state).data_key()
    copied = tmp_path / "copied"
    shutil.copytree(state, copied)  # the disk, copied to another machine with its own TPM
    with pytest.raises(KeyStoreError) as unprovisioned:
        TpmKeyStore(tpm_b.tcti, copied).data_key()
    assert unprovisioned.value.code == "E_KEYSTORE_NOT_PROVISIONED"  # no SRK there yet
    stranger = TpmKeyStore(tpm_b.tcti, copied)
    with pytest.raises(KeyStoreError) as foreign:
        stranger.provision()  # makes B's SRK, then refuses to overwrite a blob it cannot open
    assert foreign.value.code == "E_KEYSTORE_FOREIGN_BLOB"
    assert (copied / "secret.sealed").read_bytes() == (state / "secret.sealed").read_bytes()
    with pytest.raises(KeyStoreError) as unseal:
        TpmKeyStore(tpm_b.tcti, copied).data_key()
    assert unseal.value.code == "E_KEYSTORE_FOREIGN_BLOB"
    assert "another device" in unseal.value.message
    with pytest.raises(KeyStoreError) as sign:
        TpmKeyStore(tpm_b.tcti, copied).sign_checkpoint(b"\0" * 32)
    assert sign.value.code == "E_KEYSTORE_FOREIGN_BLOB"


def _extend_pcr(tcti: str, index: int) -> None:
    subprocess.run(["tpm2_pcrextend", "-T", tcti, f"{index}:sha256={'42' * 32}"], check=True, capture_output=True)


def test_pcr_policy_binds_the_secret_to_the_measured_state(swtpm, tmp_path):
    state = tmp_path / "ks"
    ks = provisioned(swtpm.tcti, state, pcr_policy="sha256:7")
    key = ks.data_key()
    assert json.loads((state / "secret.sealed").read_text())["pcr_policy"] == "sha256:7"
    assert TpmKeyStore(swtpm.tcti, state, pcr_policy="sha256:7").data_key() == key
    _extend_pcr(swtpm.tcti, 7)  # e.g. another boot loader or kernel measured
    with pytest.raises(KeyStoreError) as exc:
        TpmKeyStore(swtpm.tcti, state, pcr_policy="sha256:7").data_key()
    assert exc.value.code == "E_KEYSTORE_POLICY"


def test_a_pcr_other_than_the_policy_does_not_matter(swtpm, tmp_path):
    state = tmp_path / "ks"
    key = provisioned(swtpm.tcti, state, pcr_policy="sha256:7").data_key()
    _extend_pcr(swtpm.tcti, 8)
    assert TpmKeyStore(swtpm.tcti, state, pcr_policy="sha256:7").data_key() == key


def test_lockout_is_reported_not_worked_around(swtpm, tmp_path):
    state = tmp_path / "ks"
    provisioned(swtpm.tcti, state)
    set_lockout(swtpm.tcti, 0)
    ks = TpmKeyStore(swtpm.tcti, state)
    with pytest.raises(KeyStoreError) as exc:
        ks.data_key()
    assert exc.value.code == "E_KEYSTORE_LOCKED_OUT"
    assert "lockout" in exc.value.message
    status = ks.status()
    assert status["in_lockout"] is True and not status["usable"]
    set_lockout(swtpm.tcti, 3)
    assert TpmKeyStore(swtpm.tcti, state).data_key()


def test_no_tpm_is_a_clear_error(tmp_path):
    ks = TpmKeyStore(f"swtpm:path={tmp_path}/nothing-here", tmp_path / "ks")
    with pytest.raises(KeyStoreError) as exc:
        ks.provision()
    assert exc.value.code == "E_KEYSTORE_UNAVAILABLE"
    assert "cannot open the TPM" in exc.value.message
    status = ks.status()
    assert status["tpm_available"] is False and status["usable"] is False


def test_unprovisioned_corrupt_and_foreign_parent(swtpm, tmp_path):
    ks = TpmKeyStore(swtpm.tcti, tmp_path / "ks")
    with pytest.raises(KeyStoreError) as missing:
        ks.data_key()
    assert missing.value.code == "E_KEYSTORE_NOT_PROVISIONED"
    ks.provision()
    (tmp_path / "ks" / "secret.sealed").write_text('{"format": "something else"}')
    with pytest.raises(KeyStoreError) as corrupt:
        TpmKeyStore(swtpm.tcti, tmp_path / "ks").data_key()
    assert corrupt.value.code == "E_KEYSTORE_CORRUPT"


def test_a_stranger_at_the_srk_handle_is_not_evicted(swtpm, tmp_path):
    ks = TpmKeyStore(swtpm.tcti, tmp_path / "ks", srk_handle=0x81000005)
    # Someone else's object (a P-384 storage key) sits at the handle we were told to use.
    subprocess.run(["tpm2_createprimary", "-T", swtpm.tcti, "-C", "o", "-G", "ecc384",
                    "-c", str(tmp_path / "p.ctx")], check=True, capture_output=True)
    subprocess.run(["tpm2_evictcontrol", "-T", swtpm.tcti, "-C", "o", "-c", str(tmp_path / "p.ctx"), "0x81000005"],
                   check=True, capture_output=True)
    # tpm2-tools leave their transient objects loaded, and a bare swtpm has three slots.
    subprocess.run(["tpm2_flushcontext", "-T", swtpm.tcti, "-t"], check=True, capture_output=True)
    with pytest.raises(KeyStoreError) as exc:
        ks.provision()
    assert exc.value.code == "E_KEYSTORE_SRK_MISMATCH"
    assert not (tmp_path / "ks" / "secret.sealed").exists()


def test_tls_keys_live_in_the_tpm_and_sign_csrs(swtpm_factory, tmp_path):
    tpm, other = swtpm_factory(), swtpm_factory()
    ks = provisioned(tpm.tcti, tmp_path / "ks")
    key_file = tmp_path / "tls" / "key.pem"
    public = ks.create_tls_key(key_file)
    pem = key_file.read_bytes()
    assert pem.startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=None)  # not a software key in any form
    with pytest.raises(KeyStoreError) as exists:
        ks.create_tls_key(key_file)
    assert exists.value.code == "E_KEYSTORE_EXISTS"
    signer = ks.tls_signer(key_file)
    with pytest.raises(KeyStoreError) as export:
        signer.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    assert export.value.code == "E_KEYSTORE_NON_EXPORTABLE"
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cs1.lab.jukics.example")]))
           .sign(signer, hashes.SHA256()))
    assert csr.is_signature_valid
    assert csr.public_key().public_numbers() == public.public_numbers()
    signature = signer.sign(b"hello", ec.ECDSA(hashes.SHA256()))
    public.verify(signature, b"hello", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(KeyStoreError) as foreign:
        provisioned(other.tcti, tmp_path / "other").tls_signer(key_file).sign(b"x", ec.ECDSA(hashes.SHA256()))
    assert foreign.value.code == "E_KEYSTORE_FOREIGN_BLOB"


def test_checkpoint_signatures_verify_with_the_published_key(swtpm, tmp_path):
    ks = provisioned(swtpm.tcti, tmp_path / "ks")
    digest = b"\x07" * 32
    signature = ks.sign_checkpoint(digest)
    published = serialization.load_pem_public_key((tmp_path / "ks" / "checkpoint.pub.pem").read_bytes())
    assert isinstance(published, ec.EllipticCurvePublicKey)
    published.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert ks.checkpoint_public_key() == published.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_open_keystore_builds_the_tpm_backend_for_production(swtpm, tmp_path):
    section = {"backend": "tpm", "tcti": swtpm.tcti, "state_dir": str(tmp_path / "ks"), "pcr_policy": ""}
    ks = open_keystore(section, production=True)
    assert isinstance(ks, TpmKeyStore) and ks.is_production_safe
    with pytest.raises(KeyStoreError) as exc:
        open_keystore({"backend": "tpm", "tcti": swtpm.tcti, "pcr_policy": "sha256:99"})
    assert exc.value.code == "E_KEYSTORE_CONFIG"


def test_abrmd_serves_several_processes_at_once(abrmd, tmp_path):
    state = tmp_path / "ks"
    key = provisioned(abrmd.tcti, state).data_key()
    code = (
        "import sys; from jukics.keystore.tpm import TpmKeyStore;"
        f"print(TpmKeyStore({abrmd.tcti!r}, {str(state)!r}).data_key().hex())"
    )
    env = dict(abrmd.env, PYTHONPATH=str(ROOT / "app"))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outs == [key.hex()] * 4
