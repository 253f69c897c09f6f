import pytest
import torch

from garrison.video.sampling.flow_euler import FlowMatchEulerSampler


def test_timesteps_run_from_noise_towards_data():
    s = FlowMatchEulerSampler(shift=3.0)
    s.set_timesteps(10)
    assert s.timesteps[0] == pytest.approx(1.0)
    assert torch.all(s.timesteps[1:] < s.timesteps[:-1])
    assert s.sigmas[-1] == 0 and len(s.timesteps) == 10


def test_exact_velocity_lands_on_the_data_in_any_number_of_steps():
    """On a straight path x_t = (1-t) x0 + t noise, Euler with the true velocity is exact."""
    x0, noise = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 4, 8, 8)
    for steps in (1, 3, 12):
        s = FlowMatchEulerSampler()
        s.set_timesteps(steps)
        x = noise.clone()
        for t in s.timesteps:
            x = s.step(noise - x0, t, x)
        assert torch.allclose(x, x0, atol=1e-5)


def test_matches_diffusers_flow_match_euler_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    ref.set_timesteps(12)
    ours = FlowMatchEulerSampler(shift=3.0)
    ours.set_timesteps(12)
    assert torch.allclose(ours.sigmas, ref.sigmas.float(), atol=1e-5)
    x_ref = x_ours = torch.randn(1, 3, 4, 8, 8)
    gen = torch.Generator().manual_seed(0)
    for t_ref, t in zip(ref.timesteps, ours.timesteps, strict=True):
        v = torch.randn(x_ours.shape, generator=gen)
        x_ref = ref.step(v, t_ref, x_ref).prev_sample
        x_ours = ours.step(v, t, x_ours)
    assert torch.allclose(x_ours, x_ref, atol=1e-5)


def test_misuse_is_an_error():
    s = FlowMatchEulerSampler()
    with pytest.raises(ValueError):
        s.set_timesteps(0)
    s.set_timesteps(4)
    with pytest.raises(ValueError, match="expected"):
        s.step(torch.zeros(1), 0.123, torch.zeros(1))
