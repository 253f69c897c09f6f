import numpy as np
from tests.shield.conftest import h264_roundtrip, moving_clip

from garrison.shield.registry import FINGERPRINT_MATCH_BITS, Registry, fingerprint, hamming_bits


def test_fingerprint_survives_reencode_and_resize_but_tells_clips_apart() -> None:
    clip = moving_clip(64, 64, 16, seed=5)
    fp = fingerprint(clip)
    assert len(fp) == 32
    assert hamming_bits(fp, fingerprint(h264_roundtrip(clip, 28))) <= FINGERPRINT_MATCH_BITS
    bigger = np.repeat(np.repeat(clip, 3, axis=1), 3, axis=2)
    assert hamming_bits(fp, fingerprint(bigger)) <= FINGERPRINT_MATCH_BITS
    # the same scene moving the other way, or vertically, is a different video
    others = [fingerprint(clip[:, :, ::-1]), fingerprint(clip.transpose(0, 2, 1, 3)), fingerprint(clip[::-1])]
    assert min(hamming_bits(fp, o) for o in others) > FINGERPRINT_MATCH_BITS


def test_register_and_lookup(tmp_path) -> None:
    reg = Registry(tmp_path / "reg.sqlite")
    clip = moving_clip(64, 64, 16, seed=6)
    reg.register("req-a", "00000000000000ff", fingerprint(clip), "builtin", "0" * 64)
    reg.register("req-b", "00000000000000aa", fingerprint(clip[:, :, ::-1]), "builtin", "1" * 64)
    assert reg.count() == 2
    by_wm = reg.lookup("00000000000000AA", None)
    assert (by_wm.match, by_wm.request_id, by_wm.by) == (True, "req-b", "watermark")
    by_fp = reg.lookup(None, fingerprint(h264_roundtrip(clip, 28)))
    assert (by_fp.match, by_fp.request_id, by_fp.by) == (True, "req-a", "fingerprint")
    assert not reg.lookup("1234567812345678", fingerprint(clip.transpose(0, 2, 1, 3))).match
    # two requests with the same-looking video: the fingerprint alone cannot say which
    reg.register("req-c", "00000000000000cc", fingerprint(clip), "builtin", "2" * 64)
    assert not reg.lookup(None, fingerprint(clip)).match
    # the same database from a second handle (another process) sees the rows
    assert Registry(f"sqlite:///{tmp_path / 'reg.sqlite'}").lookup("00000000000000ff", None).request_id == "req-a"


def test_nearest_payloads_are_the_look_alikes_ids_nearest_first(tmp_path) -> None:
    reg = Registry(tmp_path / "reg.sqlite")
    clip = moving_clip(64, 64, 16, seed=6)
    fp = fingerprint(clip)
    flipped = f"{int(fp, 16) ^ 0b111:032x}"  # 3 bits away
    reg.register("req-a", "00000000000000ff", flipped, "builtin", "0" * 64)
    reg.register("req-b", "00000000000000aa", fp, "builtin", "1" * 64)
    reg.register("req-c", "00000000000000cc", fingerprint(clip[:, :, ::-1]), "builtin", "2" * 64)  # another video
    again = fingerprint(h264_roundtrip(clip, 28))
    assert 0xAA in reg.nearest_payloads(again) and 0xCC not in reg.nearest_payloads(again)  # re-encoded: still near
    assert set(reg.nearest_payloads(fp)) == {0xAA, 0xFF} and reg.nearest_payloads(fp)[0] == 0xAA
    assert reg.nearest_payloads(fp, limit=1) == [0xAA]
    assert reg.nearest_payloads(fp, max_distance=0) == [0xAA]
    assert reg.nearest_payloads(f"{~int(fp, 16) & (2**128 - 1):032x}") == []  # nothing looks like it


def test_a_fingerprint_match_needs_a_margin_over_other_requests(tmp_path) -> None:
    reg = Registry(tmp_path / "reg.sqlite")
    fp = fingerprint(moving_clip(64, 64, 16, seed=7))
    reg.register("req-a", "00000000000000ff", fp, "builtin", "0" * 64)
    reg.register("req-a", "00000000000000fe", f"{int(fp, 16) ^ 0b1:032x}", "builtin", "1" * 64)  # same request
    reg.register("req-b", "00000000000000aa", f"{int(fp, 16) ^ 0xF0F:032x}", "builtin", "2" * 64)  # 8 bits away
    near = reg.neighbours(fp)
    assert [d for d, *_ in near.near] == [0, 1, 8] and near.unambiguous_match() == ("req-a", 0)
    assert reg.lookup(None, fp, near).request_id == "req-a"  # the scan a caller already holds, reused
    # another request 3 bits from the nearest clip: under the 4-bit margin, so no request is named
    reg.register("req-c", "00000000000000cc", f"{int(fp, 16) ^ 0b111:032x}", "builtin", "3" * 64)
    assert reg.neighbours(fp).unambiguous_match() == (None, None) and not reg.lookup(None, fp).match
    assert reg.neighbours(fp).payloads(limit=2) == [0xFF, 0xFE]


def test_a_registry_another_process_creates_at_the_same_moment_still_opens(tmp_path, monkeypatch) -> None:
    """Two workers' first videos open a new registry at once: one CREATE TABLE loses the race and must not fail the
    video (it did, in CI: "table shield_provenance already exists")."""
    import sqlalchemy as sa

    from garrison.shield import registry as registry_mod

    path = tmp_path / "registry.sqlite"
    real_create_all = registry_mod._Base.metadata.create_all
    calls = []

    def racing_create_all(bind, **kwargs):
        calls.append(bind)
        if len(calls) == 1:  # the other process gets there first, between our check and our CREATE TABLE
            real_create_all(sa.create_engine(f"sqlite:///{path}"))
            raise sa.exc.OperationalError("CREATE TABLE shield_provenance", {}, Exception("table already exists"))
        return real_create_all(bind, **kwargs)

    monkeypatch.setattr(registry_mod._Base.metadata, "create_all", racing_create_all)
    reg = Registry(path)
    assert len(calls) == 2
    reg.register("req-1", "00ff00ff00ff00ff", "0" * 16, "garrison-builtin-dit", "ab" * 32)
    assert reg.by_watermark("00ff00ff00ff00ff").request_id == "req-1" and reg.count() == 1
