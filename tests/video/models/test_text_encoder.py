import torch

from garrison.video.models.text_encoder import TextEncoder


def test_states_are_padded_with_a_mask_and_cached_prompts_match_fresh_ones():
    enc = TextEncoder(cache_size=3)
    prompts = ["a red circle", "a blue square moving up on a gray background", ""]
    states, mask = enc.encode(prompts)
    assert states.shape[:2] == mask.shape and states.shape[2] == 384
    assert mask.sum(1).tolist() == [enc.token_count(p) for p in prompts]
    assert torch.all(states[~mask] == 0)
    # overflowing the cache must re-encode, never lose a prompt of the current call
    again, _ = enc.encode(["a green ball", "a red circle", "a white box"])
    assert torch.allclose(again[1, : mask[0].sum()], states[0, : mask[0].sum()], atol=1e-5)
