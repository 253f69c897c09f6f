"""The shield's small API for the rest of garrison: screen a prompt, protect an output, verify a file.

The generation path calls, in order::

    decision = shield.screen_prompt(prompt, request_id)          # refuse before any compute is spent
    protected = shield.protect(frames, fps, prompt, model, request_id)   # watermark the uint8 frames
    ... write protected.frames to an MP4 ...
    provenance = shield.sign_and_register(mp4_path, protected)  # C2PA-sign in place, register, audit

and ``shield.verify_file(path)`` answers `garrison verify` and ``POST /v1/verify``. Every step writes an audit
record. Module-level functions of the same names use a default Shield rooted at $GARRISON_HOME (~/.garrison).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from garrison.hardware.catalog import garrison_home
from garrison.shield.audit import AuditLog
from garrison.shield.policy import Policy, PolicyConfig, PolicyDecision
from garrison.shield.registry import Registry, fingerprint

if TYPE_CHECKING:
    from garrison.shield.c2pa import SigningIdentity
    from garrison.shield.watermark import WatermarkConfig

# The watermark (scipy.ndimage, scipy.stats) and content credentials (cryptography, c2pa) are imported where they
# are used: the API server only screens prompts through this module, and those imports would cost each server
# process some 60 MB it never uses (benchmarks/server_idle_memory.py).

MAX_VERIFY_BYTES = 512 << 20  # larger uploads are answered without decoding
MAX_VERIFY_FRAMES = 96  # the watermark is static and the fingerprint samples frames: more adds nothing
MAX_VERIFY_PIXELS = 4096 * 2304  # frames larger than 4K-ish are refused rather than decoded


class UnreadableVideo(ValueError):
    """The file is not a video garrison can read; the message says why."""


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


@dataclass
class ProtectedClip:
    """Frames with the watermark in them, and what the manifest and registry need to know about them."""

    frames: np.ndarray
    fps: int
    payload: int
    prompt_sha256: str
    model: str
    request_id: str
    psnr_db: float

    @property
    def payload_hex(self) -> str:
        from garrison.shield import watermark

        return watermark.payload_hex(self.payload)


@dataclass
class ShieldConfig:
    """Where the shield keeps its state; every path defaults to a place under `home`."""

    home: Path = field(default_factory=garrison_home)
    registry_url: str | None = None
    audit_path: Path | None = None
    key_dir: Path | None = None
    watermark: WatermarkConfig | None = None  # None: WatermarkConfig(), made on first use
    use_embeddings: bool = True


def read_frames(path: str | Path, max_frames: int = MAX_VERIFY_FRAMES) -> tuple[np.ndarray, int]:
    """Decode the first `max_frames` RGB frames and the fps. Raises UnreadableVideo with a clear reason."""
    import av

    path = Path(path)
    if not path.is_file():
        raise UnreadableVideo(f"{path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise UnreadableVideo(f"{path} is empty")
    if size > MAX_VERIFY_BYTES:
        raise UnreadableVideo(f"{path} is {size} bytes; the limit for verification is {MAX_VERIFY_BYTES}")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UnreadableVideo(f"{path} has no video stream")
            stream = container.streams.video[0]
            if stream.width * stream.height > MAX_VERIFY_PIXELS:
                raise UnreadableVideo(f"{path} is {stream.width}x{stream.height}; too large to verify")
            fps = int(round(float(stream.average_rate or stream.guessed_rate or 8)))
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, OSError, ValueError) as e:  # UnreadableVideo is a ValueError: keep its message
        if isinstance(e, UnreadableVideo):
            raise
        if not frames:  # a truncated file that still yields frames is verified on what it holds
            raise UnreadableVideo(f"{path} is not a readable video: {str(e)[:200]}") from e
    if not frames:
        raise UnreadableVideo(f"{path} has no frames")
    return np.stack(frames), fps


class Shield:
    """Policy, watermark, content credentials, registry and audit log, configured once."""

    def __init__(self, config: ShieldConfig | None = None) -> None:
        self.config = config or ShieldConfig()
        home = Path(self.config.home)
        self.key_dir = Path(self.config.key_dir) if self.config.key_dir else home / "keys"
        self.audit = AuditLog(self.config.audit_path or home / "audit.log")
        self._registry_url = self.config.registry_url or str(home / "registry.sqlite")
        self._registry: Registry | None = None
        self._policy: Policy | None = None

    # components, created on first use so that `garrison audit verify` never loads a model
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self._registry_url)
        return self._registry

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            self._policy = Policy(PolicyConfig(use_embeddings=self.config.use_embeddings))
        return self._policy

    def watermark_key(self) -> bytes:
        from garrison.shield import watermark

        return watermark.load_or_create_key(self.key_dir / "watermark.key")

    def watermark_config(self) -> WatermarkConfig:
        from garrison.shield import watermark

        if self.config.watermark is None:
            self.config.watermark = watermark.WatermarkConfig()
        return self.config.watermark

    def identity(self) -> SigningIdentity:
        from garrison.shield import c2pa as c2pa_mod

        return c2pa_mod.ensure_identity(self.key_dir / "c2pa")

    # -- the generation path --------------------------------------------------------------------------------------

    def screen_prompt(self, prompt: str, request_id: str | None = None) -> PolicyDecision:
        """Policy decision for one prompt, audited (the audit keeps the prompt's hash, not the prompt)."""
        return self.record_policy_decision(prompt, self.policy.check(prompt), request_id)

    def record_policy_decision(
        self, prompt: str, decision: PolicyDecision, request_id: str | None = None
    ) -> PolicyDecision:
        """Audit a decision this shield's policy made elsewhere (the API server's policy process)."""
        self.audit.append(
            "policy_decision", {"request_id": request_id, "prompt_sha256": prompt_sha256(prompt), **decision.to_dict()}
        )
        return decision

    def protect(self, frames: np.ndarray, fps: int, prompt: str, model: str, request_id: str) -> ProtectedClip:
        """Watermark uint8 RGB frames (T, H, W, 3) with a fresh 64-bit id. Nothing is recorded until the MP4
        exists: call sign_and_register next."""
        from garrison.shield import watermark

        payload = watermark.new_payload()
        marked = watermark.embed(frames, payload, self.watermark_key(), self.watermark_config())
        return ProtectedClip(
            marked, fps, payload, prompt_sha256(prompt), model, request_id, watermark.psnr_db(frames, marked)
        )

    def sign_and_register(self, mp4_path: str | Path, protected: ProtectedClip) -> dict[str, Any]:
        """Sign the MP4 in place with C2PA, register its watermark id and fingerprint, audit the generation.

        Returns the `provenance` field of `garrison generate`.
        """
        from garrison.shield import c2pa as c2pa_mod

        mp4_path = Path(mp4_path)
        c2pa_mod.sign_mp4(
            mp4_path,
            mp4_path,
            model=protected.model,
            prompt_sha256=protected.prompt_sha256,
            watermark_payload_hex=protected.payload_hex,
            request_id=protected.request_id,
            identity=self.identity(),
        )
        fp = fingerprint(protected.frames)
        self.registry.register(
            protected.request_id, protected.payload_hex, fp, protected.model, protected.prompt_sha256
        )
        provenance = {
            "c2pa": "signed",
            "watermark": protected.payload_hex,
            "fingerprint": fp,
            "request_id": protected.request_id,
            "psnr_db": round(protected.psnr_db, 2),
        }
        self.audit.append(
            "generation",
            {"path": str(mp4_path), "model": protected.model, "prompt_sha256": protected.prompt_sha256, **provenance},
        )
        return provenance

    # -- verification ---------------------------------------------------------------------------------------------

    def verify_file(self, path: str | Path) -> dict[str, Any]:
        """What garrison knows about a file: content credentials, watermark, originating request.

        Never raises for bad input (not a video, truncated, empty, too large): the answer says so in `error`.
        """
        from garrison.shield import c2pa as c2pa_mod
        from garrison.shield import watermark

        path = Path(path)
        out: dict[str, Any] = {
            "file": str(path),
            "c2pa": "absent",
            "watermark": {"detected": False, "bit_accuracy": 0.0, "p_value": 1.0, "payload": None},
            "registry": {"match": False, "request_id": None},
        }
        try:
            verdict = c2pa_mod.verify_c2pa(path, self.identity().root_cert_pem) if path.is_file() else None
            if verdict is not None:
                out["c2pa"] = verdict.status
                out["manifest"] = c2pa_mod.manifest_summary(verdict)
            frames, _ = read_frames(path)
        except UnreadableVideo as e:
            out["error"] = str(e)
            self.audit.append("verification", {"file": path.name, "error": out["error"], "c2pa": out["c2pa"]})
            return out
        config = self.watermark_config()
        result = watermark.detect(frames, self.watermark_key(), config)
        out["watermark"] = result.to_dict()
        out["watermark"]["payload_source"] = "decoded" if result.detected else None
        fp = fingerprint(frames)
        # The registered clips that look like this one, scanned for once: the registry tests also look at their ids
        # alone (a short list), and the lookup below names a request by them when no watermark id does.
        neighbours = self.registry.neighbours(fp)

        def shortlist() -> list[int]:
            return neighbours.payloads(limit=config.registry_shortlist)

        if result.detected and self.registry.by_watermark(out["watermark"]["payload"]) is None:
            # Blind decoding read an id garrison never issued: the channel was weak (a dark clip re-encoded at CRF
            # 28). Decode again over the ids it did issue, with the chance of a wrong fit bounded.
            match = watermark.fit_registry(result, self.registry.payloads(), shortlist(), config)
            if match is not None:
                out["watermark"]["payload"] = watermark.payload_hex(match.payload)
                out["watermark"]["payload_source"] = "registry"
                out["watermark"]["payload_match_p_value"] = float(f"{match.p_value:.3g}")
        elif not result.detected and result.whole_frame is not None:
            # The pilots alone fell short: test the coded bits against the ids garrison issued.
            match = watermark.fit_registry(result, self.registry.payloads(), shortlist(), config)
            if match is not None:
                p_value = float(f"{match.p_value:.3g}")
                out["watermark"].update(
                    detected=True,
                    p_value=p_value,
                    payload=watermark.payload_hex(match.payload),
                    payload_source="registry",
                    payload_match_p_value=p_value,
                )
        match = self.registry.lookup(out["watermark"]["payload"], fp, neighbours)
        out["registry"] = match.to_dict()
        self.audit.append(
            "verification",
            {"file": path.name, "c2pa": out["c2pa"], "watermark": out["watermark"], "registry": out["registry"]},
        )
        return out


def default_shield() -> Shield:
    """The Shield rooted at $GARRISON_HOME (~/.garrison), one per home per process."""
    return _shield_for(str(garrison_home()))


@lru_cache(maxsize=8)
def _shield_for(home: str) -> Shield:
    return Shield(ShieldConfig(home=Path(home)))


def protect(frames: np.ndarray, fps: int, prompt: str, model: str, request_id: str) -> ProtectedClip:
    """Watermark frames with the default shield (see Shield.protect)."""
    return default_shield().protect(frames, fps, prompt, model, request_id)


def sign_and_register(mp4_path: str | Path, protected: ProtectedClip) -> dict[str, Any]:
    """Sign, register and audit an MP4 with the default shield (see Shield.sign_and_register)."""
    return default_shield().sign_and_register(mp4_path, protected)


def verify_file(path: str | Path) -> dict[str, Any]:
    """Verify a file with the default shield (see Shield.verify_file)."""
    return default_shield().verify_file(path)


def screen_prompt(prompt: str, request_id: str | None = None) -> PolicyDecision:
    """Policy decision for one prompt with the default shield, audited."""
    return default_shield().screen_prompt(prompt, request_id)
