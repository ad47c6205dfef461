"""Runs ON an appliance (Debian 13, the installed venv, a working TPM): TLS cost of TPM-resident keys.

    /opt/jukics/venv/bin/python tls_tpm_appliance.py [--quick] [--requests N] [--tcti TCTI]

Starts two copies of the real service (``jukics serve``: gunicorn, 2 sync workers, mutual TLS,
the TPM key store) on loopback that differ only in the server's TLS key: one a TPM-resident key
(TSS2 file, used through the tpm2 OpenSSL provider), one a software key. Then, in alternating blocks
so both see the same machine load, N requests to each, every request on a NEW TLS connection
(full handshake: the TPM signs once per handshake) with a software client certificate. Prints
p50/p90/p99 per setup and the ratio TPM / software of the medians (target <= 2.0 on swtpm).

Then the certificate swap: a steady load of ``--rate`` (200) requests/s, each on a new connection,
against the TPM-keyed service while `jukics cert csr|stage|activate` puts a new TPM key and
certificate in place; prints failed requests (target 0) and the time from `activate` returning to
the first response with the new certificate (target < 1 s). One JSON line at the end. Everything
lives in a temporary folder that is removed; processes are stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VENV_BIN = Path(sys.executable).parent


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class ThrowawayCa:
    """A CA for this run only (never written outside the temporary folder)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name("bench CA")).issuer_name(_name("bench CA"))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, public: ec.EllipticCurvePublicKey, san: str, eku: x509.ObjectIdentifier) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder().subject_name(_name(san)).issuer_name(self.cert.subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )


def pem(obj: x509.Certificate) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jukics(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "jukics"), "--config", str(config), *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def write_config(work: Path, name: str, tcti: str, port: int, cert: Path, key: Path, ca: Path,
                 tls_dir: Path | None = None) -> Path:
    config = work / f"{name}.toml"
    tls = "" if tls_dir is None else f"""
[tls]
dir = "{tls_dir}"
[tls.identities.intake]
role = "server"
subject_names = ["cs.bench.jukics.example"]
peer_names = ["client.bench.jukics.example"]
"""
    config.write_text(f"""
[cs]
municipality_code = "142140"
environment = "lab"
[database]
url = "sqlite:///{work}/{name}.db"
[keystore]
backend = "tpm"
tcti = "{tcti}"
state_dir = "{work}/{name}-keystore"
[intake]
listen = "127.0.0.1:{port}"
cert_file = "{cert}"
key_file = "{key}"
client_ca_file = "{ca}"
allowed_clients = ["client.bench.jukics.example"]
[server]
workers = 2
{tls}""", encoding="utf-8")
    return config


def new_tpm_certificate(config: Path, ca: ThrowawayCa, work: Path, env: dict[str, str]) -> int:
    """The operator's renewal: new key in the TPM, CSR, certificate from the CA, stage. Returns the serial."""
    tls = work / "tls" / "intake"
    for args in (("cert", "csr", "intake", "--force"),):
        done = jukics(config, *args, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"jukics {' '.join(args)}: {done.stderr.strip()}")
    csr = x509.load_pem_x509_csr((tls / "pending" / "csr.pem").read_bytes())
    cert = ca.issue(csr.public_key(), "cs.bench.jukics.example", ExtendedKeyUsageOID.SERVER_AUTH)
    out = work / f"tpm-{cert.serial_number:x}.crt"
    out.write_bytes(pem(cert))
    done = jukics(config, "cert", "stage", "intake", "--cert", str(out), "--chain", str(work / "ca.pem"), env=env)
    if done.returncode != 0:
        raise RuntimeError(f"jukics cert stage: {done.stderr.strip()}")
    return cert.serial_number


def request_once(ctx: ssl.SSLContext, port: int) -> float:
    """One GET /v1/health on a new TLS connection; seconds from connect to the whole response."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="cs.bench.jukics.example") as tls:
        tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: cs\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {data[:80]!r}")
    return time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def served_serial(ctx: ssl.SSLContext, port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="cs.bench.jukics.example") as tls:
        # The peer's certificate now: once the server has closed, ssl no longer gives it.
        serial = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"").serial_number
        tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: cs\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {data[:80]!r}")
        return serial


def swap_under_load(config: Path, port: int, ctx: ssl.SSLContext, ca: ThrowawayCa, work: Path,
                    env: dict[str, str], rate: int, seconds: float) -> dict[str, object]:
    """``rate`` new-connection requests/s for ``seconds``; a new TPM certificate is activated at 1/3."""
    import threading

    threads_n = 8
    results: list[tuple[float, int | None]] = []
    lock = threading.Lock()
    stop = threading.Event()
    start = time.monotonic()

    def worker(offset: float) -> None:
        interval = threads_n / rate
        t_next = start + offset
        while not stop.is_set():
            time.sleep(max(0.0, t_next - time.monotonic()))
            try:
                serial: int | None = served_serial(ctx, port)
            except (OSError, RuntimeError, ValueError):
                serial = None
            with lock:
                results.append((time.monotonic(), serial))
            t_next += interval

    threads = [threading.Thread(target=worker, args=(i / rate,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    time.sleep(seconds / 3)
    new_serial = new_tpm_certificate(config, ca, work, env)
    t_activate = time.monotonic()
    done = jukics(config, "cert", "activate", "intake", env=env)
    t_done = time.monotonic()
    time.sleep(seconds * 2 / 3)  # the same load goes on after the swap
    stop.set()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    failed = sum(1 for _, s in results if s is None)
    first_new = min((t for t, s in results if s == new_serial), default=None)
    achieved = len(results) / seconds
    to_new = None if first_new is None else max(0.0, first_new - t_done)
    print(f"certificate swap under {rate} requests/s (achieved {achieved:.0f}/s, new connection each, "
          f"{seconds:.0f} s): activate took {(t_done - t_activate) * 1000:.0f} ms (rc {done.returncode}), "
          f"failed requests {failed} of {len(results)}, new certificate served "
          + ("never" if to_new is None else f"{to_new * 1000:.0f} ms after activate returned"))
    return {"rate": rate, "achieved_rps": achieved, "requests": len(results), "failed": failed,
            "activate_ms": (t_done - t_activate) * 1000, "activate_rc": done.returncode,
            "new_cert_after_ms": None if to_new is None else to_new * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600, help="requests per setup (default 600)")
    parser.add_argument("--block", type=int, default=50, help="requests per alternating block (default 50)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 requests per setup")
    parser.add_argument("--tcti", help="TCTI (default: the installed service's keystore.tcti)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) for a look")
    parser.add_argument("--rate", type=int, default=200, help="requests/s during the certificate swap (200)")
    args = parser.parse_args(argv)
    n = 60 if args.quick else args.requests
    tcti = args.tcti or tomllib.loads(Path("/etc/jukics/jukics.toml").read_text())["keystore"]["tcti"]

    work = Path(tempfile.mkdtemp(prefix="jukics-bench-tls-"))
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, TPM2OPENSSL_TCTI=tcti)
    try:
        ca = ThrowawayCa()
        (work / "ca.pem").write_bytes(pem(ca.cert))
        soft = ec.generate_private_key(ec.SECP256R1())
        (work / "soft.key").write_bytes(soft.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
        (work / "soft.crt").write_bytes(pem(ca.issue(soft.public_key(), "cs.bench.jukics.example",
                                                     ExtendedKeyUsageOID.SERVER_AUTH)))
        client = ec.generate_private_key(ec.SECP256R1())
        (work / "client.key").write_bytes(client.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
        (work / "client.crt").write_bytes(pem(ca.issue(client.public_key(), "client.bench.jukics.example",
                                                       ExtendedKeyUsageOID.CLIENT_AUTH)))
        ports = {}
        configs = {}
        current = work / "tls" / "intake" / "current"
        for name in ("tpm", "soft"):
            port = free_port()
            if name == "tpm":  # the TPM key and its certificate come through the certificate lifecycle
                config = write_config(work, name, tcti, port, current / "cert.pem", current / "key.pem",
                                      work / "ca.pem", tls_dir=work / "tls")
            else:
                config = write_config(work, name, tcti, port, work / "soft.crt", work / "soft.key", work / "ca.pem")
            configs[name] = config
            for step in (("db", "upgrade"), ("keystore", "provision")):
                done = jukics(config, *step, env=env)
                if done.returncode not in (0, 3):
                    raise RuntimeError(f"{name}: jukics {' '.join(step)}: {done.stderr.strip()}")
            if name == "tpm":
                new_tpm_certificate(config, ca, work, env)
                if jukics(config, "cert", "activate", "intake", env=env).returncode != 0:
                    raise RuntimeError("jukics cert activate failed")
            log = (work / f"{name}.log").open("wb")
            procs.append(subprocess.Popen([str(VENV_BIN / "jukics"), "--config", str(config), "serve"], env=env,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            ports[name] = port
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cafile=str(work / "ca.pem"))
        ctx.load_cert_chain(str(work / "client.crt"), str(work / "client.key"))
        deadline = time.monotonic() + 60
        for name, port in ports.items():
            while True:
                try:
                    request_once(ctx, port)
                    break
                except (OSError, RuntimeError):
                    if time.monotonic() > deadline:
                        tail = (work / f"{name}.log").read_text()[-2000:]
                        raise RuntimeError(f"{name} service did not come up: {tail}") from None
                    time.sleep(0.3)
            for _ in range(20):  # warm both workers (each loads its context once)
                request_once(ctx, port)
        times: dict[str, list[float]] = {"tpm": [], "soft": []}
        errors = {"tpm": 0, "soft": 0}
        load_before = os.getloadavg()
        while min(len(v) for v in times.values()) < n:
            for name in ("tpm", "soft"):
                for _ in range(min(args.block, n - len(times[name]))):
                    try:
                        times[name].append(request_once(ctx, ports[name]))
                    except (OSError, RuntimeError):
                        errors[name] += 1
        load_after = os.getloadavg()
        out: dict[str, object] = {"requests_per_setup": n, "tcti": tcti, "load": [load_before[0], load_after[0]],
                                  "errors": errors}
        print(f"TLS with a TPM-resident server key vs a software key: {n} requests each, new connection each, "
              f"2 sync workers, TCTI {tcti}; load {load_before[0]:.2f} -> {load_after[0]:.2f}")
        for name, label in (("soft", "software key"), ("tpm", "TPM key (tpm2 provider)")):
            v = times[name]
            row = {"p50_ms": statistics.median(v) * 1000, "p90_ms": pct(v, 90) * 1000, "p99_ms": pct(v, 99) * 1000}
            out[name] = row
            print(f"  {label:26s} p50 {row['p50_ms']:6.2f} ms  p90 {row['p90_ms']:6.2f} ms  "
                  f"p99 {row['p99_ms']:6.2f} ms  errors {errors[name]}")
        ratio = statistics.median(times["tpm"]) / statistics.median(times["soft"])
        out["ratio_p50_tpm_over_software"] = ratio
        print(f"  ratio TPM / software (p50): {ratio:.2f}  (target <= 2.0 on swtpm)")
        out["swap"] = swap_under_load(configs["tpm"], ports["tpm"], ctx, ca, work, env, args.rate,
                                      3.0 if args.quick else 8.0)
        print(json.dumps(out))
        swap = out["swap"]
        ok = (not any(errors.values()) and not swap["failed"] and swap["requests"]
              and swap["new_cert_after_ms"] is not None)
        return 0 if ok else 1
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
        if args.keep:
            print(f"kept {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())
