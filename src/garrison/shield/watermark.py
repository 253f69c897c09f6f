"""Invisible watermark: a keyed spread-spectrum mark in luma that carries a 64-bit id and survives H.264.

Why hand-written: no package on PyPI offers a video watermark that carries a 64-bit id and runs offline with its
weights. invisible-watermark's classical image methods (no weights) do not survive H.264 on this project's clips:
DWT-DCT decodes at chance after a CRF 28 re-encode, and DWT-DCT-SVD keeps ~0.85 bit accuracy but recovers a whole
64-bit id in only about half the clips, and fails under a crop (benchmarks/shield_watermark.py measures both side by
side on the same clips and attacks). The learned RivaGAN model it bundles carries only 32 bits, needs onnxruntime
and frames of at least 256x256, and is not compared here.

How it works:

- Layout. The mark lives on a fixed ``grid x grid`` lattice of cells laid over the *normalised* frame (the whole
  frame is [0, 1] x [0, 1]), upsampled to the frame's size with bilinear hats. Because the lattice is tied to the
  frame and not to pixels, the same mark is read from a 64x64 clip, its 1280x720 upscale or a 0.5x downscale.
  Cells are large (about 3 px on a 64 px clip) so that H.264's quantiser, which discards fine texture first,
  leaves them in place.
- Spread spectrum. Each cell is one chip. Chips carry symbols: 140 bits of a rate-1/2, constraint-length-7
  convolutional code of the payload (64 bits + 6 tail bits), and ``pilot_symbols`` known pilot bits. A secret key
  sets which cells carry which symbol and multiplies each cell by a random sign, so without the key the pattern is
  white noise and cannot be read or forged.
- Time. The same pattern is added to every frame: H.264's inter prediction then carries it from frame to frame
  for free, and the detector pools evidence across frames with a per-pixel temporal median that ignores the
  moving object.
- Strength. ``strength`` is the luma change at a cell centre. Each of R, G and B moves by its share of it
  (``LUMA_DIRECTION``, the luma weights over their squared norm: green most, blue least), the change of pixels
  that moves luma most per unit of the RGB squared error PSNR counts: 0.746 of what the same delta on all three
  channels costs. The mark's chroma change is a side effect the detector ignores (it reads luma). Informed
  embedding (see `embed`) spends the whole budget of the PSNR floor on every clip: ``psnr_db`` (40.1 dB), measured
  after the clip at 0 and 255. On 72 of the built-in model's clips after CRF 28, the luma direction and the full
  budget (with ``min_cell_gain`` 1.3) took chip accuracy from 0.881 to 0.912 and payload recovery from 0.875 to
  0.972; the misses left are dark navy backgrounds, where R and G sit at 0 and the mark's negative half is clipped
  away.
- Detection. Each frame's luma is resampled to a working lattice, its local background (a median filter a few
  cells wide) subtracted, and the residuals pooled by temporal median. For each geometry hypothesis (no crop, or
  a crop keeping 80-95% of each axis at any offset) the chips are estimated by least squares against the bilinear
  hats. The pilot agreement count k of n gives a p-value from the binomial tail P[Bin(n, 1/2) >= k]: for an
  unmarked video the keyed pilot signs match its residual signs with probability 1/2 each, independently. Each
  hypothesis's tail is divided by its share of the budget (a weighted Bonferroni correction: half on the whole
  frame, half split over the 624 crops) and by nine tenths (the last tenth is `detect_in_registry`'s), and the
  smallest is the p-value, so the threshold ``false_positive_rate`` (default 1e-6) bounds the false-positive rate
  per clip of both tests together. Only then is the payload decoded by soft-decision Viterbi
  from the same hypothesis.
- Decoding against the registry. Blind Viterbi picks one of 2^64 ids; on the weakest channels (a dark clip after
  CRF 28, 0.77-0.81 of coded bits right, beyond what a rate-1/2 code corrects reliably) its path wanders off while
  the pilots still detect the mark. `garrison verify` then decodes again over the ids garrison issued
  (`match_payload`: the registered codeword that scores best, accepted when the chance that any other id scores
  as well, the exact tail of a random codeword's score (`codeword_score_tail`, counted on the code's trellis; the
  binomial tail understated it by hundreds to thousands of times near another id's codeword) times the ids
  compared, is under the same false-positive rate). The score is the sum of the soft values' magnitudes (quantised,
  `score_weights`) over the coded bits whose sign the codeword matches, the chips weighted by their pilots first: the
  likelihood test, where counting matching signs threw the magnitudes away (2026-11-27, the weakest true id among
  72 out-of-world clips after CRF 28: 5e-8 by signs, 7e-16 by score). Where even the pilots fall short (a 64x64
  2 s clip of a prompt outside the model's world), `detect_in_registry` tests the coded bits against the issued
  ids, with a tenth of the false-positive budget (`registry_alpha_share`). `fit_registry` runs whichever applies
  twice: over every issued id with half its budget, and over the few registered clips whose perceptual fingerprint
  is nearest this one's with the other half (for a clip the pilots missed, at every crop geometry). A lower-rate
  code, fewer pilots, larger cells or a closed loop through H.264 in the embedder did not do better (2026-11-26,
  144 model clips after CRF 28: rate 1/3 0.92-0.94 recovered, 64 pilots 0.95-0.97, a 16x16 grid 0.81-0.83, a codec
  loop 0.94, against 0.979).
- Small frames. What the mark cannot do: a clip 64 px on a side, downscaled to 32 px and re-encoded, keeps too
  little of it to decode blind (coded bits 0.78-0.97 right after the downscale alone, 0.50-0.63 after H.264 at CRF
  23 and 0.50-0.91 at CRF 18, three out-of-world model clips, 2026-11-27): 20 cells across 32 px are 1.6 px each,
  and the codec's error at that size is as large as the mark. Detector settings moved payload bit accuracy there by
  at most 0.008. Over 144 out-of-world clips after 0.5x, payload bit accuracy is 0.86 blind; `garrison verify`, whose
  registry tests need far fewer bits than a blind decode (they choose among the ids issued, not among 2^64), names
  the id of 0.875 and reads 0.94 of the bits (0.5 counted where it names none); on the model's world 0.96 blind and
  0.99 as verify reads it (benchmarks/shield_watermark_model_outputs.py, 2026-11-27).
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import median_filter, uniform_filter

# The binomial tail from scipy.special (bdtrc), not scipy.stats.binom: the same function (to 1e-12 relative), but
# importing scipy.stats maps ~44 MB more into every serving worker, which embeds and never detects.
from scipy.special import bdtrc

PAYLOAD_BITS = 64
# Rate-1/2 convolutional code, constraint length 7, the NASA/Voyager generators (free distance 10).
_K = 7
_GENERATORS = (0o133, 0o171)
_TAIL_BITS = _K - 1
CODED_BITS = 2 * (PAYLOAD_BITS + _TAIL_BITS)  # 140
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Per-channel change that moves luma by 1 at the least RGB mean squared error (what PSNR counts): w / |w|^2.
LUMA_DIRECTION = (LUMA_WEIGHTS / np.sum(LUMA_WEIGHTS.astype(np.float64) ** 2)).astype(np.float32)
# Its RGB MSE per squared luma change: 1 / (3 |w|^2) = 0.746 (the same change on R, G and B costs 1.0).
RGB_MSE_PER_LUMA = float(1.0 / (3.0 * np.sum(LUMA_WEIGHTS.astype(np.float64) ** 2)))


@dataclass(frozen=True)
class WatermarkConfig:
    """Watermark parameters; embedder and detector must agree on all but the detection knobs."""

    grid: int = 20  # cells per axis of the normalised frame: 400 chips
    strength: float = 3.0  # luma levels at a cell centre; the plain mark at 3.0 -> ~42.8 dB PSNR on a flat host
    pilot_symbols: int = 100  # known symbols: detection statistic and channel-accuracy estimate
    # detection only
    false_positive_rate: float = 1e-6  # per clip, after the Bonferroni correction over geometry hypotheses
    working_px_per_cell: int = 4  # resolution the detector works at
    # width of the median filter that estimates the local background, in cells. 4 (was 3): on 72 of the built-in
    # model's clips, bit accuracy after a 0.5x downscale 0.888 -> 0.924 (a wider filter leaves more of each
    # cell's mark in the residual once the downscale has blurred it); CRF 28 recovery 0.875 either way.
    background_cells: int = 4
    max_frames: int = 24  # the pattern is static, so a subsample of frames carries all the evidence
    # Share of the false-positive budget given to the whole-frame hypothesis; the crop hypotheses split the rest
    # (a weighted Bonferroni correction: the bound on false positives holds whatever the split). Most videos reach
    # the detector uncropped, and an even split over the 625 hypotheses asked 80 of 100 pilots right of each; half
    # the budget on the whole frame (and nine tenths of it to the pilots) asks 75 there, still 80 under a crop. On
    # 144 of the built-in model's clips after CRF 28, the one clip the pilots missed (0.77 read right) is detected.
    whole_frame_alpha_share: float = 0.5
    # Share of the false-positive budget kept for detection against the registry (`detect_in_registry`): the pilots'
    # test gets the rest, so a clip that either test flags is a false positive with probability at most
    # `false_positive_rate` whichever way it was flagged.
    registry_alpha_share: float = 0.1
    # Each registry test (`fit_registry`) gives this share of its budget to a second look over a shortlist: the
    # registered clips whose perceptual fingerprint is nearest the clip's (at most `registry_shortlist` of them),
    # and keeps the rest for the look over every registered id. A shortlist of a few ids is a Bonferroni factor of a
    # few instead of the registry's size: on 72 out-of-world model clips after CRF 28, recovered 0.958 -> 0.986.
    shortlist_alpha_fraction: float = 0.5
    registry_shortlist: int = 16
    # The registry tests score an id by the soft values' weights its codeword agrees with (`score_weights`, this many
    # levels; 0 counts agreeing signs) and read the chips weighted by their neighbourhood's pilots. On 72 model clips
    # of prompts outside its world after CRF 28, the weakest true id's tail went from 5e-8 (signs, unweighted) to
    # 8e-11 (scores) and 7e-16 (scores of pilot-weighted chips).
    registry_score_levels: int = 16
    registry_pilot_weighted: bool = True
    crop_scales: tuple[float, ...] = (0.95, 0.9, 0.85, 0.8)  # visible fraction per axis tried besides 1.0
    offset_step_cells: float = 0.5
    # Chips are clipped at this many times their median magnitude before decoding. 1.0, not 2.0: on the model's
    # outputs the wrong chips are mostly large ones (object edges, texture), so a tight limit takes their
    # confidence away (payload recovered on 72 model clips: 0.76 at 2.0, 0.85 at 1.0).
    soft_clip: float = 1.0
    # Before decoding, each chip is weighted by how the pilots within this many cells read (`_pilot_weighted_chips`);
    # 0 decodes the chips as they are.
    pilot_weight_cells: int = 9
    # embedding only: informed embedding (see `embed`); 0 iterations = the plain mark, the same amplitude everywhere
    informed_iterations: int = 2
    informed_frames: int = 8  # frames (evenly spaced) the embedder reads the host from: cost, not quality
    max_cell_gain: float = 3.0  # no cell gets more than this many times `strength`
    # Nor less: H.264 wipes out weak cells (the host's texture, which informed embedding leans on, survives CRF 28
    # far better than a weak mark does), and a flat host must keep a uniform mark. 1.3, was 0.8: on 72 model clips
    # after CRF 28, chip accuracy 0.889 -> 0.903 and payload recovered 0.90 -> 0.96 (with the luma direction);
    # 1.6 and 2.0 read no better.
    min_cell_gain: float = 1.3
    # Every clip's mark spends the PSNR floor's budget, measured after the clip at 0 and 255: an MSE of
    # 255^2 / 10^(psnr_db / 10). It was 1.4 times the plain mark's energy, which left 40.2-41 dB (more on small
    # frames, whose border cells are cut): on 72 of the built-in model's clips, spending it all is a chip
    # accuracy after CRF 28 of 0.903 -> 0.913. 40.1, not 40.0: the budget is fitted on `informed_frames` frames,
    # and the whole clip reads within 0.05 dB of them.
    psnr_db: float = 40.1
    # Luma levels by which black (white) pixels are lifted (lowered) so that the mark's other half survives the clip
    # at 0 (255); the detector's background subtraction removes the pedestal. Paid from the PSNR budget.
    pedestal: float = 2.0


@dataclass
class WatermarkResult:
    """What the detector found.

    Attributes:
        detected: p_value <= the configured false-positive rate.
        p_value: Bonferroni-corrected binomial tail probability of the pilot agreement under "not marked".
        bit_accuracy: fraction of pilot symbols read correctly: an unbiased estimate of the raw (pre-correction)
            bit accuracy of the channel; ~0.5 on unmarked video.
        payload: the 64-bit id, decoded only when detected, else None.
        pilot_matches, pilot_count: the binomial statistic behind p_value.
        geometry: the crop hypothesis that fit best: visible fraction and offset per axis (normalised units).
        frames_used: frames the detector pooled.
        error: why nothing could be read (no frames, wrong shape), else None.
    """

    detected: bool
    p_value: float
    bit_accuracy: float
    payload: int | None = None
    pilot_matches: int = 0
    pilot_count: int = 0
    geometry: dict[str, float] = field(default_factory=dict)
    frames_used: int = 0
    error: str | None = None
    # The received soft values of the coded bits at the geometry the pilots fit best, its chips weighted by their
    # pilots (`registry_pilot_weighted`), when detected: (140,) (for `match_payload`).
    coded_soft: np.ndarray | None = field(default=None, repr=False)
    # At the whole-frame hypothesis: every symbol's soft value (pilot-weighted chips when not detected), pilots read
    # right, pilots not erased (for `detect_in_registry`).
    whole_frame: tuple[np.ndarray, int, int] | None = field(default=None, repr=False)
    # When not detected: the coded bits' soft values (pilot-weighted chips) at every geometry hypothesis,
    # (ny, nx, 140), [0, 0] the whole frame (for `fit_registry`'s look over a fingerprint shortlist, which can afford
    # to try every crop).
    hypothesis_coded: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The fields `garrison verify` reports (payload as 16 hex digits)."""
        return {
            "detected": self.detected,
            "bit_accuracy": round(self.bit_accuracy, 4),
            "p_value": float(f"{self.p_value:.3g}"),
            "payload": payload_hex(self.payload) if self.payload is not None else None,
        }


def payload_hex(payload: int) -> str:
    return f"{payload:016x}"


def new_payload() -> int:
    """A fresh random 64-bit id for one generation."""
    return secrets.randbits(PAYLOAD_BITS)


# --- keys ----------------------------------------------------------------------------------------------------------


def default_key_path(home: str | Path | None = None) -> Path:
    base = Path(home) if home else Path(os.environ.get("GARRISON_HOME", Path.home() / ".garrison"))
    return base / "keys" / "watermark.key"


def load_or_create_key(path: str | Path | None = None) -> bytes:
    """The deployment's secret watermark key: 32 random bytes, created on first use (mode 0600).

    Every server that verifies a video must hold the same key; copy the file, or set GARRISON_WATERMARK_KEY
    (hex) to override.
    """
    env = os.environ.get("GARRISON_WATERMARK_KEY")
    if env:
        return bytes.fromhex(env)
    path = Path(path) if path else default_key_path()
    if path.is_file():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    try:
        os.link(tmp, path)  # atomic and refuses to overwrite: the first process to get here sets the key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


@dataclass(frozen=True)
class _Layout:
    """Where each symbol sits: chip -> symbol index, chip -> sign; the pilot symbols."""

    chip_symbol: np.ndarray  # (grid*grid,) int
    chip_sign: np.ndarray  # (grid*grid,) float +-1
    pilot: np.ndarray  # (pilot_symbols,) float +-1
    n_symbols: int
    symbol_chips: np.ndarray  # (n_symbols, max chips per symbol) chip indices; grid*grid marks "no chip"


@lru_cache(maxsize=16)
def _layout(key: bytes, grid: int, pilot_symbols: int) -> _Layout:
    seed = int.from_bytes(hashlib.sha256(b"garrison-watermark-v1|" + key).digest()[:16], "big")
    rng = np.random.default_rng(seed)
    n_chips = grid * grid
    n_symbols = CODED_BITS + pilot_symbols
    if n_chips < n_symbols:
        raise ValueError(f"grid {grid}x{grid} has {n_chips} chips, fewer than the {n_symbols} symbols to carry")
    perm = rng.permutation(n_chips)
    chip_symbol = np.empty(n_chips, dtype=np.int64)
    chip_symbol[perm] = np.arange(n_chips) % n_symbols  # each symbol on floor or ceil(n_chips / n_symbols) chips
    chip_sign = rng.choice(np.array([-1.0, 1.0]), size=n_chips)
    pilot = rng.choice(np.array([-1.0, 1.0]), size=pilot_symbols)
    per_symbol = -(-n_chips // n_symbols)
    symbol_chips = np.full((n_symbols, per_symbol), n_chips, dtype=np.int64)
    fill = np.zeros(n_symbols, dtype=np.int64)
    for chip, sym in enumerate(chip_symbol):
        symbol_chips[sym, fill[sym]] = chip
        fill[sym] += 1
    return _Layout(chip_symbol, chip_sign, pilot, n_symbols, symbol_chips)


# --- the error-correcting code -------------------------------------------------------------------------------------


def _parity(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    out = np.zeros_like(x)
    while np.any(x):
        out ^= x & 1
        x >>= 1
    return out


@lru_cache(maxsize=1)
def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """For each (state, input bit): next state, and the two coded bits as +-1."""
    states = np.arange(1 << (_K - 1))
    next_state = np.zeros((len(states), 2), dtype=np.int64)
    outputs = np.zeros((len(states), 2, 2), dtype=np.float64)
    for bit in (0, 1):
        register = (bit << (_K - 1)) | states  # newest bit in the top position
        next_state[:, bit] = register >> 1
        for g, gen in enumerate(_GENERATORS):
            # generator taps are written oldest..newest in octal convention: reverse to match the register order
            taps = int(f"{gen:0{_K}b}"[::-1], 2)
            outputs[:, bit, g] = 1.0 - 2.0 * _parity(register & taps)
    return next_state, outputs


@lru_cache(maxsize=1)
def _trellis_edges() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (state, input bit) edge of the trellis as flat arrays: source state, input bit, destination state."""
    next_state, _ = _trellis()
    n_states = next_state.shape[0]
    src = np.repeat(np.arange(n_states), 2)
    bit = np.tile(np.array([0, 1]), n_states)
    return src, bit, next_state[src, bit]


def encode_bits(payload: int) -> np.ndarray:
    """The 140 coded bits of a 64-bit payload, as +-1 (bit 0 -> +1)."""
    if not 0 <= payload < (1 << PAYLOAD_BITS):
        raise ValueError(f"payload must be a {PAYLOAD_BITS}-bit unsigned integer")
    bits = [(payload >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)] + [0] * _TAIL_BITS
    next_state, outputs = _trellis()
    state, out = 0, []
    for b in bits:
        out.extend(outputs[state, b])
        state = next_state[state, b]
    return np.asarray(out)


@lru_cache(maxsize=1)
def _generator_matrix() -> np.ndarray:
    """(64, 140) float32 of 0/1: the coded bits of each single-bit payload. The code is linear over GF(2) and its tail is
    zeros, so any payload's coded bits are the XOR of the rows of its set bits."""
    return np.stack([encode_bits(1 << (PAYLOAD_BITS - 1 - j)) < 0 for j in range(PAYLOAD_BITS)]).astype(np.float32)


def encode_many(payloads: np.ndarray) -> np.ndarray:
    """Coded bits of many 64-bit payloads at once (uint64 array), as +-1 float32: (n, 140)."""
    payloads = np.asarray(payloads, dtype=np.uint64).reshape(-1)
    bytes_msb_first = payloads.astype(">u8").view(np.uint8).reshape(-1, 8)
    bits = np.unpackbits(bytes_msb_first, axis=1).astype(np.float32)  # (n, 64), MSB first
    ones = bits @ _generator_matrix()  # exact: sums of at most 64 ones
    parity = ones.astype(np.uint8) & 1  # (a float modulo is 5x slower than the matrix product)
    return (1.0 - 2.0 * parity).astype(np.float32)


def viterbi_decode(soft: np.ndarray) -> int:
    """Soft-decision maximum-likelihood decoding of 140 coded values (positive means bit 0; 0 means erased)."""
    next_state, outputs = _trellis()
    n_states = next_state.shape[0]
    steps = len(soft) // 2
    metric = np.full(n_states, -np.inf)
    metric[0] = 0.0
    back_state = np.zeros((steps, n_states), dtype=np.int64)
    back_bit = np.zeros((steps, n_states), dtype=np.int64)
    src, bit, dst = _trellis_edges()
    for t in range(steps):
        pair = soft[2 * t : 2 * t + 2]
        gain = metric[src] + outputs[src, bit] @ pair  # correlation metric: ML for Gaussian noise
        if t >= steps - _TAIL_BITS:
            gain = np.where(bit == 0, gain, -np.inf)  # the tail is known to be zeros
        new = np.full(n_states, -np.inf)
        order = np.argsort(gain, kind="stable")  # later writes win: keep the best path into each state
        new[dst[order]] = gain[order]
        back_state[t, dst[order]] = src[order]
        back_bit[t, dst[order]] = bit[order]
        metric = new
    state = int(np.argmax(metric))
    bits = []
    for t in range(steps - 1, -1, -1):
        bits.append(int(back_bit[t, state]))
        state = int(back_state[t, state])
    bits = bits[::-1][:PAYLOAD_BITS]
    return int("".join(map(str, bits)), 2)


def codeword_agreement_tail(soft: np.ndarray, agreement: int) -> float:
    """P[a uniformly random id's codeword agrees with the signs of `soft` (140,) on at least `agreement` coded bits],
    exactly: the trellis counts every one of the 2^64 codewords by its agreement (0 = erased, never agrees).

    Not the binomial tail P[Bin(n, 1/2) >= k]: each coded bit of a random id is a fair coin, but the 140 bits are
    linear functions of 64, and the codewords cluster. When the received signs are close to a codeword (a clip
    marked with an id the registry does not hold), the codewords near that one (660 at distance 10) make agreement
    far likelier than the binomial says: for exactly a codeword received, 112 of 140 agreeing has probability
    9.9e-11 here against 2.1e-13 by the binomial (470 times), and 114-115, what a 100,000-id registry asks at 1e-6,
    1,300-1,600 times (2026-11-27; a Monte Carlo over 4 million random ids agrees with this count).
    """
    signs = np.sign(np.asarray(soft, dtype=np.float64))
    if signs.shape != (CODED_BITS,):
        raise ValueError(f"need {CODED_BITS} soft values, got shape {signs.shape}")
    return codeword_score_tail(signs.astype(np.int64), agreement)


def score_weights(soft: np.ndarray, levels: int) -> np.ndarray:
    """Integer weights with the signs of `soft` (140,): |soft| in units of its 90th percentile, times `levels`,
    rounded and capped at `levels` (0 marks an erasure). `levels` 0: the signs alone (every bit weighs 1).

    For a Gaussian channel the log-likelihood ratio of a bit is proportional to its soft value, so the score
    sum_i w_i [codeword bit i agrees] with w_i ~ |soft_i| is the likelihood test, where the count of agreeing signs
    throws the magnitudes away (about 2 dB of signal-to-noise ratio on that channel). Integers, so that
    `codeword_score_tail` can count the codewords by score exactly.
    """
    soft = np.asarray(soft, dtype=np.float64)
    signs = np.sign(soft).astype(np.int64)
    if levels <= 0:
        return signs
    magnitude = np.abs(soft)
    nonzero = magnitude[magnitude > 0]
    if nonzero.size == 0:
        return signs
    unit = float(np.quantile(nonzero, 0.9)) / levels
    return np.minimum(np.rint(magnitude / unit), levels).astype(np.int64) * signs


def codeword_score(weights: np.ndarray, words: np.ndarray) -> np.ndarray:
    """sum_i |w_i| [word bit i == sign w_i] for each +-1 codeword row of `words` (n, 140): the score whose tail
    `codeword_score_tail` gives. As a correlation, (sum |w| + words @ w) / 2, exact in float32 for these sizes."""
    w = np.asarray(weights)
    return np.rint((np.abs(w).sum() + words @ w.astype(np.float32)) / 2).astype(np.int64)


def codeword_score_tail(weights: np.ndarray, score: int) -> float:
    """P[a uniformly random id's codeword scores at least `score` against the integer weights (140,)
    (`codeword_score`)], exactly: the trellis counts all 2^64 codewords by their score, a dynamic programme over
    (state, score so far). With weights of +-1 it is `codeword_agreement_tail`.

    Valid for any weights computed from the received clip alone (soft magnitudes, the pilots' local channel
    estimate): an id that did not make the clip is a uniformly random codeword, independent of them.
    """
    weights = np.asarray(weights, dtype=np.int64)
    if weights.shape != (CODED_BITS,):
        raise ValueError(f"need {CODED_BITS} weights, got shape {weights.shape}")
    magnitude, signs = np.abs(weights), np.sign(weights)
    top = int(magnitude.sum())
    if score <= 0:
        return 1.0
    if score > top:
        return 0.0
    next_state, outputs = _trellis()
    src, bit, dst = _trellis_edges()
    first = np.zeros(len(dst), dtype=bool)
    first[np.unique(dst, return_index=True)[1]] = True  # one incoming edge of each state
    counts = np.zeros((next_state.shape[0], top + 1))
    counts[0, 0] = 1.0
    steps = CODED_BITS // 2
    for t in range(steps):
        # score each edge adds: the weights of the two coded bits it agrees on (erased bits, sign 0, never agree)
        gain = ((outputs[src, bit] == signs[2 * t : 2 * t + 2]) * magnitude[2 * t : 2 * t + 2]).sum(-1)
        keep = (bit == 0) | (t < steps - _TAIL_BITS)  # the tail is zeros
        new = np.zeros_like(counts)
        # Each state has two incoming edges; within `first` (or its complement) every destination appears once,
        # so a plain fancy-index add is exact (no np.add.at), over at most four distinct gains.
        for half in (first, ~first):
            for g in np.unique(gain[half & keep]):
                edges = half & keep & (gain == g)
                new[dst[edges], g:] += counts[src[edges], : top + 1 - g]
        counts = new
    total = counts[0].sum()  # 2^64
    return float(counts[0, score:].sum() / total)


# --- embedding -----------------------------------------------------------------------------------------------------


def _hat_matrix(n_px: int, grid: int, start: float = 0.0, extent: float = 1.0) -> np.ndarray:
    """(n_px, grid) bilinear weights of each cell's hat at pixel centres.

    Pixel centres span [start, start + extent] of the original normalised axis (a crop); cells whose centre is
    outside the frame still contribute through their hats' edges. Pixels outside [0, 1] get no weight.
    """
    u = start + (np.arange(n_px) + 0.5) / n_px * extent  # original normalised coordinate of each pixel centre
    c = u * grid - 0.5  # in cell-centre units
    inside = (u >= 0) & (u <= 1)
    c = np.clip(c, 0, grid - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, grid - 1)
    t = c - i0
    m = np.zeros((n_px, grid))
    rows = np.arange(n_px)
    np.add.at(m, (rows, i0), (1 - t) * inside)
    np.add.at(m, (rows, i1), t * inside)
    return m


@lru_cache(maxsize=32)
def _pattern(key: bytes, payload: int, height: int, width: int, config: WatermarkConfig) -> np.ndarray:
    """The (H, W) float32 luma delta for one key, payload and frame size."""
    layout = _layout(key, config.grid, config.pilot_symbols)
    symbols = np.concatenate([encode_bits(payload), layout.pilot])
    chips = (symbols[layout.chip_symbol] * layout.chip_sign).reshape(config.grid, config.grid)
    hy, hx = _hat_matrix(height, config.grid), _hat_matrix(width, config.grid)
    return (config.strength * (hy @ chips @ hx.T)).astype(np.float32)


def _target_chips(key: bytes, payload: int, config: WatermarkConfig) -> np.ndarray:
    """The sign (+1/-1) each cell must read as: its symbol times its keyed sign, (grid, grid)."""
    layout = _layout(key, config.grid, config.pilot_symbols)
    symbols = np.concatenate([encode_bits(payload), layout.pilot])
    return (symbols[layout.chip_symbol] * layout.chip_sign).reshape(config.grid, config.grid).astype(np.float64)


def _identity_chips(frames: np.ndarray, config: WatermarkConfig) -> np.ndarray:
    """What the detector reads per cell on an uncropped frame, before its soft limiter: (grid, grid)."""
    hyps, proj = _projections(config)
    p0 = proj[0]  # hypothesis 0 is the whole frame
    return _highpass_chips(p0 @ _residual(frames, config).astype(np.float64) @ p0.T)


def _marked(frames: np.ndarray, amplitudes: np.ndarray, lift: np.ndarray | None = None) -> np.ndarray:
    t, h, w, _ = frames.shape
    grid = amplitudes.shape[0]
    luma = _hat_matrix(h, grid) @ amplitudes @ _hat_matrix(w, grid).T
    # Each channel moves by its share of the luma change (LUMA_DIRECTION): luma moves by `luma` at 0.746 of the RGB
    # squared error of the same delta on R, G and B. Integer frames plus a rounded delta: a quarter of the memory
    # traffic of float32.
    out = frames.astype(np.int16)
    out += np.rint(luma[:, :, None] * LUMA_DIRECTION).astype(np.int16)[None]
    if lift is not None:
        out += lift[..., None]
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def _lift(frames: np.ndarray, pedestal: float) -> np.ndarray | None:
    """(T, H, W) int16 luma lift: pixels near black up, pixels near white down, by up to `pedestal` levels.

    On a saturated host the clip cuts half the mark away, and what is left (max(mark, 0) on black) reads through the
    detector's medians with interference of its own that more amplitude does not remove (pilot accuracy stays at
    ~0.90 on a black host, against 0.98 on grey). A pedestal is smooth wherever the host is flat, so the detector's
    local-background subtraction removes it; the same lift on R, G and B leaves chroma alone. None: nothing to lift.
    """
    p = int(round(pedestal))
    if p <= 0:
        return None
    r, g, b = frames[..., 0], frames[..., 1], frames[..., 2]  # min/max of 3 planes: far faster than a reduce
    lo, hi = np.minimum(np.minimum(r, g), b), np.maximum(np.maximum(r, g), b)
    up = p - np.minimum(lo, p).astype(np.int16)
    down = np.maximum(hi, 255 - p).astype(np.int16) - (255 - p)
    lift = up - down
    return lift if lift.any() else None


def embed(frames: np.ndarray, payload: int, key: bytes, config: WatermarkConfig | None = None) -> np.ndarray:
    """Return marked copies of uint8 RGB frames (T, H, W, 3) carrying `payload`.

    Informed embedding (after Malvar and Florencio's improved spread spectrum): the embedder knows the host clip, so
    it reads the cells as the detector will and spends the mark's energy where the host works against it. Each
    cell's amplitude is (margin - host reading along the cell's sign) / detector gain, clipped to
    [min_cell_gain, max_cell_gain] x strength, with the margin chosen so that the mark's mean squared change of the
    pixels, measured after the clip at 0 and 255, is the MSE of the PSNR floor (`psnr_db`), then fitted to it by a
    few scalings. Cells
    the host already reads right keep the floor (H.264 wipes out weaker cells); cells it reads wrong get more;
    hopeless cells are left to the error-correcting code. A few closed-loop passes then measure the marked clip and
    correct what the detector's non-linear steps (medians, clipping) changed.

    Clipping: the built-in model draws most backgrounds black, where the clip at 0 cuts the mark's negative half
    away. The budget counts only what survives, so the surviving half gets the whole budget; and a second candidate
    lifts near-black (lowers near-white) pixels by a `pedestal` first, kept when the detector then reads more cells
    right (on a flat black host it does: 0.98 against 0.90; on the model's textured near-black it mostly does not).
    The detector is unchanged and blind: it needs only the key.
    """
    config = config or WatermarkConfig()
    _check_frames(frames)
    target = _target_chips(key, payload, config)
    plain = config.strength * target
    if config.informed_iterations <= 0:
        return _marked(frames, plain)
    idx = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), config.informed_frames)).round().astype(int))
    original = frames[idx]  # the host as the detector's temporal median sees it, from a few frames
    gain = float(np.median(_identity_chips(_marked(np.full_like(frames[:1], 128), plain), config) * target))
    gain = max(gain / config.strength, 1e-6)  # detector reading per luma level of cell amplitude
    cap = config.max_cell_gain * config.strength
    floor = config.min_cell_gain * config.strength
    hy, hx = _hat_matrix(frames.shape[1], config.grid), _hat_matrix(frames.shape[2], config.grid)

    # Mean squared luma change (what PSNR sees) of amplitudes a: mean((Hy a Hx^T)^2) = sum((Gy a Gx) * a) / (H W)
    # with the Gram matrices G = H^T H, so the bisection below works on grid x grid matrices, not on frames.
    gram_y, gram_x = hy.T @ hy, hx.T @ hx
    n_px = hy.shape[0] * hx.shape[0]

    def pixel_energy(a: np.ndarray) -> float:
        return RGB_MSE_PER_LUMA * float(np.sum((gram_y @ a @ gram_x) * a) / n_px)

    def clipped_energy(marked: np.ndarray) -> float:
        # What PSNR sees, pedestal included: on black or white the clip at 0/255 cuts half the mark away, and that
        # half costs nothing.
        diff = marked.astype(np.int16) - original
        return float(np.mean(diff * diff, dtype=np.float64))

    budget = 255.0**2 * 10 ** (-config.psnr_db / 10)  # the MSE of the PSNR floor

    def fit(sample: np.ndarray, amplitudes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scale amplitudes until the clipped energy on `sample` is within 97-100% of the budget.

        The bisection's energy was measured on the amplitudes before the last pass, and clipping at 0 and 255 is not
        linear: a few scalings (up to the cell cap, or down) put the PSNR at the floor's margin on any host.
        """
        for _ in range(5):
            marked_sample = _marked(sample, amplitudes)
            energy = clipped_energy(marked_sample)
            if 0.97 * budget <= energy <= budget:
                return amplitudes, marked_sample
            scaled = amplitudes * (0.99 * math.sqrt(budget / max(energy, 1e-9)))
            amplitudes = np.clip(scaled, -cap, cap) if energy < budget else scaled
        marked_sample = _marked(sample, amplitudes)
        energy = clipped_energy(marked_sample)
        if energy > budget:  # never over the floor
            amplitudes = amplitudes * (0.99 * math.sqrt(budget / energy))
            marked_sample = _marked(sample, amplitudes)
        return amplitudes, marked_sample

    def informed(sample: np.ndarray) -> tuple[np.ndarray, float]:
        """Amplitudes for one (possibly lifted) host, and the share of cells the detector then reads right."""
        host = _identity_chips(sample, config) * target  # > 0: the host already reads this cell right
        amplitudes = plain
        # Actual (clipped) energy over the Gram energy of the amplitudes that produced it: < 1 where the host
        # saturates, > 1 with a pedestal.
        survive = clipped_energy(_marked(sample, plain)) / pixel_energy(plain)
        for _ in range(config.informed_iterations):
            # The bisection spends `budget` of *clipped* energy: on a saturated host the surviving half of the mark
            # gets the whole budget (the cells' other side is cut off at 0 or 255 and costs nothing).
            target_energy = budget / max(survive, 0.25)
            lo, hi = float(min(host.min(), 0.0)), float(host.max() + gain * cap)  # lo: every cell at the floor
            for _ in range(40):  # bisection: the margin that spends exactly the energy budget
                margin = (lo + hi) / 2
                a = np.clip((margin - host) / gain, floor, cap) * target
                lo, hi = (margin, hi) if pixel_energy(a) < target_energy else (lo, margin)
            amplitudes = np.clip((lo - host) / gain, floor, cap) * target
            marked_sample = _marked(sample, amplitudes)
            survive = clipped_energy(marked_sample) / max(pixel_energy(amplitudes), 1e-9)
            # Closed loop: what the detector now reads, minus what the mark alone should add, is the host as the
            # detector sees it through the mark (medians and clipping are not linear).
            reading = _identity_chips(marked_sample, config) * target
            host = reading - gain * np.abs(amplitudes)
        amplitudes, marked_sample = fit(sample, amplitudes)
        return amplitudes, float(np.mean(_identity_chips(marked_sample, config) * target > 0))

    amplitudes, right = informed(original)
    lift = _lift(original, config.pedestal)
    chosen_lift = None
    # A pedestal pays off on a flat saturated host (a black background: pilots 0.90 -> 0.98 read right before H.264)
    # and costs energy the mark needs on a textured one: keep it only where the detector reads better, and do not
    # try it (half the embedding time) where under a tenth of the pixels are near 0 or 255.
    # A pedestal that alone spends the budget leaves nothing for the mark.
    if lift is not None and np.count_nonzero(lift) >= 0.1 * lift.size and config.pedestal**2 < budget:
        lifted_amplitudes, lifted_right = informed(_marked(original, np.zeros_like(plain), lift))
        if lifted_right > right:
            amplitudes, chosen_lift = lifted_amplitudes, _lift(frames, config.pedestal)
    return _marked(frames, amplitudes, chosen_lift)


def psnr_db(original: np.ndarray, marked: np.ndarray) -> float:
    mse = float(np.mean((original.astype(np.float64) - marked.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


# --- detection -----------------------------------------------------------------------------------------------------


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(
            f"frames must be a uint8 array (T, H, W, 3), got {getattr(frames, 'dtype', type(frames))} {shape}"
        )
    if frames.shape[0] == 0 or frames.shape[1] < 2 or frames.shape[2] < 2:
        raise ValueError(f"frames must hold at least one frame of 2x2 pixels, got {frames.shape}")


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) area-average when shrinking, linear interpolation when enlarging."""
    if n_out <= n_in:
        edges = np.linspace(0, n_in, n_out + 1)
        lo, hi = edges[:-1, None], edges[1:, None]
        px = np.arange(n_in)[None, :]
        overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None)
        return overlap / overlap.sum(1, keepdims=True)
    c = np.clip((np.arange(n_out) + 0.5) / n_out * n_in - 0.5, 0, n_in - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = c - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1 - t)
    np.add.at(m, (np.arange(n_out), i1), t)
    return m


def _residual(frames: np.ndarray, config: WatermarkConfig) -> np.ndarray:
    """Pooled luma residual at the working resolution: background removed per frame, temporal median over frames."""
    n = frames.shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(n, config.max_frames)).round().astype(np.int64))
    luma = frames[idx].astype(np.float32) @ LUMA_WEIGHTS  # (T, H, W)
    side = config.grid * config.working_px_per_cell
    ry = _resample_matrix(luma.shape[1], side).astype(np.float32)
    rx = _resample_matrix(luma.shape[2], side).astype(np.float32)
    work = ry @ luma @ rx.T  # (T, side, side)
    size = config.background_cells * config.working_px_per_cell + 1
    # Separable median (rows, then columns): keeps the object's edges like a square median at a fraction of the cost.
    background = median_filter(
        median_filter(work, size=(1, 1, size), mode="nearest"), size=(1, size, 1), mode="nearest"
    )
    return np.median(work - background, axis=0)


def _axis_hypotheses(config: WatermarkConfig) -> list[tuple[float, float]]:
    """(visible fraction, offset) pairs for one axis: the whole axis, and crops at every offset step."""
    out = [(1.0, 0.0)]
    step = config.offset_step_cells / config.grid
    for scale in config.crop_scales:
        n = int(math.floor((1.0 - scale) / step + 1e-9))
        out.extend((scale, k * step) for k in range(n + 1))
    return out


@lru_cache(maxsize=8)
def _projections(config: WatermarkConfig) -> tuple[list[tuple[float, float]], np.ndarray]:
    """Least-squares chip estimators (grid, side) for each axis hypothesis, stacked: (n_hyp, grid, side)."""
    side = config.grid * config.working_px_per_cell
    hyps = _axis_hypotheses(config)
    mats = []
    for scale, offset in hyps:
        hat = _hat_matrix(side, config.grid, start=offset, extent=scale)
        visible = hat.sum(0) > 0.25  # cells with too little area in view are erasures, not guesses
        proj = np.zeros((config.grid, side))
        proj[visible] = np.linalg.pinv(hat[:, visible])
        mats.append(proj)
    return hyps, np.stack(mats)


def _highpass_chips(chips: np.ndarray) -> np.ndarray:
    """Subtract each chip's 5x5 neighbourhood mean (centre excluded): removes host gradients at cell scale."""
    size = (1,) * (chips.ndim - 2) + (5, 5)
    neighbourhood = uniform_filter(chips, size=size, mode="reflect") * 25.0 - chips
    return chips - neighbourhood / 24.0


def _symbol_values(chips: np.ndarray, layout: _Layout) -> np.ndarray:
    """Combine chips into symbol soft values: (..., grid*grid) -> (..., n_symbols)."""
    flat = chips.reshape(*chips.shape[:-2], -1) * layout.chip_sign
    flat = np.concatenate([flat, np.zeros((*flat.shape[:-1], 1))], axis=-1)  # the "no chip" slot reads 0
    return flat[..., layout.symbol_chips].sum(-1)


@dataclass
class _Analysis:
    symbols: np.ndarray  # (ny, nx, n_symbols) soft values per pair of axis hypotheses
    matches: np.ndarray  # (ny, nx) pilot symbols read correctly
    counted: np.ndarray  # (ny, nx) pilot symbols not erased
    hyps: list[tuple[float, float]]
    chips: np.ndarray  # (ny, nx, grid, grid) the limited chips the symbols were summed from
    layout: _Layout


def _analyse(frames: np.ndarray, key: bytes, config: WatermarkConfig) -> _Analysis:
    layout = _layout(key, config.grid, config.pilot_symbols)
    residual = _residual(frames, config)
    hyps, proj = _projections(config)
    # chips[i, j] = P[i] @ residual @ P[j].T for every pair of axis hypotheses (y: i, x: j), as one matrix product
    n, g, side = proj.shape
    rows = (proj @ residual).reshape(n * g, side)
    chips = (rows @ proj.reshape(n * g, side).T).reshape(n, g, n, g).transpose(0, 2, 1, 3)
    chips = _highpass_chips(np.ascontiguousarray(chips))
    # Soft limiter: a chip at a moving edge can be far larger than the mark and of either sign; clipping each
    # hypothesis's chips at a few times their median magnitude keeps such outliers from outvoting the rest.
    scale = np.median(np.abs(chips), axis=(-2, -1), keepdims=True) + 1e-9
    chips = np.clip(chips / scale, -config.soft_clip, config.soft_clip)
    symbols = _symbol_values(chips, layout)
    pilot_values = symbols[..., CODED_BITS:]
    matches = ((np.sign(pilot_values) == layout.pilot) & (pilot_values != 0)).sum(-1)
    return _Analysis(symbols, matches, (pilot_values != 0).sum(-1), hyps, chips, layout)


def _pilot_map(layout: _Layout, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Per chip: the sign a marked pilot chip reads (0 on data chips), and 1.0 on pilot chips: (grid, grid) each."""
    symbol = layout.chip_symbol.reshape(grid, grid)
    is_pilot = symbol >= CODED_BITS
    expected = np.zeros((grid, grid))
    expected[is_pilot] = layout.pilot[symbol[is_pilot] - CODED_BITS] * layout.chip_sign.reshape(grid, grid)[is_pilot]
    return expected, is_pilot.astype(np.float64)


def _pilot_weighted_chips(chips: np.ndarray, expected: np.ndarray, is_pilot: np.ndarray, window: int) -> np.ndarray:
    """Chips weighted by how well the pilot chips around each one read: a local channel estimate.

    The channel is not the same across the frame: H.264 keeps the mark on a textured or mid-grey patch and wipes it
    out on flat black, and an object moving over a patch hides it. The pilots say where: each chip is weighted by the
    log-odds of the pilot chips in a ``window`` x ``window`` neighbourhood reading right (Laplace-smoothed, floored at
    0, so a patch where the pilots read at chance carries no vote), which is the soft-decision weight of a binary
    symmetric channel with that crossover probability. Detection (the pilot count) is untouched; only the soft values
    the decoder sees change. On 144 of the built-in model's clips after CRF 28, blind recovery 141 -> 142, and on 72
    clips of prompts outside its world 57 -> 59, and bit accuracy after 0.5x 0.947 -> 0.958 and 0.840 -> 0.859
    (benchmarks/shield_watermark_model_outputs.py, 2026-11-27, AVX2 EPYC host; a 9-cell window: 5 and 7 read no better).
    """
    size = (1,) * (chips.ndim - 2) + (window, window)  # any leading axes are hypotheses, filtered apart
    right = uniform_filter(((chips * expected) > 0) * is_pilot, size, mode="constant")
    total = uniform_filter(np.broadcast_to(is_pilot, chips.shape), size, mode="constant")
    cells = float(window * window)
    accuracy = (right * cells + 1.0) / (total * cells + 2.0)
    return chips * np.maximum(np.log(accuracy / (1.0 - accuracy)), 0.0)


def _candidate_soft(a: _Analysis, config: WatermarkConfig, candidates: int = 8, weighted: bool = True) -> np.ndarray:
    """The coded bits' soft values at the few geometries whose pilots fit best, best first: (candidates, 140),
    each chip weighted by its neighbourhood's pilots when `weighted` and `config.pilot_weight_cells` is set."""
    order = np.argsort(-a.matches, axis=None, kind="stable")[:candidates]
    where = [np.unravel_index(int(flat), a.matches.shape) for flat in order]
    if not (weighted and config.pilot_weight_cells):
        return np.stack([a.symbols[iy, ix, :CODED_BITS] for iy, ix in where])
    expected, is_pilot = _pilot_map(a.layout, a.chips.shape[-1])
    return np.stack(
        [
            _symbol_values(
                _pilot_weighted_chips(a.chips[iy, ix], expected, is_pilot, config.pilot_weight_cells), a.layout
            )[:CODED_BITS]
            for iy, ix in where
        ]
    )


def _best_payload(candidate_soft: np.ndarray) -> int:
    """Decode the payload at each candidate geometry (`_candidate_soft`); keep the decode whose codeword agrees most
    with the received soft values (near-identical crop hypotheses differ little in pilots but a lot in data)."""
    best, best_score = 0, -np.inf
    for soft in candidate_soft:
        payload = viterbi_decode(soft)
        score = float(encode_bits(payload) @ soft) / (np.linalg.norm(soft) + 1e-9)
        if score > best_score:
            best, best_score = payload, score
    return best


def detect(frames: np.ndarray, key: bytes, config: WatermarkConfig | None = None) -> WatermarkResult:
    """Look for the watermark of `key` in uint8 RGB frames (T, H, W, 3) of any size."""
    config = config or WatermarkConfig()
    try:
        _check_frames(frames)
    except ValueError as e:
        return WatermarkResult(False, 1.0, 0.0, error=str(e))
    a = _analyse(frames, key, config)
    tail = bdtrc(a.matches - 1, a.counted, 0.5)  # P[Bin(n, 1/2) > k - 1] = P[Bin(n, 1/2) >= k] per hypothesis
    corrected = _bonferroni(tail, config.whole_frame_alpha_share) / (1.0 - config.registry_alpha_share)
    iy, ix = np.unravel_index(int(np.argmin(corrected)), tail.shape)
    p_value = float(min(1.0, corrected[iy, ix]))
    k, n = int(a.matches[iy, ix]), int(a.counted[iy, ix])
    detected = p_value <= config.false_positive_rate
    candidate_soft = _candidate_soft(a, config) if detected else None
    registry_symbols = a.symbols
    if not detected and config.registry_pilot_weighted and config.pilot_weight_cells:
        expected, is_pilot = _pilot_map(a.layout, a.chips.shape[-1])
        weighted = _pilot_weighted_chips(a.chips, expected, is_pilot, config.pilot_weight_cells)
        registry_symbols = _symbol_values(weighted, a.layout)
    return WatermarkResult(
        detected=detected,
        p_value=p_value,
        bit_accuracy=k / n if n else 0.0,
        payload=_best_payload(candidate_soft) if candidate_soft is not None else None,
        pilot_matches=k,
        pilot_count=n,
        geometry={
            "scale_y": a.hyps[iy][0],
            "offset_y": a.hyps[iy][1],
            "scale_x": a.hyps[ix][0],
            "offset_x": a.hyps[ix][1],
        },
        frames_used=min(frames.shape[0], config.max_frames),
        coded_soft=_candidate_soft(a, config, 1, weighted=config.registry_pilot_weighted)[0] if detected else None,
        whole_frame=(registry_symbols[0, 0], int(a.matches[0, 0]), int(a.counted[0, 0])),
        hypothesis_coded=None if detected else registry_symbols[..., :CODED_BITS].astype(np.float32),
    )


def _bonferroni(tail: np.ndarray, whole_frame_share: float) -> np.ndarray:
    """Each hypothesis's tail probability divided by its share of the false-positive budget (hypothesis [0, 0] is
    the whole frame): under "not marked", P[min <= alpha] <= sum of the shares times alpha = alpha."""
    if whole_frame_share <= 0 or tail.size == 1:
        return tail * tail.size
    corrected = tail * ((tail.size - 1) / (1.0 - whole_frame_share))
    corrected[0, 0] = tail[0, 0] / whole_frame_share
    return corrected


@dataclass(frozen=True)
class PayloadMatch:
    """The registered id whose codeword best fits a detected mark, and how surely.

    Attributes:
        payload: the id.
        agreement, compared: coded bits whose received sign agrees with its codeword, of those not erased (a soft
            value that `score_weights` rounds to weight 0 counts as erased).
        p_value: P[a random id's codeword scores at least as well] (`codeword_score_tail`, exact for the received
            soft values) times the ids compared (Bonferroni): the chance that an id which did not make this video
            fits it as well. Ids are drawn uniformly at random (`new_payload`), so another id's codeword is a
            uniformly random codeword, whatever the received values are.
    """

    payload: int
    agreement: int
    compared: int
    p_value: float


def _registry_match(
    soft: np.ndarray, candidates: Any, config: WatermarkConfig, alpha_share: float, chunk: int
) -> PayloadMatch | None:
    """The candidate whose codeword scores best against `soft` (140,) (`score_weights`, `codeword_score`), if the
    chance a random codeword scores as well times the ids compared, over `alpha_share` of the budget, is at most the
    false-positive rate."""
    weights = score_weights(soft, config.registry_score_levels)
    soft = weights.astype(np.float32)  # the best-correlating codeword is the best-scoring one
    best: tuple[float, int] | None = None
    total = 0
    batch: list[int] = []

    def scan(ids: np.ndarray) -> None:
        nonlocal best, total
        corr = encode_many(ids) @ soft
        i = int(np.argmax(corr))
        if best is None or corr[i] > best[0]:
            best = (float(corr[i]), int(ids[i]))
        total += len(ids)

    for payload in candidates:
        batch.append(int(payload))
        if len(batch) == chunk:
            scan(np.array(batch, dtype=np.uint64))
            batch = []
    if batch:
        scan(np.array(batch, dtype=np.uint64))
    if best is None:
        return None
    payload = best[1]
    word = encode_bits(payload)
    agreement, compared = int(((word * soft) > 0).sum()), int((soft != 0).sum())
    score = int(codeword_score(weights, word[None])[0])
    p_value = float(min(1.0, codeword_score_tail(weights, score) * total / alpha_share))
    return PayloadMatch(payload, agreement, compared, p_value) if p_value <= config.false_positive_rate else None


def detect_in_registry(
    result: WatermarkResult,
    candidates: Any,
    config: WatermarkConfig | None = None,
    chunk: int = 65536,
    budget_share: float = 1.0,
) -> PayloadMatch | None:
    """Detection for a clip the pilots alone did not flag, knowing which ids were issued: at the whole-frame
    hypothesis, the best-scoring registered codeword's score, against a random codeword's (`codeword_score_tail`),
    times the ids compared (Bonferroni), over `registry_alpha_share` of the false-positive budget. The pilots leave
    the 140 coded bits' evidence unused, and a registered id tells the detector what those bits should read.

    The same bound covers both ways of going wrong, "not marked" and "marked with an id not registered": either way
    every registered id's codeword is a uniformly random codeword independent of the received values, and the tail
    is exact for those values (near another id's codeword it is far heavier than a binomial's). The pilots are left
    out of the statistic on purpose: on a marked clip they are not coins, and adding them would name a wrong id
    whenever the true one is missing from the registry. They only weight the chips (where they read at chance, a
    region's chips lose their vote), which is a function of the clip, not of any id, so the bound stands. None:
    already detected, no whole-frame reading, or no id fits well enough. `budget_share`: the part of
    `registry_alpha_share` this call may spend (`fit_registry` splits it).
    """
    config = config or WatermarkConfig()
    if result.detected or result.whole_frame is None:
        return None
    share = config.registry_alpha_share * budget_share
    return _registry_match(result.whole_frame[0][:CODED_BITS], candidates, config, share, chunk)


def match_payload(
    result: WatermarkResult,
    candidates: Any,
    config: WatermarkConfig | None = None,
    chunk: int = 65536,
    budget_share: float = 1.0,
) -> PayloadMatch | None:
    """Maximum-likelihood decoding over a known set of ids (the registry's): the candidate whose codeword correlates
    best with the received soft values, accepted when its p-value is at most the false-positive rate.

    Blind Viterbi decoding must pick one of 2^64 payloads; the registry holds the few million garrison issued, so
    on a weak channel (a dark clip after CRF 28, 0.77-0.81 of coded bits read right) the right id still stands out
    where Viterbi's path has wandered. `candidates` is any iterable of ints. None: not detected, or no id fits.
    """
    config = config or WatermarkConfig()
    if not result.detected or result.coded_soft is None:
        return None
    # At the geometry the pilots fit best only: the blind decoder's other 7 candidates would cost a factor of 8 on
    # the p-value and, on 144 model clips cropped by 10% and re-encoded, named no id it missed (142 of 142 either
    # way). The whole budget: this names an id for a mark already detected, a different error from detecting one.
    return _registry_match(result.coded_soft, candidates, config, budget_share, chunk)


def fit_registry(
    result: WatermarkResult, candidates: Any, shortlist: Any = (), config: WatermarkConfig | None = None
) -> PayloadMatch | None:
    """The registered id a clip carries, the way `garrison verify` looks for it when blind decoding named none:
    `match_payload` for a mark the pilots detected, `detect_in_registry` for one they did not, each first over every
    registered id (`candidates`) and then over `shortlist`, the ids of the registered clips whose perceptual
    fingerprint is nearest this clip's (`Registry.nearest_payloads`), with `shortlist_alpha_fraction` of the test's
    budget for the second look and the rest for the first (if the shortlist is empty, the first gets it all).

    The bound holds as before: the shortlist is chosen from the pixels' fingerprint, not from the mark, and an id
    that did not make the clip is a uniformly random codeword whatever the clip looks like, so the shortlist's
    Bonferroni factor is its length. A re-encoded clip keeps its fingerprint (on 72 model clips after CRF 28 the
    registered clip was the nearest every time), so the second look asks for far less agreement than a look over
    millions of ids does.
    """
    config = config or WatermarkConfig()
    shortlist = [int(x) for x in shortlist][: config.registry_shortlist]
    fraction = config.shortlist_alpha_fraction if shortlist else 0.0
    lookup = match_payload if result.detected else detect_in_registry
    match = lookup(result, candidates, config, budget_share=1.0 - fraction)
    if match is None and shortlist:
        if result.detected or result.hypothesis_coded is None:
            match = lookup(result, shortlist, config, budget_share=fraction)
        else:
            match = _shortlist_match_any_geometry(result.hypothesis_coded, shortlist, config, fraction)
    return match


def _shortlist_match_any_geometry(
    coded: np.ndarray, shortlist: list[int], config: WatermarkConfig, budget_share: float
) -> PayloadMatch | None:
    """`detect_in_registry` over a short list of ids at every geometry hypothesis, not the whole frame alone: a
    cropped clip the pilots missed reads its coded bits right only at its crop's geometry. The budget is split as the
    pilots' is (`whole_frame_alpha_share` to the whole frame, the rest evenly over the crops), and each side tests
    its best-scoring (hypothesis, id) pair: by the union bound over every pair, a false match has probability at
    most the side's share. With one or two ids on the list, the 624 crops cost less than a registry of 100,000 does.
    """
    soft_all = coded.reshape(-1, CODED_BITS)  # (hypotheses, 140), [0] the whole frame
    weights_all = np.stack([score_weights(s, config.registry_score_levels) for s in soft_all])
    ids = np.array(shortlist, dtype=np.uint64)
    words = encode_many(ids).astype(np.float32)  # (ids, 140)
    # Scores, not correlations: hypotheses differ in total weight. The union bound holds whichever pair is tested.
    corr = (np.abs(weights_all).sum(1, keepdims=True) + weights_all.astype(np.float32) @ words.T) / 2
    share = config.registry_alpha_share * budget_share
    w0 = config.whole_frame_alpha_share if len(soft_all) > 1 else 1.0
    sides = [(corr[:1], 0, share * w0, 1)]
    if len(soft_all) > 1:
        sides.append((corr[1:], 1, share * (1.0 - w0), len(soft_all) - 1))
    best: PayloadMatch | None = None
    for block, first, side_share, hypotheses in sides:
        h, i = np.unravel_index(int(np.argmax(block)), block.shape)
        soft = soft_all[first + h]
        agreement = int(((words[i] * soft) > 0).sum())
        tail = codeword_score_tail(weights_all[first + h], int(round(float(block[h, i]))))
        p_value = float(min(1.0, tail * hypotheses * len(ids) / side_share))
        if p_value <= config.false_positive_rate and (best is None or p_value < best.p_value):
            best = PayloadMatch(int(ids[i]), agreement, int((soft != 0).sum()), p_value)
    return best


def decode_payload(frames: np.ndarray, key: bytes, config: WatermarkConfig | None = None) -> int:
    """The payload at the best-fitting geometry even when detection is not confident (to measure bit accuracy)."""
    config = config or WatermarkConfig()
    _check_frames(frames)
    return _best_payload(_candidate_soft(_analyse(frames, key, config), config))
