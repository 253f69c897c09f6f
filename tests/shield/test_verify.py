from pathlib import Path

import pytest
from tests.shield.conftest import decode_mp4, encode_mp4, moving_clip

from garrison.shield.verify import ProtectedClip, Shield, ShieldConfig, read_frames


def _shield(home: Path) -> Shield:
    return Shield(ShieldConfig(home=home, use_embeddings=False))


def test_generation_path_then_verify(tmp_path: Path) -> None:
    shield = _shield(tmp_path / "home")
    decision = shield.screen_prompt("a red circle moving right on a black background", "req-1")
    assert decision.decision == "allow"
    clip = moving_clip(64, 112, 16, seed=8)
    protected = shield.protect(clip, 8, "a red circle moving right on a black background", "builtin-dit", "req-1")
    assert protected.frames.shape == clip.shape and protected.psnr_db >= 40
    mp4 = tmp_path / "out.mp4"
    mp4.write_bytes(encode_mp4(protected.frames))
    provenance = shield.sign_and_register(mp4, protected)
    assert provenance["c2pa"] == "signed" and provenance["watermark"] == protected.payload_hex

    out = shield.verify_file(mp4)
    assert out["c2pa"] == "trusted"
    assert out["watermark"]["detected"] and out["watermark"]["payload"] == protected.payload_hex
    assert out["registry"] == {"match": True, "request_id": "req-1", "by": "watermark"}
    assert out["manifest"]["model"] == "builtin-dit"

    # A re-encode strips the manifest; the watermark still names the request.
    stripped = tmp_path / "reencoded.mp4"
    stripped.write_bytes(encode_mp4(decode_mp4(mp4.read_bytes()), crf=28))
    out = shield.verify_file(stripped)
    assert out["c2pa"] == "absent" and out["watermark"]["detected"]
    assert out["registry"]["request_id"] == "req-1"

    # A file nobody marked, of a different scene (a look-alike of a registered video can match by fingerprint:
    # the registry says so with "by": "fingerprint")
    plain = tmp_path / "plain.mp4"
    plain.write_bytes(encode_mp4(moving_clip(64, 64, 16, seed=9).transpose(0, 2, 1, 3)[:, ::-1]))
    out = shield.verify_file(plain)
    assert out["c2pa"] == "absent" and not out["watermark"]["detected"] and not out["registry"]["match"]

    events = [r["event"] for r in shield.audit.records()]
    assert events == ["policy_decision", "generation", "verification", "verification", "verification"]
    assert shield.audit.verify().ok


def _generated_then_reencoded(shield: Shield, tmp_path: Path, seed: int, request_id: str) -> tuple[ProtectedClip, Path]:
    """A clip through the generation path (marked, delivered at CRF 18, signed, registered), then re-encoded at CRF
    28, which strips its manifest."""
    protected = shield.protect(moving_clip(64, 64, 16, seed=seed), 8, "a shape on black", "builtin-dit", request_id)
    mp4 = tmp_path / "out.mp4"
    mp4.write_bytes(encode_mp4(protected.frames))
    shield.sign_and_register(mp4, protected)
    stripped = tmp_path / "reencoded.mp4"
    stripped.write_bytes(encode_mp4(decode_mp4(mp4.read_bytes()), crf=28))
    return protected, stripped


def test_a_misdecoded_id_is_recovered_from_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from garrison.shield import watermark

    shield = _shield(tmp_path / "home")
    for i in range(40):  # other generations in the registry
        shield.registry.register(f"other-{i}", f"{watermark.new_payload():016x}", "0" * 32, "builtin-dit", "x" * 64)
    protected, stripped = _generated_then_reencoded(shield, tmp_path, seed=11, request_id="req-weak")
    # Blind Viterbi decoding wanders off on a weak channel: make it read an id nobody issued.
    monkeypatch.setattr(watermark, "viterbi_decode", lambda soft: protected.payload ^ 0xFF)
    out = shield.verify_file(stripped)
    assert out["watermark"]["detected"]
    assert out["watermark"]["payload"] == protected.payload_hex
    assert out["watermark"]["payload_source"] == "registry" and out["watermark"]["payload_match_p_value"] <= 1e-6
    assert out["registry"] == {"match": True, "request_id": "req-weak", "by": "watermark"}


def test_a_mark_the_pilots_miss_is_detected_against_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from garrison.shield import watermark

    shield = _shield(tmp_path / "home")
    protected, stripped = _generated_then_reencoded(shield, tmp_path, seed=12, request_id="req-faint")
    real_detect = watermark.detect

    def pilots_fall_short(frames, key, config=None):  # as on a faint clip: the pilots' test alone does not pass
        found = real_detect(frames, key, config)
        found.detected, found.payload, found.coded_soft, found.p_value = False, None, None, 1e-4
        return found

    monkeypatch.setattr(watermark, "detect", pilots_fall_short)
    out = shield.verify_file(stripped)
    assert out["watermark"]["detected"] and out["watermark"]["payload"] == protected.payload_hex
    assert out["watermark"]["payload_source"] == "registry" and out["watermark"]["p_value"] <= 1e-6
    assert out["registry"]["request_id"] == "req-faint"


def test_registry_streams_every_payload(tmp_path: Path) -> None:
    shield = _shield(tmp_path / "home")
    ids = [(i * 0x9E3779B97F4A7C15) % 2**64 for i in range(1, 8)]
    for i, payload in enumerate(ids):
        shield.registry.register(f"r{i}", f"{payload:016x}", "0" * 32, "m", "x" * 64)
    assert list(shield.registry.payloads(batch=3)) == ids


def test_bad_files_get_clear_answers_and_are_audited(tmp_path: Path) -> None:
    shield = _shield(tmp_path / "home")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(encode_mp4(moving_clip(64, 64, 16))[:300])
    for path in (text, empty, truncated, tmp_path / "missing.mp4"):
        out = shield.verify_file(path)
        assert out["error"] and out["c2pa"] in ("absent", "invalid") and not out["watermark"]["detected"], out
    records = list(shield.audit.records())
    assert len(records) == 4 and all(r["event"] == "verification" and r["data"]["error"] for r in records)


def test_read_frames_reports_reasons(tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(encode_mp4(moving_clip(64, 64, 8)))
    frames, fps = read_frames(path)
    assert frames.shape == (8, 64, 64, 3) and fps == 8
