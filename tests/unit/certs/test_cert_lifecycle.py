"""`jukics cert ...` end to end on the dev key store: CSR, stage, verify, activate, rollback, CA bundle.

A throwaway PKI is made here with `cryptography` (two CAs, good and bad leaves); nothing is committed.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jukics.cli.main import main

NOW = dt.datetime.now(dt.UTC)
NAMES = ["cs1.lab.jukics.example", "127.0.0.1"]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Ca:
    def __init__(self, cn: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, public, names=NAMES, eku=ExtendedKeyUsageOID.SERVER_AUTH, start=None, days=30):
        start = start or NOW - dt.timedelta(hours=1)
        sans = [x509.IPAddress(__import__("ipaddress").ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
                for n in names]
        return (
            x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(self.cert.subject).public_key(public)
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )


def pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "jukics.toml"
    config.write_text(f"""
[cs]
municipality_code = "142140"
environment = "lab"
[database]
url = "sqlite:///{tmp_path}/jukics.db"
[keystore]
backend = "dev"
dev_secret_file = "{tmp_path}/dev-secret"
[intake]
listen = "127.0.0.1:9443"
cert_file = "{tmp_path}/tls/intake/current/cert.pem"
key_file = "{tmp_path}/tls/intake/current/key.pem"
client_ca_file = "{tmp_path}/tls/intake/trust.pem"
allowed_clients = ["kizon.lab.jukics.example"]
[tls]
dir = "{tmp_path}/tls"
metrics_file = "{tmp_path}/metrics/jukics_certs.prom"
[tls.identities.intake]
role = "server"
subject_names = {json.dumps(NAMES)}
peer_names = ["kizon.lab.jukics.example"]
""")
    assert main(["--config", str(config), "db", "upgrade"]) == 0

    def run(*args: str) -> int:
        return main(["--config", str(config), *args])

    return run, tmp_path


def _csr_public(tmp_path: Path):
    return x509.load_pem_x509_csr((tmp_path / "tls/intake/pending/csr.pem").read_bytes()).public_key()


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_csr_stage_activate_rollback(env, capsys):
    run, tmp = env
    ca = Ca("lab CA")
    assert run("cert", "csr", "intake") == 0
    assert run("cert", "csr", "intake") == 1  # a pending key exists: never replaced silently
    csr = x509.load_pem_x509_csr((tmp / "tls/intake/pending/csr.pem").read_bytes())
    assert csr.is_signature_valid
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["cs1.lab.jukics.example"]
    first = _write(tmp, "first.crt", pem(ca.issue(csr.public_key())))
    chain = _write(tmp, "ca.crt", pem(ca.cert))
    assert run("cert", "stage", "intake", "--cert", first, "--chain", chain) == 0
    assert run("cert", "stage", "intake", "--cert", first, "--chain", chain) == 3  # same one: nothing to do
    assert run("cert", "verify", "intake", "--staged", "--live") == 0
    assert run("cert", "activate", "intake") == 0
    assert run("cert", "activate", "intake") == 3
    current = (tmp / "tls/intake/current").resolve()
    assert (tmp / "tls/intake/current/cert.pem").read_bytes() == Path(first).read_bytes()
    assert run("cert", "rollback", "intake") == 3  # no previous yet

    assert run("cert", "csr", "intake") == 0
    second = _write(tmp, "second.crt", pem(ca.issue(_csr_public(tmp))))
    assert run("cert", "stage", "intake", "--cert", second) == 0  # the chain from ca.pem kept at first stage
    assert run("cert", "activate", "intake") == 0
    assert (tmp / "tls/intake/previous").resolve() == current
    assert (tmp / "tls/intake/current/cert.pem").read_bytes() == Path(second).read_bytes()
    assert run("cert", "verify", "intake", "--current", "--live") == 0
    assert run("cert", "rollback", "intake") == 0
    assert (tmp / "tls/intake/current").resolve() == current

    capsys.readouterr()
    assert run("cert", "status", "intake", "--json") == 0
    status = json.loads(capsys.readouterr().out)["identities"][0]
    assert status["current"]["sha256"] == x509.load_pem_x509_certificate(Path(first).read_bytes()).fingerprint(
        hashes.SHA256()).hex()
    assert status["last_swap"] == "rollback" and status["last_swap_ok"] is True
    metrics = (tmp / "metrics/jukics_certs.prom").read_text()
    assert 'jukics_cert_not_after_timestamp_seconds{identity="intake"}' in metrics
    assert 'jukics_cert_swap_last_result{identity="intake"} 1.0' in metrics
    # the metrics listener reads the same files at scrape time: the same series, the same values
    capsys.readouterr()
    assert run("metrics", "show") == 0
    served = capsys.readouterr().out
    for line in metrics.splitlines():
        if line.startswith("jukics_cert_"):
            assert line in served, line

    db = sqlite3.connect(tmp / "jukics.db")
    actions = [r[0] for r in db.execute("SELECT action FROM audit_log WHERE action LIKE 'cert.%' ORDER BY seq")]
    assert actions == ["cert.csr", "cert.csr", "cert.stage", "cert.activate", "cert.csr", "cert.stage",
                       "cert.activate", "cert.rollback"]
    assert db.execute("SELECT outcome, code FROM audit_log WHERE action = 'cert.csr' ORDER BY seq").fetchall()[1] \
        == ("refused", "E_CERT_PENDING")
    db.close()
    assert run("audit", "verify") == 0


@pytest.mark.parametrize("case", ["other-key", "expired", "not-yet-valid", "wrong-san", "client-eku", "other-ca",
                                  "truncated"])
def test_bad_certificates_are_refused_and_nothing_changes(env, capsys, case):
    run, tmp = env
    ca, stranger = Ca("lab CA"), Ca("stranger CA")
    chain = _write(tmp, "ca.crt", pem(ca.cert))
    assert run("cert", "csr", "intake") == 0
    good = _write(tmp, "good.crt", pem(ca.issue(_csr_public(tmp))))
    assert run("cert", "stage", "intake", "--cert", good, "--chain", chain) == 0
    assert run("cert", "activate", "intake") == 0
    assert run("cert", "csr", "intake") == 0
    public = _csr_public(tmp)
    bad = {
        "other-key": lambda: pem(ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key())),
        "expired": lambda: pem(ca.issue(public, start=NOW - dt.timedelta(days=40))),
        "not-yet-valid": lambda: pem(ca.issue(public, start=NOW + dt.timedelta(days=2))),
        "wrong-san": lambda: pem(ca.issue(public, names=["other.lab.jukics.example"])),
        "client-eku": lambda: pem(ca.issue(public, eku=ExtendedKeyUsageOID.CLIENT_AUTH)),
        "other-ca": lambda: pem(stranger.issue(public)),
        "truncated": lambda: pem(ca.issue(public))[:200],
    }[case]()
    before = {p: p.read_bytes() for p in (tmp / "tls/intake").rglob("*") if p.is_file()}
    links = {n: (tmp / "tls/intake" / n).resolve() for n in ("current",)}
    capsys.readouterr()
    assert run("cert", "stage", "intake", "--cert", _write(tmp, "bad.crt", bad), "--chain", chain) == 1
    message = capsys.readouterr().err
    expected = {"other-key": "does not match the key", "expired": "expired", "not-yet-valid": "not yet valid",
                "wrong-san": "SANs lack", "client-eku": "EKU lacks", "other-ca": "chain does not verify",
                "truncated": "not a complete PEM"}[case]
    assert expected in message
    after = {p: p.read_bytes() for p in (tmp / "tls/intake").rglob("*") if p.is_file()}
    assert after == before  # pending key kept, nothing staged, current untouched
    assert {n: (tmp / "tls/intake" / n).resolve() for n in ("current",)} == links
    assert not (tmp / "tls/intake/staged").exists()


def test_ca_bundle_rotation_in_three_steps(env, capsys):
    run, tmp = env
    old, new = Ca("old CA"), Ca("new CA")
    assert run("cert", "ca", "add", "intake", _write(tmp, "old.crt", pem(old.cert))) == 0
    assert run("cert", "ca", "add", "intake", _write(tmp, "old.crt", pem(old.cert))) == 3
    # 1. add the new CA beside the old one
    assert run("cert", "ca", "add", "intake", _write(tmp, "new.crt", pem(new.cert))) == 0
    assert len(x509.load_pem_x509_certificates((tmp / "tls/intake/trust.pem").read_bytes())) == 2
    # 2. switch the leaf to one from the new CA
    assert run("cert", "csr", "intake") == 0
    leaf = _write(tmp, "leaf.crt", pem(new.issue(_csr_public(tmp))))
    assert run("cert", "stage", "intake", "--cert", leaf, "--chain", _write(tmp, "new.crt", pem(new.cert))) == 0
    assert run("cert", "activate", "intake") == 0
    # 3. remove the old CA
    old_fp = old.cert.fingerprint(hashes.SHA256()).hex()
    assert run("cert", "ca", "remove", "intake", old_fp) == 0
    assert run("cert", "ca", "remove", "intake", old_fp) == 3
    new_fp = new.cert.fingerprint(hashes.SHA256()).hex()
    assert run("cert", "ca", "remove", "intake", new_fp) == 1  # never the last one
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    assert run("cert", "ca", "add", "intake", _write(tmp, "leaf-only.crt", pem(new.issue(leaf_key.public_key())))) == 1
    db = sqlite3.connect(tmp / "jukics.db")
    actions = [r[0] for r in db.execute("SELECT action FROM audit_log WHERE action LIKE 'cert.ca.%' ORDER BY seq")]
    assert actions.count("cert.ca.add") == 3 and actions.count("cert.ca.remove") == 2
    db.close()


def test_unknown_identity_is_a_usage_error(env, capsys):
    run, _ = env
    assert run("cert", "csr", "nosuch") == 2
    assert "no TLS identity 'nosuch'" in capsys.readouterr().err


def test_config_check_before_the_certificates_exist(env, capsys):
    # The deploy writes the config before `cert csr` and the CA have produced the files it names.
    run, _ = env
    assert run("config", "check") == 2
    assert "intake.cert_file" in capsys.readouterr().err
    assert run("config", "check", "--no-files") == 0
    assert "values only" in capsys.readouterr().out


def _peer_server(tmp: Path, ca: Ca, client_ca: Ca, names: list[str]):
    """A TLS 1.3 peer on loopback that requires a client certificate from ``client_ca``; records the client's CN."""
    import socket
    import ssl
    import threading

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "peer.crt").write_bytes(pem(ca.issue(key.public_key(), names=names)))
    (tmp / "peer.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    (tmp / "peer-clients-ca.crt").write_bytes(pem(client_ca.cert))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(tmp / "peer.crt", tmp / "peer.key")
    ctx.load_verify_locations(tmp / "peer-clients-ca.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    seen: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
                    seen.append(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
            except (OSError, ssl.SSLError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return lsock, seen


@pytest.mark.parametrize("case", ["ok", "peer-name", "peer-does-not-trust-us"])
def test_client_identity_live_handshake_with_its_peer(tmp_path, capsys, case):
    # The outbound side (CS → 都道府県サーバ): our client key from the key store, the peer trusted through
    # the identity's trust bundle only, and the peer's SAN pinned by peer_names.
    our_ca, peer_ca, other_ca = Ca("lab CA"), Ca("prefecture CA"), Ca("other CA")
    peer_names = ["pref.lab.jukics.example"] if case != "peer-name" else ["someone-else.example"]
    lsock, seen = _peer_server(tmp_path, peer_ca, other_ca if case == "peer-does-not-trust-us" else our_ca,
                               ["pref.lab.jukics.example"])
    port = lsock.getsockname()[1]
    config = tmp_path / "jukics.toml"
    config.write_text(f"""
[cs]
municipality_code = "142140"
environment = "lab"
[database]
url = "sqlite:///{tmp_path}/jukics.db"
[keystore]
backend = "dev"
dev_secret_file = "{tmp_path}/dev-secret"
[intake]
listen = "127.0.0.1:9443"
cert_file = "{tmp_path}/tls/intake/current/cert.pem"
key_file = "{tmp_path}/tls/intake/current/key.pem"
client_ca_file = "{tmp_path}/tls/intake/trust.pem"
allowed_clients = ["kizon.lab.jukics.example"]
[tls]
dir = "{tmp_path}/tls"
[tls.identities.prefecture]
role = "client"
subject_names = ["cs-142140.lab.jukics.example"]
peer_names = {json.dumps(peer_names)}
peer_endpoint = "127.0.0.1:{port}"
""")

    def run(*args: str) -> int:
        return main(["--config", str(config), *args])

    try:
        assert run("db", "upgrade") == 0
        assert run("cert", "ca", "add", "prefecture", _write(tmp_path, "pca.crt", pem(peer_ca.cert))) == 0
        assert run("cert", "csr", "prefecture") == 0
        csr = x509.load_pem_x509_csr((tmp_path / "tls/prefecture/pending/csr.pem").read_bytes())
        ours = _write(tmp_path, "ours.crt", pem(our_ca.issue(csr.public_key(), names=["cs-142140.lab.jukics.example"],
                                                             eku=ExtendedKeyUsageOID.CLIENT_AUTH)))
        # A server certificate is the wrong EKU for a client identity.
        wrong = _write(tmp_path, "wrong.crt",
                       pem(our_ca.issue(csr.public_key(), names=["cs-142140.lab.jukics.example"])))
        chain = _write(tmp_path, "oca.crt", pem(our_ca.cert))
        assert run("cert", "stage", "prefecture", "--cert", wrong, "--chain", chain) == 1
        assert run("cert", "stage", "prefecture", "--cert", ours, "--chain", str(tmp_path / "oca.crt")) == 0
        capsys.readouterr()
        rc = run("cert", "verify", "prefecture", "--staged", "--live")
        err = capsys.readouterr().err
        if case == "ok":
            assert rc == 0, err
            assert seen == ["cs-142140.lab.jukics.example"]  # the peer saw our certificate
        elif case == "peer-name":
            assert rc == 1 and "E_CERT_PEER_IDENTITY" in err and "pref.lab.jukics.example" in err
        else:
            # The peer's alert comes after the client's side of the TLS 1.3 handshake: still caught.
            assert rc == 1 and "E_CERT_HANDSHAKE" in err and "live TLS handshake failed" in err
        assert (tmp_path / "tls/prefecture/current").exists() is False  # nothing was activated by verify
    finally:
        lsock.close()
