"""Watermark robustness, side by side with invisible-watermark's dwtDct and dwtDctSvd. Prints one JSON line.

    python benchmarks/shield_watermark.py [--clips 60] [--unmarked 1000] [--compare-clips 12]

Clips are the built-in world (benchmarks/_shield_clips.py). Every marked clip is first delivered as garrison writes it
(H.264 CRF 18), then attacked:
- crf28: re-encoded at CRF 28 -> payload recovered (detected at p <= 1e-6 and all 64 bits right);
- half: 0.5x area downscale, re-encoded at CRF 23 (ffmpeg's default) -> payload bit accuracy;
- crop: 10% of each axis cut away at a random offset, re-encoded at CRF 23 -> payload bit accuracy.
Bit accuracy is over the 64 payload bits after error correction, decoded at the best-fitting geometry whether or
not detection was confident; `raw_bit_accuracy` is the pilot (pre-correction) accuracy. False positives are
counted over unmarked clips delivered at CRF 18, by the pilots' test and by the registry's
(`--registry-ids` random ids). The comparison runs on clips upscaled to 256x256 (the smallest
frame invisible-watermark accepts); its per-frame decodes are pooled across frames by majority vote, and attacked
frames are resized back to 256x256 before its decoder sees them (it has no resynchronisation of its own).
Requires the `bench` extra (invisible-watermark, opencv-python-headless).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shield_clips import crop, downscale_half, h264, resize, world_clips  # noqa: E402
from garrison.shield import watermark as wm  # noqa: E402

KEY = b"garrison-benchmark-watermark-key"


def payload_bits(payload: int) -> np.ndarray:
    return np.array([(payload >> (63 - i)) & 1 for i in range(64)], dtype=np.uint8)


def bit_accuracy(a: int, b: int) -> float:
    return float(np.mean(payload_bits(a) == payload_bits(b)))


def ours_on(clips: list[np.ndarray], rng: random.Random) -> dict:
    psnr, crf28_ok, crf28_detect, half_acc, half_detect, crop_acc, crop_detect, raw = [], [], [], [], [], [], [], []
    for clip in clips:
        payload = rng.getrandbits(64)
        marked = wm.embed(clip, payload, KEY)
        psnr.append(wm.psnr_db(clip, marked))
        delivered = h264(marked, 18)
        found = wm.detect(h264(delivered, 28), KEY)
        crf28_detect.append(found.detected)
        crf28_ok.append(found.detected and found.payload == payload)
        raw.append(found.bit_accuracy)
        for attack, acc, det in (
            (downscale_half, half_acc, half_detect),
            (lambda f: crop(f, 0.1, rng), crop_acc, crop_detect),
        ):
            attacked = h264(attack(delivered), 23)
            acc.append(bit_accuracy(wm.decode_payload(attacked, KEY), payload))
            det.append(wm.detect(attacked, KEY).detected)
    return {
        "clips": len(clips),
        "psnr_db_mean": round(float(np.mean(psnr)), 2),
        "psnr_db_min": round(float(np.min(psnr)), 2),
        "crf28_payload_recovered": round(float(np.mean(crf28_ok)), 4),
        "crf28_detected": round(float(np.mean(crf28_detect)), 4),
        "crf28_raw_bit_accuracy": round(float(np.mean(raw)), 4),
        "half_bit_accuracy": round(float(np.mean(half_acc)), 4),
        "half_payload_recovered": round(float(np.mean(np.array(half_acc) == 1.0)), 4),
        "half_detected": round(float(np.mean(half_detect)), 4),
        "crop10_bit_accuracy": round(float(np.mean(crop_acc)), 4),
        "crop10_payload_recovered": round(float(np.mean(np.array(crop_acc) == 1.0)), 4),
        "crop10_detected": round(float(np.mean(crop_detect)), 4),
    }


def false_positives(n: int, seed: int, registry_ids: int) -> dict:
    """Unmarked clips through both of verify's tests: the pilots, and (where they do not flag the clip) the
    registry's ids (`watermark.fit_registry`, here against `registry_ids` random ids, with two of them as the
    fingerprint shortlist: look-alikes registered under other ids, tried at every crop geometry)."""
    clips = world_clips(n, seed, seconds=(2,))
    registry = np.random.default_rng(seed).integers(0, 2**63, registry_ids, dtype=np.uint64) * np.uint64(2)
    results = [wm.detect(h264(c, 18), KEY) for c in clips]
    p_values = np.array([r.p_value for r in results])
    flagged_by_registry = sum(wm.fit_registry(r, registry, registry[:2]) is not None for r in results if not r.detected)
    # The registry score's p-value for one id each (no Bonferroni factor): on unmarked clips it must be uniform or
    # heavier, so at most about 1% of them under 0.01, whatever the clips look like.
    config = wm.WatermarkConfig()
    single = []
    for r, payload in zip(results, registry, strict=False):
        if r.whole_frame is None:
            continue
        weights = wm.score_weights(r.whole_frame[0][: wm.CODED_BITS], config.registry_score_levels)
        score = int(wm.codeword_score(weights, wm.encode_bits(int(payload))[None])[0])
        single.append(wm.codeword_score_tail(weights, score))
    return {
        "unmarked_clips": n,
        "false_positives": int(np.sum(p_values <= wm.WatermarkConfig().false_positive_rate)),
        "min_p_value": float(f"{p_values.min():.3g}"),
        "share_p_below_0.01": round(float(np.mean(p_values <= 0.01)), 4),
        "registry_ids": registry_ids,
        "false_positives_by_registry": int(flagged_by_registry),
        "registry_score_share_p_below_0.01": round(float(np.mean(np.array(single) <= 0.01)), 4),
        "registry_score_share_p_below_0.1": round(float(np.mean(np.array(single) <= 0.1)), 4),
    }


def embed_ms_per_frame(frames: int = 64) -> float:
    clip = np.random.default_rng(0).integers(0, 256, size=(frames, 256, 256, 3), dtype=np.uint8)
    wm.embed(clip[:1], 1, KEY)  # pattern cached per (payload, size), as it is per generation
    start = time.perf_counter()
    for _ in range(3):
        wm.embed(clip, 1, KEY)
    return (time.perf_counter() - start) / (3 * frames) * 1000


def imwatermark_on(clips: list[np.ndarray], method: str, rng: random.Random) -> dict:
    import cv2
    from imwatermark import WatermarkDecoder, WatermarkEncoder

    def mark(frames: np.ndarray, bits: list[int]) -> np.ndarray:
        enc = WatermarkEncoder()
        enc.set_watermark("bits", bits)
        out = [cv2.cvtColor(enc.encode(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), method), cv2.COLOR_BGR2RGB) for f in frames]
        return np.stack(out)

    def read(frames: np.ndarray) -> np.ndarray:
        if frames.shape[1:3] != (256, 256):
            frames = resize(frames, 256, 256)
        dec = WatermarkDecoder("bits", 64)
        votes = [np.array(dec.decode(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), method), dtype=np.uint8) for f in frames]
        return (np.mean(votes, axis=0) > 0.5).astype(np.uint8)

    psnr, acc = [], {"crf28": [], "half": [], "crop10": []}
    for clip in clips:
        payload = rng.getrandbits(64)
        truth = payload_bits(payload)
        marked = mark(clip, truth.tolist())
        psnr.append(wm.psnr_db(clip, marked))
        delivered = h264(marked, 18)
        attacked = {
            "crf28": h264(delivered, 28),
            "half": h264(downscale_half(delivered), 23),
            "crop10": h264(crop(delivered, 0.1, rng), 23),
        }
        for name, frames in attacked.items():
            acc[name].append(float(np.mean(read(frames) == truth)))
    return {
        "psnr_db_mean": round(float(np.mean(psnr)), 2),
        **{f"{k}_bit_accuracy": round(float(np.mean(v)), 4) for k, v in acc.items()},
        **{f"{k}_payload_recovered": round(float(np.mean(np.array(v) == 1.0)), 4) for k, v in acc.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--unmarked", type=int, default=1000)
    parser.add_argument(
        "--registry-ids", type=int, default=100_000, help="random ids the unmarked clips are also tested against"
    )
    parser.add_argument("--compare-clips", type=int, default=12)
    parser.add_argument("--hd-clips", type=int, default=6, help="clips upscaled to 1280x720 before marking")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    start = time.time()
    native = ours_on(world_clips(args.clips, args.seed + 1), rng)
    hd = ours_on(world_clips(args.hd_clips, args.seed + 2, seconds=(2,), upscale=(1280, 720)), rng)
    square = world_clips(args.compare_clips, args.seed + 3, seconds=(2,), upscale=(256, 256))
    comparison = {"clips_256x256": len(square), "garrison": ours_on(square, rng)}
    for method in ("dwtDct", "dwtDctSvd"):
        comparison[f"invisible_watermark_{method}"] = imwatermark_on(square, method, rng)
    print(
        json.dumps(
            {
                "benchmark": "watermark",
                "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cpus",
                "native_sizes": native,
                "upscaled_1280x720": hd,
                "false_positive_check": false_positives(args.unmarked, args.seed + 4, args.registry_ids),
                "embed_ms_per_256x256_frame": round(embed_ms_per_frame(), 3),
                "comparison": comparison,
                "config": {k: v for k, v in wm.WatermarkConfig().__dict__.items()},
                "wall_s": round(time.time() - start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
