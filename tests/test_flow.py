"""labsupport.flow: the time convention, the loss, the samplers and their NFE, guidance, straightness, the exact mixture fields."""

import math

import pytest
import torch

from labsupport import flow
from labsupport.diffusion import cosine_schedule


def test_path_goes_from_noise_at_0_to_data_at_1():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    assert torch.equal(flow.interpolate(x0, x1, torch.zeros(5)), x0)
    assert torch.allclose(flow.interpolate(x0, x1, torch.ones(5)), x1)
    t = torch.rand(5, generator=g)
    eps = 1e-3  # the path's finite-difference velocity is the target
    fd = (flow.interpolate(x0, x1, t + eps) - flow.interpolate(x0, x1, t)) / eps
    assert torch.allclose(fd, flow.target_velocity(x0, x1), atol=1e-2)


def test_loss_is_zero_only_for_the_right_velocity_and_is_a_mean():
    # data concentrated on one point m: the exact velocity given x_t is (m - x_t) / (1 - t), so the loss vanishes
    m = torch.tensor([[2.0, -1.0]])
    x1 = m.repeat(4096, 1)
    exact = lambda x, t: (m - x) / (1 - t)[:, None]  # noqa: E731
    torch.manual_seed(0)
    assert flow.loss(exact, x1).item() < 1e-8
    wrong_sign = lambda x, t: -exact(x, t)  # noqa: E731
    torch.manual_seed(0)
    bad = flow.loss(wrong_sign, x1).item()
    # ||2u||^2 averaged over 2 coordinates with u = m - x0 ~ N(m, I): 4 * (|m|^2 + 2) / 2
    assert bad == pytest.approx(4 * (m.pow(2).sum().item() + 2) / 2, rel=0.05)


def test_gaussian_to_gaussian_exact_velocity_integrates_to_the_target_distribution():
    """For one Gaussian N(mu, s^2 I) the exact field is linear and its ODE maps N(0, I) onto N(mu, s^2 I) exactly."""
    mu, s = torch.tensor([3.0, -2.0]), 0.5
    v = lambda x, t: flow.mixture_velocity(x, t, mu[None], s)  # noqa: E731
    x0 = torch.randn(20000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x1 = flow.integrate(v, x0, steps=100, method="heun")
    assert torch.allclose(x1.mean(0), mu.double(), atol=0.02)
    assert torch.allclose(x1.std(0), torch.full((2,), s, dtype=torch.float64), atol=0.02)
    # deterministic map: each coordinate goes to mu + s * x0 (the monotone transport between two isotropic Gaussians)
    assert torch.allclose(x1, mu.double() + s * x0, atol=1e-4)


def test_mixture_velocity_reaches_the_modes():
    centers, std = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]]), 0.05
    v = lambda x, t: flow.mixture_velocity(x, t, centers, std)  # noqa: E731
    x1 = flow.integrate(v, torch.randn(3000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64), 200, "heun")
    d = torch.cdist(x1, centers.double()).min(1).values
    assert (d < 4 * std).float().mean() > 0.99
    counts = torch.cdist(x1, centers.double()).argmin(1).bincount(minlength=3).double() / 3000
    assert torch.allclose(counts, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.04)


def test_heun_beats_euler_at_equal_steps_and_is_second_order():
    """dx/dt = x t on [0, 1]: x(1) = x(0) exp(1/2). Heun's error falls ~4x when the steps double, Euler's ~2x."""
    v = lambda x, t: x * t.view(-1, 1)  # noqa: E731
    x0 = torch.ones(1, 1, dtype=torch.float64)
    exact = math.exp(0.5)
    err = {m: [abs(flow.integrate(v, x0, n, m).item() - exact) for n in (8, 16)] for m in ("euler", "heun")}
    assert err["heun"][0] < err["euler"][0] / 10
    assert err["euler"][0] / err["euler"][1] == pytest.approx(2, rel=0.15)
    assert err["heun"][0] / err["heun"][1] == pytest.approx(4, rel=0.15)


def test_integrate_runs_forward_over_the_grid_and_counts_evaluations():
    seen = []

    def v(x, t):
        seen.append(float(t[0]))
        return torch.zeros_like(x)

    flow.integrate(v, torch.zeros(3, 2), 4, "euler")
    assert seen == pytest.approx([0, 0.25, 0.5, 0.75])
    seen.clear()
    flow.integrate(v, torch.zeros(3, 2), 2, "heun")
    assert seen == pytest.approx([0, 0.5, 0.5, 1.0])
    assert flow.nfe("euler", 10) == 10 and flow.nfe("heun", 10) == 20 and flow.nfe("heun", 5, guidance=1.0) == 20
    x, path = flow.integrate(lambda x, t: torch.ones_like(x), torch.zeros(3, 2), 5, trajectory=True)
    assert path.shape == (6, 3, 2) and torch.allclose(x, torch.ones(3, 2))


def test_guidance_follows_the_course_convention():
    class Model(torch.nn.Module):
        def forward(self, x, t, y):
            return torch.where((y == 10)[:, None], torch.zeros_like(x), torch.ones_like(x))  # cond 1, uncond 0

    y = torch.tensor([3, 4])
    x, t = torch.zeros(2, 2), torch.zeros(2)
    assert torch.allclose(flow.guided(Model(), y, 0.0)(x, t), torch.ones(2, 2))          # w = 0: plain conditional
    assert torch.allclose(flow.guided(Model(), y, 2.0)(x, t), torch.full((2, 2), 3.0))   # (1 + w) * 1 - w * 0


def test_sample_images_shape_range_seed_and_keeps_training_mode():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(0.1))

        def forward(self, x, t, y=None):
            return self.a * x

    m = Model().train()
    a = flow.generate(m, 7, steps=3, y=torch.arange(7), guidance=0.5, seed=4, batch_size=3)
    b = flow.generate(m, 7, steps=3, y=torch.arange(7), guidance=0.5, seed=4)
    assert a.shape == (7, 1, 28, 28) and 0 <= a.min() and a.max() <= 1 and torch.equal(a, b) and m.training


def test_straightness_is_one_for_segments_and_less_for_bends():
    t = torch.linspace(0, 1, 11)
    line = torch.stack([t, 2 * t], 1)[:, None, :] ** 1  # (11, 1, 2), straight at any speed
    uneven = torch.stack([t ** 3, 2 * t ** 3], 1)[:, None, :]
    bend = torch.stack([torch.sin(math.pi * t / 2), 1 - torch.cos(math.pi * t / 2)], 1)[:, None, :]  # a quarter circle
    assert flow.straightness(line).item() == pytest.approx(1, abs=1e-6)
    assert flow.straightness(uneven).item() == pytest.approx(1, abs=1e-6)
    assert flow.straightness(bend).item() == pytest.approx(math.sqrt(2) / (math.pi / 2), rel=0.01)


def test_exact_ddim_on_a_mixture_reaches_the_modes():
    centers, std = torch.tensor([[1.5, 0.0], [-1.5, 0.0]]), 0.05
    ab = cosine_schedule(1000).alpha_bar
    times = torch.linspace(1000, 1, 50).round().long().tolist()
    abs_ = [float(ab[t]) for t in times] + [1.0]
    path = flow.ddim_path(lambda x, a: flow.mixture_eps(x, a, centers, std), torch.randn(2000, 2, generator=torch.Generator().manual_seed(5),
                                                                                           dtype=torch.float64), abs_)
    assert path.shape == (51, 2000, 2)
    d = torch.cdist(path[-1], centers.double()).min(1).values
    assert (d < 4 * std).float().mean() > 0.97
