import pytest
import torch

from garrison.video.data.world import ASPECTS, DURATIONS_S
from garrison.video.models.dit import DiTConfig, SpacetimeDiT, apply_rope, rope_angles

SMALL = DiTConfig(width=64, depth=2, heads=2)


def test_patchify_round_trips():
    model = SpacetimeDiT(SMALL)
    x = torch.randn(2, 3, 16, 64, 112)
    tokens = model.patchify(x)
    assert tokens.shape == (
        2,
        (16 // SMALL.patch_t) * (64 // SMALL.patch_hw) * (112 // SMALL.patch_hw),
        SMALL.patch_dim,
    )
    assert torch.equal(model.unpatchify(tokens, model.grid(16, 64, 112)), x)


@pytest.mark.parametrize("seconds", DURATIONS_S)
@pytest.mark.parametrize("aspect", list(ASPECTS))
def test_one_model_runs_every_duration_and_aspect(seconds, aspect):
    torch.manual_seed(0)
    model = SpacetimeDiT(SMALL)
    width, height = ASPECTS[aspect]
    x = torch.randn(1, 3, seconds * 8, height, width)
    text = torch.randn(1, 5, 384)
    mask = torch.ones(1, 5, dtype=torch.bool)
    out = model(x, torch.tensor([0.5]), text, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_rejects_a_clip_off_the_patch_grid():
    with pytest.raises(ValueError, match="not a multiple of the patch"):
        SpacetimeDiT(SMALL)(
            torch.randn(1, 3, 10, 64, 64),
            torch.tensor([0.5]),
            torch.randn(1, 2, 384),
            torch.ones(1, 2, dtype=torch.bool),
        )


def test_padding_tokens_of_the_text_are_ignored():
    torch.manual_seed(1)
    model = SpacetimeDiT(SMALL)
    for p in model.parameters():  # adaLN-Zero starts as identity; randomise so text actually matters
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(1, 3, 16, 64, 64)
    text = torch.randn(1, 4, 384)
    short = model(x, torch.tensor([0.3]), text, torch.ones(1, 4, dtype=torch.bool))
    padded_text = torch.cat([text, torch.randn(1, 3, 384) * 100], dim=1)
    padded_mask = torch.tensor([[True] * 4 + [False] * 3])
    padded = model(
        x, torch.tensor([0.3]), padded_text * torch.cat([torch.ones(4), torch.zeros(3)])[None, :, None], padded_mask
    )
    assert torch.allclose(short, padded, atol=1e-4)


def test_rope_is_relative():
    """Rotating q and k by positions i and j gives a dot product that depends only on i - j."""
    dims = (8, 12, 12)
    ang = rope_angles((4, 3, 3), dims, torch.device("cpu"))
    q, k = torch.randn(32), torch.randn(32)

    def score(i, j):
        qi = apply_rope(q.view(1, 1, 1, 32), ang[i].cos(), ang[i].sin())
        kj = apply_rope(k.view(1, 1, 1, 32), ang[j].cos(), ang[j].sin())
        return float((qi * kj).sum())

    # token index = t*9 + y*3 + x: shift both by one time step
    assert score(0, 9) == pytest.approx(score(9, 18), rel=1e-4)
