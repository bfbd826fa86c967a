"""Diffusion models: schedules and closed forms, the simple loss's optimum, samplers that recover a known
distribution from its exact noise predictor, guidance, the denoisers, and a training run that learns."""

import math

import pytest
import torch

from labsupport import diffusion, models, train


def test_linear_schedule_is_ddpms():
    s = diffusion.linear_schedule(1000)
    assert s.T == 1000 and s.beta[0] == 0 and s.alpha_bar[0] == 1
    assert s.beta[1].item() == pytest.approx(1e-4) and s.beta[1000].item() == pytest.approx(0.02)
    ab = s.alpha_bar
    assert (ab[1:] < ab[:-1]).all(), "alpha_bar must fall at every step"
    assert ab[1000].item() < 1e-4, "at t = T almost no signal is left"
    assert torch.allclose(ab[1:], torch.cumprod(1 - s.beta[1:], 0))


def test_cosine_schedule_keeps_more_signal_early():
    lin, cos = diffusion.linear_schedule(1000), diffusion.cosine_schedule(1000)
    assert cos.alpha_bar[0] == 1 and (cos.alpha_bar[1:] <= cos.alpha_bar[:-1]).all()
    mid = slice(100, 600)
    assert (cos.snr()[mid] > lin.snr()[mid]).all()
    assert cos.beta.max() <= 0.999


def test_posterior_variance_lies_below_beta():
    s = diffusion.linear_schedule(200)
    pv = s.posterior_variance()
    assert pv[1] == 0  # q(x_0 | x_1, x_0) is a point
    assert ((pv[2:] > 0) & (pv[2:] <= s.beta[2:])).all()


def test_q_sample_is_the_closed_form():
    s = diffusion.linear_schedule(1000)
    x0 = torch.full((20_000, 1, 2, 2), 0.7)
    t = torch.full((20_000,), 300)
    noise = torch.randn_like(x0)
    xt = diffusion.q_sample(x0, t, noise, s)
    ab = s.alpha_bar[300].item()
    assert torch.allclose(xt, math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise, atol=1e-6)
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.01)
    assert xt.var().item() == pytest.approx(1 - ab, rel=0.03)


def _gaussian_oracle(schedule, m: float, sd: float):
    """The exact E[eps | x_t] when x_0 ~ N(m, sd^2 I): sqrt(1 - ab) (x_t - sqrt(ab) m) / (ab sd^2 + 1 - ab)."""

    def eps(x, t, y=None):
        ab = schedule.alpha_bar[t].to(x.dtype).view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * m) / (ab * sd**2 + 1 - ab)

    return eps


def test_simple_loss_of_the_exact_predictor_is_its_minimum():
    """For x_0 ~ N(0, I) the best predictor leaves an error of alpha_bar_t per pixel: the loss is E_t[alpha_bar_t]."""
    s = diffusion.linear_schedule(1000)
    loss = diffusion.simple_loss(_gaussian_oracle(s, 0.0, 1.0), torch.randn(4000, 1, 28, 28), s)
    assert loss.item() == pytest.approx(s.alpha_bar[1:].mean().item(), abs=0.01)
    worse = diffusion.simple_loss(lambda x, t, y: torch.zeros_like(x), torch.randn(4000, 1, 28, 28), s)
    assert worse.item() == pytest.approx(1.0, abs=0.01) and worse > loss


def test_ddpm_recovers_a_known_distribution_from_its_exact_noise_predictor():
    """Ancestral DDPM over all T = 1000 steps, fed the exact E[eps | x_t] of N(m, sd^2), draws from N(m, sd^2).

    Why 50 images are enough for these tolerances: the oracle and the noise act per pixel, so every pixel is an
    independent draw, and 50 images are N = 39 200 of them. The sample mean's standard error is 0.15 / sqrt(N) = 0.0008,
    the sample std's relative one 1 / sqrt(2N) = 0.36%. The right sampler's own bias: clamping to [0, 1] lowers the std
    by 0.33% (and the mean by 0.0002), and T = 1000 steps with the posterior variance beta_tilde by about 1.4% more
    (measured: -1.72% on 300 images, -1.74% on these 50). The tolerances (0.005 on the mean, 3% on the std) leave
    6 and 3.5 standard errors beyond that bias, and wrong samplers land far outside them (measured on these 50 images'
    noise): no noise std -99.8%; eps without its 1/sqrt(1 - alpha_bar_t) mean -0.020, std +106%; no 1/sqrt(alpha_t)
    mean -0.011, std -10.1%. DDPM's other variance, beta_t, is a valid sampler and passes (+0.2%).
    """
    torch.set_num_threads(1)  # 1000 steps of 40 000-value ops: a second thread only adds its waits (the fixture restores the count)
    s = diffusion.linear_schedule(1000)
    m, sd = 0.2, 0.3  # signal space; in [0, 1]: mean 0.6, std 0.15
    images = diffusion.generate(_gaussian_oracle(s, m, sd), s, 50, seed=0, device="cpu")
    assert images.shape == (50, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert images.mean().item() == pytest.approx((m + 1) / 2, abs=0.005)
    assert images.std().item() == pytest.approx(sd / 2, rel=0.03)


def test_ddim_is_exact_for_a_point_and_approaches_a_gaussian_as_steps_grow():
    """DDIM's deterministic steps: exact in 5 steps when the data is one point (its eps is constant along the path);
    for a Gaussian, few steps under-disperse and more steps close the gap, the same noise giving the same digits."""
    s = diffusion.linear_schedule(1000)
    ab = lambda t: s.alpha_bar[t].float().view(-1, 1, 1, 1)
    point = diffusion.generate(lambda x, t, y=None: (x - ab(t).sqrt() * 0.2) / (1 - ab(t)).sqrt(), s, 50, steps=5, seed=0, device="cpu")
    assert torch.allclose(point, torch.full_like(point, 0.6), atol=1e-4)
    oracle = _gaussian_oracle(s, 0.2, 0.3)
    stds = [diffusion.generate(oracle, s, 300, steps=k, seed=0, device="cpu").std().item() for k in (10, 30, 100)]
    assert stds[0] < stds[1] < stds[2] < 0.15 * 1.01 and stds[2] == pytest.approx(0.15, rel=0.06), stds
    again = diffusion.generate(oracle, s, 300, steps=10, seed=0, device="cpu")
    assert again.std().item() == stds[0]


def test_ddim_step_from_the_last_step_returns_the_predicted_clean_image():
    s = diffusion.linear_schedule(1000)
    x0, eps = torch.rand(3, 1, 28, 28) * 2 - 1, torch.randn(3, 1, 28, 28)
    xt = diffusion.q_sample(x0, torch.full((3,), 500), eps, s)
    assert torch.allclose(diffusion.ddim_step(eps, xt, 500, 0, s), x0, atol=1e-5)


def test_classifier_free_guidance_extrapolates_from_the_unconditional_prediction():
    def eps_model(x, t, y):
        return torch.where((y == 10).view(-1, 1, 1, 1), torch.zeros_like(x), torch.ones_like(x))  # cond 1, uncond 0

    x, t, y = torch.zeros(2, 1, 28, 28), torch.tensor([5, 5]), torch.tensor([3, 7])
    assert torch.allclose(diffusion._guided_eps(eps_model, x, t, y, 2.0, 10), torch.full_like(x, 3.0))
    assert torch.allclose(diffusion._guided_eps(eps_model, x, t, y, 0.0, 10), torch.ones_like(x))


@pytest.mark.parametrize("net", [lambda: models.DiffusionUNet(8, num_classes=10), lambda: models.DiffusionUNet(8),
                                 lambda: models.MLPDenoiser(64, num_classes=10)])
def test_denoisers_shapes_and_gradients(net):
    model = net()
    x, t = torch.randn(4, 1, 28, 28, requires_grad=True), torch.tensor([1, 10, 500, 1000])
    y = torch.tensor([0, 3, 9, 10]) if model.num_classes else None
    out = model(x, t, y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if model.num_classes:  # the label changes the prediction
        assert not torch.allclose(model(x, t, torch.tensor([1, 1, 1, 1])), model(x, t, torch.tensor([2, 2, 2, 2])))


def test_time_embedding_tells_times_apart():
    e = models.time_embedding(torch.tensor([1, 2, 500, 1000]), 32)
    assert e.shape == (4, 32) and torch.cdist(e, e).fill_diagonal_(1.0).min() > 0.1


def test_train_diffusion_lowers_the_loss_and_keeps_an_average():
    torch.manual_seed(0)
    x = (torch.rand(1, 1, 28, 28) > 0.7).float().repeat(512, 1, 1, 1)  # one pattern: its noise is learnable fast
    s = diffusion.linear_schedule(100)
    model = models.MLPDenoiser(128)

    def loss_now(m):  # the same t and noise before and after training
        torch.manual_seed(1)
        with torch.no_grad():
            return diffusion.simple_loss(m, diffusion.to_signal(x), s).item()

    before = loss_now(model)
    hist, ema = train.train_diffusion(model, x, s, epochs=10, batch_size=64, lr=5e-3, ema_decay=0.9, device="cpu")
    assert len(hist["loss"]) == 10 * 8
    assert loss_now(model) < 0.97 * before and loss_now(ema) < before, (before, loss_now(model), loss_now(ema))
    assert ema is not model and not ema.training
    assert any(not torch.equal(a, b) for a, b in zip(ema.parameters(), model.parameters()))


def test_train_diffusion_trains_with_a_given_loss_and_calls_back_with_the_average():
    """Notebook 08 trains with the student's loss: it is what gets minimised, labels arrive (some dropped), the callback sees the EMA."""
    torch.manual_seed(0)
    x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
    s = diffusion.linear_schedule(50)
    seen, steps = [], []

    def loss(m, x0, schedule, yb):
        seen.append(yb.clone())
        return diffusion.simple_loss(m, x0, schedule, yb)

    model = models.MLPDenoiser(64, num_classes=10)
    hist, ema = train.train_diffusion(model, x, s, y=y, epochs=2, batch_size=64, p_uncond=0.5, ema_decay=0.9, device="cpu", loss=loss,
                                      callback=lambda step, m: steps.append((step, m)))
    assert len(seen) == len(hist["loss"]) == len(steps) == 8, "the given loss is the one minimised, one callback per step"
    labels = torch.cat(seen)
    assert ((labels == 10).float().mean() - 0.5).abs() < 0.1, "about half the labels dropped to 'no label' (10)"
    assert all(m is ema for _, m in steps), "the callback gets the averaged model, the one a snapshot should keep"


def test_generate_uses_a_given_reverse_step_and_keeps_the_frames_asked_for():
    s = diffusion.linear_schedule(50)
    calls = []

    def step(eps, x_t, t, schedule, noise):
        calls.append(t)
        return diffusion.ddpm_step(eps, x_t, t, schedule, noise=noise)

    oracle = _gaussian_oracle(s, 0.2, 0.3)
    images, frames = diffusion.generate(oracle, s, 7, step=step, keep=[50, 10, 0], seed=0, device="cpu", batch_size=4)
    assert calls == list(range(50, 0, -1)) * 2, "one call per step, t = T..1, for each of the two batches"
    assert sorted(frames) == [0, 10, 50] and frames[50].shape == (4, 1, 28, 28)
    assert torch.equal(frames[0], images[:4]), "t = 0 is the finished first batch"
    again = diffusion.generate(oracle, s, 7, seed=0, device="cpu", batch_size=4)
    assert torch.equal(again, images), "the course's own step gives the same images: the hook changes nothing else"


def test_the_graders_watch_lets_students_read_a_schedule_but_names_the_courses_answer():
    from labsupport import checking, checks

    s = diffusion.linear_schedule(10)
    x0, t, noise = torch.zeros(2, 1, 28, 28), torch.tensor([1, 5]), torch.randn(2, 1, 28, 28)

    def own(x0, t, noise, schedule):
        ab = schedule.alpha_bar[t].float().view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise + 0 * schedule.posterior_variance()[t].float().view(-1, 1, 1, 1)

    def borrowed(x0, t, noise, schedule):
        return diffusion.q_sample(x0, t, noise, schedule)

    for fn, expect in [(own, []), (borrowed, ["labsupport.diffusion.q_sample"])]:
        watch = checking.Watch(checks)
        watch.guard(fn)(x0, t, noise, s)
        assert [r for r in watch.reference if not r.startswith("labsupport.diffusion._at")] == expect, watch.reference


@pytest.mark.parametrize("schedule", [diffusion.linear_schedule(1000), diffusion.cosine_schedule(1000), diffusion.linear_schedule(50)])
def test_matching_time_finds_the_t_whose_noise_is_the_images_noise(schedule):
    """Noise of std sigma on [0, 1] images is std 2 sigma in signal space, which x_t / sqrt(ab_t) carries at ratio sqrt((1 - ab) / ab)."""
    ab = schedule.alpha_bar
    ratio = ((1 - ab) / ab).sqrt()  # (T + 1,), rising from 0 at t = 0
    for t0 in (1, 2, schedule.T // 3, schedule.T // 2, schedule.T - 1):
        assert diffusion.matching_time(schedule, ratio[t0].item() / 2) == t0, "a sigma that is exactly some t's noise gives that t"
    sigmas = torch.linspace(0.01, 1.0, 57).tolist()
    ts = [diffusion.matching_time(schedule, s) for s in sigmas]
    assert ts == sorted(ts) and all(1 <= t <= schedule.T for t in ts), "more noise, later time, always inside 1..T"
    for s, t in zip(sigmas, ts):  # no neighbour matches better
        gap = abs(ratio[t] - 2 * s)
        assert gap <= abs(ratio[t - 1] - 2 * s) or t == 1
        assert t == schedule.T or gap <= abs(ratio[t + 1] - 2 * s)
    assert diffusion.matching_time(schedule, 1e-6) == 1


def test_denoise_with_the_exact_predictor_returns_the_posterior_mean():
    """Pixels x_0 ~ N(m, sd^2) in signal space, y = image + sigma n: E[x_0 | y'] = m + sd^2 / (sd^2 + 4 sigma^2) (y' - m) with y' = 2 y - 1."""
    s, m, sd, sigma = diffusion.cosine_schedule(1000), -0.2, 0.3, 0.15
    g = torch.Generator().manual_seed(0)
    clean = diffusion.to_image(m + sd * torch.randn(500, 1, 28, 28, generator=g))
    y = clean + sigma * torch.randn(clean.shape, generator=g)
    out = diffusion.denoise(_gaussian_oracle(s, m, sd), s, y, sigma)
    assert out.shape == y.shape and out.dtype == y.dtype and out.min() >= 0 and out.max() <= 1
    posterior_mean = diffusion.to_image(m + sd**2 / (sd**2 + 4 * sigma**2) * (diffusion.to_signal(y) - m))
    assert (out - posterior_mean).abs().max() < 2e-3, "one Tweedie step at the matched t is the posterior mean"
    err = lambda a: (a - clean).pow(2).sum((1, 2, 3)).mean().item()
    assert err(out) < 0.6 * err(y) and err(out) == pytest.approx(err(posterior_mean), rel=0.01)
    ddim = diffusion.denoise(_gaussian_oracle(s, m, sd), s, y, sigma, steps=10)
    assert not torch.allclose(ddim, out, atol=1e-3) and err(ddim) < err(y), "DDIM from t to 0 also denoises, but is no posterior mean"


def test_denoise_runs_ddim_to_the_point_when_the_data_is_one_point():
    s = diffusion.linear_schedule(1000)
    ab = lambda t: s.alpha_bar[t].float().view(-1, 1, 1, 1)
    point = lambda x, t, y=None: (x - ab(t).sqrt() * 0.2) / (1 - ab(t)).sqrt()  # x_0 = 0.2 always: image 0.6
    y = 0.6 + 0.3 * torch.randn(4, 1, 28, 28)
    for steps in (1, 7):
        assert torch.allclose(diffusion.denoise(point, s, y, 0.3, steps=steps), torch.full_like(y, 0.6), atol=1e-4)


def test_denoise_names_bad_input():
    s, model = diffusion.linear_schedule(100), lambda x, t, y=None: torch.zeros_like(x)
    y = torch.rand(2, 1, 28, 28)
    for sigma in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="sigma must be > 0"):
            diffusion.denoise(model, s, y, sigma)
    for shape in [(2, 28, 28), (2, 3, 28, 28), (2, 1, 32, 32)]:
        with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
            diffusion.denoise(model, s, torch.rand(shape), 0.1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        diffusion.denoise(model, s, y, 0.1, steps=0)
