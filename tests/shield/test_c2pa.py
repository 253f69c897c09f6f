from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.shield.conftest import encode_mp4, moving_clip

from garrison.shield import c2pa as gc


def _mp4(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(moving_clip(64, 64, 8)))
    return path


def test_identity_is_a_real_ca_and_end_entity(garrison_home: Path) -> None:
    ident = gc.ensure_identity()
    assert ident.directory == garrison_home / "keys" / "c2pa"
    root = x509.load_pem_x509_certificate(ident.root_cert_pem)
    signer = x509.load_pem_x509_certificate(ident.signer_cert_pem)
    assert root.version == signer.version == x509.Version.v3
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert signer.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "garrison"
    assert signer.issuer == root.subject
    assert oct((ident.directory / "signer.key").stat().st_mode & 0o777) == "0o600"
    assert gc.ensure_identity().signer_cert_pem == ident.signer_cert_pem  # created once


def test_sign_verify_tamper_absent(garrison_home: Path, tmp_path: Path) -> None:
    src = _mp4(tmp_path)
    signed = tmp_path / "signed.mp4"
    gc.sign_mp4(
        src,
        signed,
        model="builtin-dit",
        prompt_sha256="ab" * 32,
        watermark_payload_hex="00112233aabbccdd",
        request_id="req-1",
    )
    verdict = gc.verify_c2pa(signed)
    assert verdict.status == "trusted", verdict
    summary = gc.manifest_summary(verdict)
    assert summary["digital_source_type"] == "trainedAlgorithmicMedia"
    assert summary["model"] == "builtin-dit" and summary["prompt_sha256"] == "ab" * 32
    assert summary["soft_binding"] == "00112233aabbccdd"

    data = bytearray(signed.read_bytes())
    data[data.find(b"mdat") + 64] ^= 0x01  # one bit of the video itself
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(bytes(data))
    assert gc.verify_c2pa(tampered).status == "invalid"

    assert gc.verify_c2pa(src).status == "absent"
    other_root = gc.ensure_identity(tmp_path / "other").root_cert_pem
    assert gc.verify_c2pa(signed, other_root).status == "valid"  # signature fine, signer not trusted


def test_sign_in_place(garrison_home: Path, tmp_path: Path) -> None:
    path = _mp4(tmp_path)
    gc.sign_mp4(path, path, model="m", prompt_sha256="0" * 64)
    assert gc.verify_c2pa(path).status == "trusted"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
