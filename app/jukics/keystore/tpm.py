"""TPM 2.0 key store: the 耐タンパー装置 of the seeds (SPEC §4 "Keys").

Seed 002: 「耐タンパー装置(通信時の相互認証及びデータの暗号化に必要な情報を保管管理する)を内蔵」.

What lives where (``state_dir``, default ``/var/lib/jukics/keystore``):

- the **storage root key** (SRK): an ECC P-256 primary of the owner hierarchy made from the TCG
  template (the same one TSS2 key files use for parent 0x40000001), persisted at ``srk_handle``
  (0x81000001). Deterministic: re-creating it gives the same key, so provisioning can tell "ours"
  from a stranger's object at that handle.
- ``secret.sealed``: the 32-byte secret that every data key derives from (:mod:`.base`), sealed
  under the SRK (``fixedTPM|fixedParent``, dictionary-attack protected), optionally bound to a PCR
  policy. Only this TPM can unseal it; the file alone is worthless (a copied disk gives nothing).
- ``checkpoint.tss2.pem``: the audit-checkpoint signing key (ECC P-256, sign only), a TPM-resident
  key saved as a ``TSS2 PRIVATE KEY`` blob; ``checkpoint.pub.pem`` its public key, for verifiers
  off the box.
- TLS keys (:class:`TlsKeySource`): made by ``create_tls_key`` as TSS2 blobs wherever the caller
  says (the certificate directories); OpenSSL uses them through the tpm2 provider
  (:mod:`.provider`), we use them through :meth:`TpmKeyStore.tls_signer` for CSRs.

Every TPM conversation opens its own ESAPI context and closes it (flushing what it loaded), so the
store works through the kernel resource manager (``device:/dev/tpmrm0``), tpm2-abrmd
(``tabrmd``) and even a bare swtpm that serves one client at a time. gunicorn workers each unseal
at start (``preload_app = False``): no TPM connection is shared across a fork.

Errors carry stable codes: E_KEYSTORE_UNAVAILABLE (no TPM / TCTI), E_KEYSTORE_NOT_PROVISIONED,
E_KEYSTORE_LOCKED_OUT (dictionary-attack lockout), E_KEYSTORE_FOREIGN_BLOB (the blob was sealed by
another TPM, or the TPM was cleared), E_KEYSTORE_POLICY (PCR values differ from the sealed policy),
E_KEYSTORE_SRK_MISMATCH, E_KEYSTORE_CORRUPT, E_KEYSTORE_KEY_FILE, E_KEYSTORE_TPM (anything else).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from jukics.keystore.base import (
    SECRET_BYTES,
    DerivedKeysMixin,
    KeyStoreError,
    adopt_path,
    parse_pcr_policy,
    write_new_file,
)

# The TSS libraries log every TPM error response to stderr, including the ones we expect and handle
# (probing for the SRK handle); our own errors say what went wrong. TSS2_LOG set by the operator wins.
os.environ.setdefault("TSS2_LOG", "all+NONE")

try:  # the binding is optional: only hosts (and tests) that use the TPM backend need it
    with warnings.catch_warnings():
        # Debian 13's tpm2-pytss 2.3 imports ciphers that cryptography >= 48 has moved to "decrepit";
        # the warnings say nothing an operator can act on.
        warnings.simplefilter("ignore")
        import tpm2_pytss.internal.crypto  # noqa: F401
    from tpm2_pytss import ESAPI, TSS2_Exception
    from tpm2_pytss.constants import (
        ESYS_TR,
        TPM2_ALG,
        TPM2_CAP,
        TPM2_ECC,
        TPM2_PT,
        TPM2_RC,
        TPM2_RH,
        TPM2_SE,
        TPM2_ST,
        TPMA_OBJECT,
        TPMA_PERMANENT,
    )
    from tpm2_pytss.tsskey import TSSPrivKey
    from tpm2_pytss.types import (
        TPM2B_DATA,
        TPM2B_DIGEST,
        TPM2B_NONCE,
        TPM2B_PRIVATE,
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE_CREATE,
        TPM2B_SENSITIVE_DATA,
        TPML_PCR_SELECTION,
        TPMS_ECC_PARMS,
        TPMS_KEYEDHASH_PARMS,
        TPMS_SCHEME_HASH,
        TPMS_SENSITIVE_CREATE,
        TPMT_ECC_SCHEME,
        TPMT_KDF_SCHEME,
        TPMT_KEYEDHASH_SCHEME,
        TPMT_PUBLIC,
        TPMT_SIG_SCHEME,
        TPMT_SYM_DEF,
        TPMT_SYM_DEF_OBJECT,
        TPMT_TK_HASHCHECK,
        TPMU_PUBLIC_PARMS,
        TPMU_SIG_SCHEME,
        TPMU_SYM_KEY_BITS,
        TPMU_SYM_MODE,
    )

    _IMPORT_ERROR: ImportError | None = None
except ImportError as exc:  # pragma: no cover - exercised on hosts without the binding
    _IMPORT_ERROR = exc

DEFAULT_SRK_HANDLE: Final = 0x81000001
SEALED_FORMAT: Final = "jukics-sealed-secret-v1"
SECRET_FILE: Final = "secret.sealed"  # noqa: S105 - a file name, not a secret
CHECKPOINT_KEY_FILE: Final = "checkpoint.tss2.pem"
CHECKPOINT_PUB_FILE: Final = "checkpoint.pub.pem"
TSS2_PEM_BEGIN: Final = b"-----BEGIN TSS2 PRIVATE KEY-----"


def _require_binding() -> None:
    if _IMPORT_ERROR is not None:
        raise KeyStoreError(
            "E_KEYSTORE_UNAVAILABLE",
            f"the TPM binding tpm2_pytss cannot be imported ({_IMPORT_ERROR}); install python3-tpm2-pytss",
        )


def _srk_template() -> TPM2B_PUBLIC:
    """TCG "ECC SRK" template: restricted decrypt, AES-128-CFB, NIST P-256 (TCG EK/SRK profile)."""
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.ECC,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT
            | TPMA_OBJECT.NODA | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN,
            authPolicy=b"",
            parameters=TPMU_PUBLIC_PARMS(
                eccDetail=TPMS_ECC_PARMS(
                    symmetric=TPMT_SYM_DEF_OBJECT(
                        algorithm=TPM2_ALG.AES,
                        keyBits=TPMU_SYM_KEY_BITS(aes=128),
                        mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB),
                    ),
                    scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.NULL),
                    curveID=TPM2_ECC.NIST_P256,
                    kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL),
                ),
            ),
        )
    )


def _signing_key_template() -> TPM2B_PUBLIC:
    """EC P-256 signing key: generated in the TPM, cannot leave it (fixedTPM, fixedParent)."""
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.ECC,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.NODA
            | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN,
            authPolicy=b"",
            parameters=TPMU_PUBLIC_PARMS(
                eccDetail=TPMS_ECC_PARMS(
                    symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
                    scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.NULL),
                    curveID=TPM2_ECC.NIST_P256,
                    kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL),
                ),
            ),
        )
    )


def _sealed_template(policy_digest: bytes | None) -> TPM2B_PUBLIC:
    # No NODA: the object is dictionary-attack protected, so a locked-out TPM refuses to unseal it
    # (the operator sees E_KEYSTORE_LOCKED_OUT instead of a key store that quietly keeps working).
    attrs = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
    if policy_digest is None:
        attrs |= TPMA_OBJECT.USERWITHAUTH
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.KEYEDHASH,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=attrs,
            authPolicy=policy_digest or b"",
            parameters=TPMU_PUBLIC_PARMS(
                keyedHashDetail=TPMS_KEYEDHASH_PARMS(scheme=TPMT_KEYEDHASH_SCHEME(scheme=TPM2_ALG.NULL))
            ),
        )
    )


def _error_of(exc: Exception, what: str) -> KeyStoreError:
    """Map a TSS2 error to a stable key-store error. The message names the operation, never key bytes."""
    if not isinstance(exc, TSS2_Exception):
        return KeyStoreError("E_KEYSTORE_TPM", f"{what}: {exc.__class__.__name__}: {exc}")
    error = getattr(exc, "error", None)
    text = str(exc)
    if "tcti" in text.lower() and error not in (TPM2_RC.LOCKOUT,):
        return KeyStoreError("E_KEYSTORE_UNAVAILABLE", f"{what}: the TPM cannot be reached ({text})")
    if error == TPM2_RC.LOCKOUT:
        return KeyStoreError(
            "E_KEYSTORE_LOCKED_OUT",
            f"{what}: the TPM is in dictionary-attack lockout; wait for the lockout interval or reset it with the "
            "lockout authorisation (docs/tpm.md)",
        )
    if error == TPM2_RC.INTEGRITY:
        return KeyStoreError(
            "E_KEYSTORE_FOREIGN_BLOB",
            f"{what}: the key blob was not made by this TPM (another device, or this TPM was cleared)",
        )
    if error in (TPM2_RC.POLICY_FAIL, TPM2_RC.PCR_CHANGED, TPM2_RC.VALUE):
        return KeyStoreError(
            "E_KEYSTORE_POLICY", f"{what}: the PCR values differ from those the secret was sealed to ({text})"
        )
    return KeyStoreError("E_KEYSTORE_TPM", f"{what}: {text}")


@dataclass(frozen=True)
class SealedSecret:
    """The on-disk form of the sealed secret: versioned JSON, public and private parts base64."""

    public: bytes
    private: bytes
    srk_handle: int
    pcr_policy: str | None

    def dumps(self) -> bytes:
        return (json.dumps({
            "format": SEALED_FORMAT,
            "parent": f"0x{self.srk_handle:08x}",
            "pcr_policy": self.pcr_policy or "",
            "public": base64.b64encode(self.public).decode("ascii"),
            "private": base64.b64encode(self.private).decode("ascii"),
        }, indent=1) + "\n").encode("ascii")

    @classmethod
    def loads(cls, data: bytes, source: Path) -> SealedSecret:
        try:
            obj = json.loads(data)
            if obj.get("format") != SEALED_FORMAT:
                raise ValueError("format")
            return cls(
                public=base64.b64decode(obj["public"], validate=True),
                private=base64.b64decode(obj["private"], validate=True),
                srk_handle=int(obj["parent"], 16),
                pcr_policy=parse_pcr_policy(obj.get("pcr_policy") or None),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyStoreError("E_KEYSTORE_CORRUPT", f"{source}: not a {SEALED_FORMAT} file") from None


@dataclass
class ProvisionReport:
    created: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created)


class TpmSigningKey(ec.EllipticCurvePrivateKey):
    """A TPM-resident EC P-256 key as a ``cryptography`` private key: it signs, it never exports.

    ``sign`` hashes in software (SHA-256 only) and has the TPM sign the digest. For CSRs, proofs of
    possession and audit checkpoints; TLS handshakes use the same key through OpenSSL's provider.
    """

    def __init__(self, store: TpmKeyStore, path: Path) -> None:
        self._store = store
        self._path = path
        self._public = store.tls_public_key(path)

    def sign(self, data: bytes | bytearray | memoryview,
             signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        algorithm = getattr(signature_algorithm, "algorithm", None)
        if isinstance(algorithm, Prehashed):
            digest = bytes(data)
        elif isinstance(algorithm, hashes.SHA256):
            digest = hashlib.sha256(data).digest()
        else:
            raise KeyStoreError("E_KEYSTORE_TPM", "the TPM signer supports ECDSA with SHA-256 only")
        return self._store.sign_digest(self._path, digest)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise KeyStoreError("E_KEYSTORE_TPM", "TPM TLS keys are for signing only")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise KeyStoreError("E_KEYSTORE_NON_EXPORTABLE", "a TPM-resident key cannot be exported")

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        raise KeyStoreError("E_KEYSTORE_NON_EXPORTABLE", "a TPM-resident key cannot be exported")

    def __copy__(self) -> TpmSigningKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TpmSigningKey:
        return self


class TpmKeyStore(DerivedKeysMixin):
    """The key store backed by a TPM 2.0 (real device, or swtpm in the lab, CI and molecule)."""

    is_production_safe = True
    tls_key_format = "tss2"

    def __init__(self, tcti: str, state_dir: str | os.PathLike[str], *, pcr_policy: str | None = None,
                 srk_handle: int = DEFAULT_SRK_HANDLE) -> None:
        _require_binding()
        if not tcti:
            raise KeyStoreError("E_KEYSTORE_CONFIG", "keystore.tcti is required for the tpm backend")
        self.tcti = tcti
        self.state_dir = Path(state_dir)
        self.pcr_policy = parse_pcr_policy(pcr_policy)
        self.srk_handle = srk_handle
        self._cached_secret: bytes | None = None
        self._checkpoint_public: bytes | None = None

    # --- paths ----------------------------------------------------------------------------------
    @property
    def secret_path(self) -> Path:
        return self.state_dir / SECRET_FILE

    @property
    def checkpoint_key_path(self) -> Path:
        return self.state_dir / CHECKPOINT_KEY_FILE

    @property
    def checkpoint_pub_path(self) -> Path:
        return self.state_dir / CHECKPOINT_PUB_FILE

    # --- TPM conversations ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _esapi(self, what: str) -> Iterator[ESAPI]:
        try:
            ectx = ESAPI(self.tcti)
        except Exception as exc:  # the TCTI loader raises TSS2_Exception or plain errors
            raise KeyStoreError(
                "E_KEYSTORE_UNAVAILABLE", f"{what}: cannot open the TPM through {self.tcti!r} ({exc})"
            ) from None
        try:
            yield ectx
        except KeyStoreError:
            raise
        except Exception as exc:
            raise _error_of(exc, what) from None
        finally:
            with contextlib.suppress(Exception):
                ectx.close()

    @staticmethod
    def _flush(ectx: ESAPI, *handles: Any) -> None:
        for h in handles:
            if h is not None:
                with contextlib.suppress(Exception):
                    ectx.flush_context(h)

    def _srk(self, ectx: ESAPI) -> Any:
        try:
            return ectx.tr_from_tpmpublic(self.srk_handle)
        except TSS2_Exception as exc:
            if exc.error == TPM2_RC.HANDLE:
                raise KeyStoreError(
                    "E_KEYSTORE_NOT_PROVISIONED",
                    f"no storage root key at 0x{self.srk_handle:08x}; run `jukics keystore provision`",
                ) from None
            raise

    def _create_srk_primary(self, ectx: ESAPI) -> Any:
        handle, public, _, _, _ = ectx.create_primary(
            TPM2B_SENSITIVE_CREATE(), _srk_template(), ESYS_TR.OWNER, TPM2B_DATA(), TPML_PCR_SELECTION()
        )
        return handle, public

    def _pcr_selection(self) -> TPML_PCR_SELECTION:
        assert self.pcr_policy is not None
        return TPML_PCR_SELECTION.parse(self.pcr_policy)

    def _policy_session(self, ectx: ESAPI, trial: bool) -> Any:
        session = ectx.start_auth_session(
            tpm_key=ESYS_TR.NONE, bind=ESYS_TR.NONE,
            session_type=TPM2_SE.TRIAL if trial else TPM2_SE.POLICY,
            symmetric=TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
            auth_hash=TPM2_ALG.SHA256,
            nonce_caller=TPM2B_NONCE(os.urandom(32)) if not trial else None,
        )
        # An empty digest means "the PCRs as they are now" (TPM2_PolicyPCR).
        ectx.policy_pcr(session, TPM2B_DIGEST(), self._pcr_selection())
        return session

    # --- provisioning ---------------------------------------------------------------------------
    def provision(self) -> ProvisionReport:
        """Create what is missing (SRK, sealed secret, checkpoint key); never replace what exists.

        Idempotent. An existing sealed secret that this TPM cannot open is an error
        (E_KEYSTORE_FOREIGN_BLOB): overwriting it would lose every encrypted record, so the
        operator decides (docs/tpm.md: restore from the escrow backup).
        """
        report = ProvisionReport()
        self.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        with self._esapi("provision the storage root key") as ectx:
            if self._ensure_srk(ectx):
                report.created.append("srk")
            else:
                report.present.append("srk")
        if self.secret_path.exists():
            self._unseal()  # proves the blob is ours (raises FOREIGN_BLOB / POLICY / LOCKED_OUT)
            report.present.append("sealed-secret")
        else:
            self._seal_new_secret()
            report.created.append("sealed-secret")
        if self.checkpoint_key_path.exists():
            self.tls_public_key(self.checkpoint_key_path)
            report.present.append("checkpoint-key")
        else:
            public = self.create_tls_key(self.checkpoint_key_path, mode=0o640)
            pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            tmp = self.checkpoint_pub_path.with_suffix(".tmp")
            tmp.write_bytes(pem)
            os.replace(tmp, self.checkpoint_pub_path)
            report.created.append("checkpoint-key")
        return report

    def _ensure_srk(self, ectx: ESAPI) -> bool:
        handle, _ = self._create_srk_primary(ectx)
        try:
            try:
                existing = ectx.tr_from_tpmpublic(self.srk_handle)
            except TSS2_Exception as exc:
                if exc.error != TPM2_RC.HANDLE:
                    raise
                persistent = ectx.evict_control(ESYS_TR.OWNER, handle, self.srk_handle)
                ectx.tr_close(persistent)
                return True
            ours = ectx.tr_get_name(handle).marshal()
            theirs = ectx.tr_get_name(existing).marshal()
            ectx.tr_close(existing)
            if ours != theirs:
                raise KeyStoreError(
                    "E_KEYSTORE_SRK_MISMATCH",
                    f"0x{self.srk_handle:08x} holds an object that is not the standard ECC storage root key; "
                    "choose another keystore.srk_handle or evict it deliberately",
                )
            return False
        finally:
            self._flush(ectx, handle)

    def _seal_new_secret(self) -> None:
        secret = os.urandom(SECRET_BYTES)
        write_new_file(self.secret_path, self._seal(secret), 0o640)
        self._cached_secret = secret

    def adopt_secret(self, secret: bytes, stamp: str) -> tuple[str, Path | None]:
        """Seal ``secret`` (an escrowed one) into THIS TPM as the store's secret (an escrow restore).

        Returns (outcome, old blob kept aside): "unchanged" when the current blob already holds it,
        "sealed" on a host without one, "replaced" when a different (or foreign, unopenable) blob is
        renamed to ``secret.sealed.replaced-<stamp>``: never deleted, so nothing is lost by mistake.
        """
        if len(secret) != SECRET_BYTES:
            raise KeyStoreError("E_KEYSTORE_CORRUPT", f"the secret must be {SECRET_BYTES} bytes")
        self.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        with self._esapi("provision the storage root key") as ectx:
            self._ensure_srk(ectx)
        if self.secret_path.exists():
            try:
                if self._unseal() == secret:
                    return "unchanged", None
            except KeyStoreError as exc:
                if exc.code in ("E_KEYSTORE_UNAVAILABLE", "E_KEYSTORE_LOCKED_OUT"):
                    raise  # the TPM is the problem, not the blob: replace nothing
        aside = adopt_path(self.secret_path, self._seal(secret), 0o640, stamp)
        self._cached_secret = secret
        self._forget()
        return ("replaced" if aside else "sealed"), aside

    def _seal(self, secret: bytes) -> bytes:
        with self._esapi("seal the data secret") as ectx:
            srk = self._srk(ectx)
            policy_digest = None
            if self.pcr_policy:
                trial = self._policy_session(ectx, trial=True)
                policy_digest = bytes(ectx.policy_get_digest(trial))
                self._flush(ectx, trial)
            sensitive = TPM2B_SENSITIVE_CREATE(
                TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(secret))
            )
            private, public, _, _, _ = ectx.create(
                srk, sensitive, _sealed_template(policy_digest), TPM2B_DATA(), TPML_PCR_SELECTION()
            )
        return SealedSecret(public.marshal(), private.marshal(), self.srk_handle, self.pcr_policy).dumps()

    def _unseal(self) -> bytes:
        # The TPM first: when there is none, that is the problem to report, not a missing file.
        with self._esapi("unseal the data secret") as ectx:
            blob = self._read_sealed()
            try:
                public, _ = TPM2B_PUBLIC.unmarshal(blob.public)
                private, _ = TPM2B_PRIVATE.unmarshal(blob.private)
            except Exception:
                raise KeyStoreError(
                    "E_KEYSTORE_CORRUPT", f"{self.secret_path}: the sealed object does not parse"
                ) from None
            if blob.srk_handle != self.srk_handle:
                raise KeyStoreError("E_KEYSTORE_CORRUPT", f"{self.secret_path} was sealed under another parent handle")
            srk = self._srk(ectx)
            obj = ectx.load(srk, private, public)
            session = None
            try:
                if blob.pcr_policy:
                    # The blob records which PCRs it is bound to; the policy session must name the same.
                    self.pcr_policy = blob.pcr_policy
                    session = self._policy_session(ectx, trial=False)
                    secret = bytes(ectx.unseal(obj, session1=session))
                else:
                    secret = bytes(ectx.unseal(obj))
            finally:
                self._flush(ectx, session, obj)
        if len(secret) != SECRET_BYTES:
            raise KeyStoreError("E_KEYSTORE_CORRUPT", "the unsealed secret has the wrong length")
        return secret

    def _read_sealed(self) -> SealedSecret:
        try:
            data = self.secret_path.read_bytes()
        except FileNotFoundError:
            raise KeyStoreError(
                "E_KEYSTORE_NOT_PROVISIONED", f"{self.secret_path} is missing; run `jukics keystore provision`"
            ) from None
        except OSError as exc:
            raise KeyStoreError("E_KEYSTORE_UNAVAILABLE", f"cannot read {self.secret_path}: {exc.strerror}") from None
        return SealedSecret.loads(data, self.secret_path)

    def _secret(self) -> bytes:
        if self._cached_secret is None:
            self._cached_secret = self._unseal()
        return self._cached_secret

    # --- TSS2 keys: TLS and checkpoint signing --------------------------------------------------
    def create_tls_key(self, path: Path, mode: int = 0o640) -> ec.EllipticCurvePublicKey:
        """A new EC P-256 signing key generated inside the TPM, written as a TSS2 PRIVATE KEY file.

        The parent is the owner hierarchy's standard ECC primary (TSS2 parent 0x40000001), which
        tpm2-openssl re-creates the same way when OpenSSL loads the file. We create and load it
        ourselves rather than through ``TSSPrivKey.create_ecc``/``load``: some tpm2-pytss versions
        (Debian 13's 2.3) leave that primary loaded, which exhausts a TPM without a resource manager.
        """
        path = Path(path)
        if path.exists():
            raise KeyStoreError("E_KEYSTORE_EXISTS", f"{path} exists; a key file is never overwritten")
        with self._esapi("create a TPM key") as ectx:
            primary, _ = self._create_srk_primary(ectx)
            try:
                private, public, _, _, _ = ectx.create(
                    primary, TPM2B_SENSITIVE_CREATE(), _signing_key_template(), TPM2B_DATA(), TPML_PCR_SELECTION()
                )
            finally:
                self._flush(ectx, primary)
        key = TSSPrivKey(private, public, empty_auth=True, parent=TPM2_RH.OWNER)
        pem = key.to_pem()
        write_new_file(path, pem if isinstance(pem, bytes) else pem.encode("ascii"), mode)
        return self._public_of(key)

    def _load_tss_into(self, ectx: ESAPI, key: Any) -> Any:
        """Load a TSS2 key; the transient parent primary is flushed at once."""
        if int(key.parent) != int(TPM2_RH.OWNER):
            return ectx.load(ectx.tr_from_tpmpublic(int(key.parent)), key.private, key.public)
        primary, _ = self._create_srk_primary(ectx)
        try:
            return ectx.load(primary, key.private, key.public)
        finally:
            self._flush(ectx, primary)

    def _load_tss_key(self, path: Path) -> Any:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise KeyStoreError("E_KEYSTORE_KEY_FILE", f"{path}: cannot read ({exc.strerror})") from None
        if TSS2_PEM_BEGIN not in data:
            raise KeyStoreError("E_KEYSTORE_KEY_FILE", f"{path}: not a TSS2 PRIVATE KEY file")
        try:
            return TSSPrivKey.from_pem(data)
        except Exception:
            raise KeyStoreError("E_KEYSTORE_KEY_FILE", f"{path}: the TSS2 key does not parse") from None

    @staticmethod
    def _public_of(key: Any) -> ec.EllipticCurvePublicKey:
        area = key.public.publicArea
        if area.type != TPM2_ALG.ECC or area.parameters.eccDetail.curveID != TPM2_ECC.NIST_P256:
            raise KeyStoreError("E_KEYSTORE_KEY_FILE", "only EC P-256 TPM keys are supported")
        point = area.unique.ecc
        x = int.from_bytes(bytes(point.x), "big")
        y = int.from_bytes(bytes(point.y), "big")
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()

    def tls_public_key(self, path: Path) -> ec.EllipticCurvePublicKey:
        return self._public_of(self._load_tss_key(path))

    def tls_signer(self, path: Path) -> ec.EllipticCurvePrivateKey:
        return TpmSigningKey(self, Path(path))

    def sign_digest(self, path: Path, digest: bytes) -> bytes:
        """ECDSA P-256 signature (DER) by the TPM key in ``path`` over a SHA-256 digest."""
        if len(digest) != 32:
            raise KeyStoreError("E_KEYSTORE_TPM", "the digest to sign must be 32 bytes (SHA-256)")
        key = self._load_tss_key(path)
        with self._esapi(f"sign with {Path(path).name}") as ectx:
            handle = self._load_tss_into(ectx, key)
            try:
                scheme = TPMT_SIG_SCHEME(
                    scheme=TPM2_ALG.ECDSA, details=TPMU_SIG_SCHEME(ecdsa=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256))
                )
                ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
                signature = ectx.sign(handle, TPM2B_DIGEST(digest), scheme, ticket)
            finally:
                self._flush(ectx, handle)
        r = int.from_bytes(bytes(signature.signature.ecdsa.signatureR), "big")
        s = int.from_bytes(bytes(signature.signature.ecdsa.signatureS), "big")
        return encode_dss_signature(r, s)

    # --- audit checkpoints (KeyStore protocol) --------------------------------------------------
    def sign_checkpoint(self, digest: bytes) -> bytes | None:
        return self.sign_digest(self.checkpoint_key_path, digest)

    def checkpoint_public_key(self) -> bytes | None:
        if self._checkpoint_public is None:
            public = self.tls_public_key(self.checkpoint_key_path)
            self._checkpoint_public = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return self._checkpoint_public

    # --- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What an operator (and the monitoring) needs to know; never any key material."""
        out: dict[str, Any] = {
            "backend": "tpm", "tcti": self.tcti, "state_dir": str(self.state_dir),
            "srk_handle": f"0x{self.srk_handle:08x}", "pcr_policy": self.pcr_policy or "",
            "tpm_available": False, "in_lockout": None, "provisioned": False, "usable": False, "problems": [],
        }
        try:
            with self._esapi("read the TPM status") as ectx:
                out["tpm_available"] = True
                out["manufacturer"] = self._manufacturer(ectx)
                out["in_lockout"] = self._in_lockout(ectx)
                try:
                    handle = self._srk(ectx)
                    ectx.tr_close(handle)
                    out["srk"] = True
                except KeyStoreError as exc:
                    out["srk"] = False
                    out["problems"].append(exc.code)
        except KeyStoreError as exc:
            out["problems"].append(f"{exc.code}: {exc.message}")
            return out
        out["sealed_secret"] = self.secret_path.exists()
        out["checkpoint_key"] = self.checkpoint_key_path.exists()
        out["provisioned"] = bool(out.get("srk") and out["sealed_secret"] and out["checkpoint_key"])
        if out["provisioned"]:
            try:
                self._unseal()
                self.checkpoint_public_key()
                out["usable"] = True
            except KeyStoreError as exc:
                out["problems"].append(f"{exc.code}: {exc.message}")
        return out

    @staticmethod
    def _property(ectx: ESAPI, prop: int) -> int:
        _, data = ectx.get_capability(TPM2_CAP.TPM_PROPERTIES, prop, 1)
        props = data.data.tpmProperties
        return int(props.tpmProperty[0].value) if props.count else 0

    def _manufacturer(self, ectx: ESAPI) -> str:
        value = self._property(ectx, TPM2_PT.MANUFACTURER)
        return value.to_bytes(4, "big").decode("ascii", "replace").strip("\x00 ")

    def _in_lockout(self, ectx: ESAPI) -> bool:
        return bool(self._property(ectx, TPM2_PT.PERMANENT) & TPMA_PERMANENT.INLOCKOUT)


__all__ = ["ProvisionReport", "SealedSecret", "TpmKeyStore", "TpmSigningKey", "parse_pcr_policy"]
