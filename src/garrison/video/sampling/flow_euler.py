"""Euler sampler for rectified-flow models, with the timestep shift of SD3 and Wan 2.1.

Convention: x_t = (1 - t) * x_0 + t * noise, so t = 1 is pure noise and the velocity is noise - x_0.
The same arithmetic as diffusers' FlowMatchEulerDiscreteScheduler (a test checks the two agree step for step);
written here in a few lines so the built-in engine does not import diffusers at start-up.
"""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000


class FlowMatchEulerSampler:
    def __init__(self, shift: float = 3.0) -> None:
        self.shift = shift
        self.sigmas = torch.tensor([1.0, 0.0])
        self.timesteps = self.sigmas[:-1]
        self._index = 0

    def _shifted(self, s: torch.Tensor) -> torch.Tensor:
        return self.shift * s / (1 + (self.shift - 1) * s)

    def set_timesteps(self, num_steps: int) -> None:
        """Noise levels evenly spaced in the training range, shifted towards noise; a final 0 ends the path.

        As diffusers does: the range runs from 1 down to the shifted smallest training level (1/1000), and the
        shift is applied to the evenly spaced levels once more.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        lowest = self._shifted(torch.tensor(1.0 / NUM_TRAIN_TIMESTEPS, dtype=torch.float64))
        s = self._shifted(torch.linspace(1.0, float(lowest), num_steps, dtype=torch.float64))
        self.sigmas = torch.cat([s, torch.zeros(1, dtype=torch.float64)]).float()
        self.timesteps = self.sigmas[:-1]
        self._index = 0

    def step(self, velocity: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """One Euler step along the flow from the current noise level to the next."""
        sigma, sigma_next = self.sigmas[self._index], self.sigmas[self._index + 1]
        if abs(float(timestep) - float(sigma)) > 1e-6:
            raise ValueError(f"step called with t={float(timestep):.6f}, expected {float(sigma):.6f}")
        self._index += 1
        return (sample.float() + (sigma_next - sigma) * velocity.float()).to(sample.dtype)
