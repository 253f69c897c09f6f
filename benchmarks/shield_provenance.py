"""Content credentials: share of untouched outputs verified `trusted`, of byte-tampered outputs `invalid`.

    python benchmarks/shield_provenance.py [--clips 30] [--flips 5]

Each clip is watermarked, written as MP4 (CRF 18) and signed with garrison's own CA (a fresh GARRISON_HOME in a
temporary folder). Tampering flips one random bit inside the media data ('mdat', the video itself) of a copy;
`--flips` copies per clip. A second figure flips one random bit anywhere in the file: bits in the manifest's
reserved padding and in the container's exempt boxes (ftyp) are by design not covered by the hash, so that
figure is reported as measured, not as a target. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shield_clips import mp4_bytes, world_clips  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=30)
    parser.add_argument("--flips", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GARRISON_HOME"] = str(Path(tmp) / "home")
        from garrison.shield.c2pa import verify_c2pa
        from garrison.shield.verify import Shield, ShieldConfig

        shield = Shield(ShieldConfig(home=Path(tmp) / "home", use_embeddings=False))
        root = shield.identity().root_cert_pem
        rng = random.Random(args.seed)
        untouched, mdat_flips, any_flips = [], [], []
        sign_s = []
        for i, clip in enumerate(world_clips(args.clips, args.seed)):
            protected = shield.protect(clip, 8, f"prompt {i}", "builtin-dit", f"req-{i}")
            path = Path(tmp) / f"out{i}.mp4"
            path.write_bytes(mp4_bytes(protected.frames))
            t = time.perf_counter()
            shield.sign_and_register(path, protected)
            sign_s.append(time.perf_counter() - t)
            untouched.append(verify_c2pa(path, root).status)
            data = path.read_bytes()
            start = data.find(b"mdat") + 4
            size = int.from_bytes(data[start - 8 : start - 4], "big")
            for k in range(args.flips):
                for positions, sink in (((start, start + size - 8), mdat_flips), ((0, len(data)), any_flips)):
                    tampered = bytearray(data)
                    pos = rng.randrange(*positions)
                    tampered[pos] ^= 1 << rng.randrange(8)
                    bad = Path(tmp) / f"t{i}_{k}.mp4"
                    bad.write_bytes(bytes(tampered))
                    sink.append(verify_c2pa(bad, root).status)
        print(
            json.dumps(
                {
                    "benchmark": "provenance",
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
                    "outputs": len(untouched),
                    "untouched_trusted": round(untouched.count("trusted") / len(untouched), 4),
                    "mdat_bit_flips": len(mdat_flips),
                    "mdat_tampered_invalid": round(mdat_flips.count("invalid") / len(mdat_flips), 4),
                    "any_byte_flips": len(any_flips),
                    "any_byte_tampered": {s: any_flips.count(s) for s in sorted(set(any_flips))},
                    "sign_and_register_ms_mean": round(1000 * sum(sign_s) / len(sign_s), 1),
                }
            )
        )


if __name__ == "__main__":
    main()
