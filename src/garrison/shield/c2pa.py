"""Content credentials: sign every MP4 with a C2PA manifest (c2pa-python) and verify signed files.

garrison is its own certificate authority. On first use it creates, in ``<GARRISON_HOME>/keys/c2pa`` (default
``~/.garrison/keys/c2pa``):

- a root CA (self-signed X.509 v3, basicConstraints CA, keyCertSign, ECDSA P-256), the trust anchor verifiers use;
- an end-entity signing certificate issued by it (basicConstraints not-CA, digitalSignature, extended key usage
  emailProtection -- one of the EKUs C2PA accepts for claim signing --, organisation set), ES256.

No timestamp authority is used: the manifest is checked against the certificate's validity window at verification.
The manifest declares the video AI-generated (``c2pa.created`` with digitalSourceType ``trainedAlgorithmicMedia``),
names the model, carries the SHA-256 of the prompt (never the prompt), and declares the invisible watermark as a
soft binding (``c2pa.soft-binding``), so a copy stripped of its manifest can still be tied back to it.

Verification answers ``trusted`` (signature valid and the chain ends at garrison's root), ``valid`` (signature
valid, signer not trusted), ``invalid`` (a manifest is there but does not validate: the file was changed after
signing) or ``absent`` (no manifest).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import garrison

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
SOFT_BINDING_ALG = "io.garrison.watermark.ss-luma.v1"
GENERATION_LABEL = "io.garrison.generation"
ORGANISATION = "garrison"
CA_VALID_DAYS, SIGNER_VALID_DAYS = 3650, 825
# A manifest sits in a 'uuid' box near the start of an MP4; scanning this much finds it without reading huge files.
_MANIFEST_SCAN_BYTES = 32 << 20


def garrison_home() -> Path:
    """Where garrison keeps keys and state: $GARRISON_HOME, else ~/.garrison."""
    return Path(os.environ.get("GARRISON_HOME") or Path.home() / ".garrison")


def default_key_dir() -> Path:
    return garrison_home() / "keys" / "c2pa"


@dataclass(frozen=True)
class SigningIdentity:
    """PEM material: the signer's certificate and key, and the root that verifiers trust."""

    signer_cert_pem: bytes
    signer_key_pem: bytes
    root_cert_pem: bytes
    directory: Path

    @property
    def chain_pem(self) -> bytes:
        # Only the end-entity certificate travels in the manifest; the root is the verifier's trust anchor.
        return self.signer_cert_pem


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
        ]
    )


def _key_usage(**set_bits: bool) -> x509.KeyUsage:
    bits = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    bits.update(set_bits)
    return x509.KeyUsage(**bits)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_identity(directory: Path) -> None:
    """Create the root CA and the signing certificate in `directory` (files: root.pem, root.key, signer.pem,
    signer.key; keys readable by the owner only)."""
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name("garrison root CA")
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = (
        x509.CertificateBuilder()
        .subject_name(_name("garrison content signer"))
        .issuer_name(root_name)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SIGNER_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    files = {
        "root.pem": (root.public_bytes(serialization.Encoding.PEM), 0o644),
        "root.key": (_pem_key(root_key), 0o600),
        "signer.pem": (signer.public_bytes(serialization.Encoding.PEM), 0o644),
        "signer.key": (_pem_key(signer_key), 0o600),
    }
    for name, (data, mode) in files.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def ensure_identity(directory: str | Path | None = None) -> SigningIdentity:
    """Load garrison's signing identity, creating the CA and signer on first run.

    Creation happens in a temporary folder renamed into place, so two processes starting at once end up with one
    identity, never a mix of two.
    """
    directory = Path(directory) if directory else default_key_dir()
    if not (directory / "signer.pem").is_file():
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".c2pa-", dir=directory.parent))
        try:
            create_identity(tmp)
            os.rename(tmp, directory)  # atomic; fails if another process got there first
        except OSError:
            if not (directory / "signer.pem").is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return SigningIdentity(
        signer_cert_pem=(directory / "signer.pem").read_bytes(),
        signer_key_pem=(directory / "signer.key").read_bytes(),
        root_cert_pem=(directory / "root.pem").read_bytes(),
        directory=directory,
    )


def _settings(trust_root_pem: bytes | None) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
        "builder": {"thumbnail": {"enabled": False}},
    }
    if trust_root_pem:
        settings["trust"] = {"trust_anchors": trust_root_pem.decode()}
    return settings


def build_manifest(
    title: str, model: str, prompt_sha256: str, watermark_payload_hex: str | None, request_id: str | None = None
) -> dict[str, Any]:
    """The manifest definition garrison signs."""
    assertions: list[dict[str, Any]] = [
        {
            "label": "c2pa.actions",
            "data": {
                "actions": [
                    {
                        "action": "c2pa.created",
                        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                        "softwareAgent": {"name": model},
                    }
                ]
            },
        },
        {
            "label": GENERATION_LABEL,
            "data": {"model": model, "prompt_sha256": prompt_sha256, "request_id": request_id, "ai_generated": True},
        },
    ]
    if watermark_payload_hex:
        value = base64.b64encode(bytes.fromhex(watermark_payload_hex)).decode()
        assertions.append(
            {
                "label": "c2pa.soft-binding",
                "data": {"alg": SOFT_BINDING_ALG, "blocks": [{"scope": {}, "value": value}]},
            }
        )
    return {
        "claim_generator_info": [{"name": "garrison", "version": getattr(garrison, "__version__", "0")}],
        "title": title,
        "format": "video/mp4",
        "assertions": assertions,
    }


def sign_mp4(
    src: str | Path,
    dst: str | Path,
    *,
    model: str,
    prompt_sha256: str,
    watermark_payload_hex: str | None = None,
    request_id: str | None = None,
    identity: SigningIdentity | None = None,
) -> dict[str, Any]:
    """Sign the MP4 at `src` into `dst` (may be the same path). Returns the manifest definition that was signed."""
    import c2pa

    src, dst = Path(src), Path(dst)
    identity = identity or ensure_identity()
    manifest = build_manifest(dst.name, model, prompt_sha256, watermark_payload_hex, request_id)
    context = c2pa.Context.from_dict(_settings(identity.root_cert_pem))
    signer = c2pa.Signer.from_info(
        c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.chain_pem, identity.signer_key_pem, None)
    )
    fd, tmp = tempfile.mkstemp(dir=dst.resolve().parent, prefix=f".{dst.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        with c2pa.Builder(manifest, context=context) as builder, open(src, "rb") as source, open(tmp, "w+b") as out:
            builder.sign(signer, "video/mp4", source, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        signer.close()
        context.close()
    return manifest


@dataclass
class C2paVerdict:
    """Result of reading a file's content credentials."""

    status: str  # trusted | valid | invalid | absent
    detail: str = ""
    manifest: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)

    def soft_binding_payload(self) -> str | None:
        """The watermark id the manifest declares (hex), if any."""
        for assertion in (self.manifest or {}).get("assertions", []):
            if assertion.get("label") == "c2pa.soft-binding":
                blocks = assertion.get("data", {}).get("blocks", [])
                if blocks:
                    return base64.b64decode(blocks[0]["value"]).hex()
        return None


def _has_manifest_bytes(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(_MANIFEST_SCAN_BYTES)
    return b"jumb" in head and b"c2pa" in head


def verify_c2pa(path: str | Path, trust_root_pem: bytes | None = None) -> C2paVerdict:
    """Read and validate the manifest of `path` with `trust_root_pem` (garrison's root) as the only trust anchor."""
    import c2pa

    path = Path(path)
    if trust_root_pem is None:
        trust_root_pem = ensure_identity().root_cert_pem
    context = c2pa.Context.from_dict(_settings(trust_root_pem))
    try:
        with open(path, "rb") as f, c2pa.Reader("video/mp4", f, context=context) as reader:
            state = (reader.get_validation_state() or "").lower()
            results = reader.get_validation_results() or {}
            try:
                manifest = reader.get_active_manifest()
            except KeyError:  # a store whose active-manifest pointer was damaged
                manifest, state = None, "invalid"
    except c2pa.C2paError as e:
        if isinstance(e, c2pa.C2paError.ManifestNotFound) or not _has_manifest_bytes(path):
            return C2paVerdict("absent", str(e).splitlines()[0][:200] if str(e) else "no manifest")
        return C2paVerdict("invalid", f"manifest present but unreadable: {str(e)[:200]}")
    finally:
        context.close()
    failures = [f.get("code", "") for f in (results.get("activeManifest") or {}).get("failure", [])]
    if state == "trusted":
        return C2paVerdict("trusted", "signature valid, signer chains to garrison's root", manifest, failures)
    if state == "valid":
        return C2paVerdict("valid", "signature valid, signer not trusted", manifest, failures)
    return C2paVerdict("invalid", "manifest does not validate: " + ", ".join(failures[:5]), manifest, failures)


def manifest_summary(verdict: C2paVerdict) -> dict[str, Any]:
    """What a verifier is told about the manifest: generation assertion and AI source type."""
    out: dict[str, Any] = {}
    for assertion in (verdict.manifest or {}).get("assertions", []):
        label = assertion.get("label", "")
        if label == GENERATION_LABEL:
            out.update({k: v for k, v in assertion.get("data", {}).items() if k != "ai_generated"})
        if label.startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                if action.get("digitalSourceType"):
                    out["digital_source_type"] = action["digitalSourceType"].rsplit("/", 1)[-1]
    payload = verdict.soft_binding_payload()
    if payload:
        out["soft_binding"] = payload
    return out
