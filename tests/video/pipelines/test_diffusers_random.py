"""The random-initialised pipelines: the full-size Wan config is the 1.3B architecture, and garrison's FLOP formula
holds at full size (counted on meta tensors: shapes only, no memory, no arithmetic)."""

import pytest
import torch
from diffusers import WanTransformer3DModel
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from garrison.video.pipelines.diffusers_backend import wan_forward_flops
from garrison.video.pipelines.diffusers_random import WAN_2_1_T2V_1_3B_TRANSFORMER, build_random_pipeline


def test_full_wan_config_is_the_1_3b_architecture_and_its_flops_match_the_counter():
    with torch.device("meta"):
        model = WanTransformer3DModel(**WAN_2_1_T2V_1_3B_TRANSFORMER)
        latents = torch.empty(1, 16, 21, 60, 104)  # 81 frames at 480x832 through Wan's 4x8x8 VAE
        text = torch.empty(1, 512, 4096)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(hidden_states=latents, timestep=torch.empty(1), encoder_hidden_states=text, return_dict=False)
    assert 1.40e9 < sum(p.numel() for p in model.parameters()) < 1.43e9
    flops = wan_forward_flops(dict(model.config), (21, 30, 52), 512, 1)
    assert flops == counter.get_total_flops()
    assert 2.82e14 < flops < 2.84e14  # per forward; two a step under guidance


def test_unknown_family_or_size_is_refused():
    with pytest.raises(ValueError, match="unknown family"):
        build_random_pipeline("sora")
    with pytest.raises(ValueError, match="wan only"):
        build_random_pipeline("ltx", "full")
