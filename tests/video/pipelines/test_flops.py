import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from garrison.video.models.dit import DiTConfig, SpacetimeDiT
from garrison.video.pipelines.flops import dit_forward_flops, text_encoder_flops


def measured_flops(fn) -> int:
    # The math backend spells attention out as bmm, which the counter sees; the fused CPU kernel it does not.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_dit_formula_equals_torch_flop_counter():
    cfg = DiTConfig(width=64, depth=2, heads=2)
    model = SpacetimeDiT(cfg)
    for frames, h, w, text_len, batch in [(16, 64, 64, 7, 1), (32, 64, 112, 12, 2)]:
        x = torch.randn(batch, 3, frames, h, w)
        text = torch.randn(batch, text_len, 384)
        mask = torch.ones(batch, text_len, dtype=torch.bool)
        got = measured_flops(lambda: model(x, torch.full((batch,), 0.5), text, mask))  # noqa: B023
        assert dit_forward_flops(cfg, model.grid(frames, h, w), text_len, batch) == got


def test_text_encoder_formula_equals_torch_flop_counter(text_encoder):
    prompt = "a red circle moving left on a black background"
    n = text_encoder.token_count(prompt)
    (encoding,) = text_encoder.tokenizer.encode_batch([prompt])
    ids, attention = torch.tensor([encoding.ids]), torch.tensor([encoding.attention_mask])
    got = measured_flops(lambda: text_encoder.model(ids, attention))
    assert text_encoder_flops(n) == got
