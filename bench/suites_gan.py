"""The GANs: notebook 04's mode collapse and DCGAN, with the notebook's settings; notebook 05's WGAN-GP against the
vanilla GAN and the shipped conditional GAN.

Each suite calls the same labsupport code the notebooks use; importing this module registers them (``bench.core.suite``)."""

from __future__ import annotations

import time

import torch

from bench.core import Bench, suite
from labsupport import data, metrics, pretrained


@suite
def cgan(b: Bench) -> None:
    """The shipped conditional GAN: label accuracy, classifier IS and FID against the test set."""
    clf = pretrained.load("classifier", b.device)
    G = pretrained.load("cgan", b.device)
    n = b.pick(1000, 200)
    start = time.perf_counter()
    images, labels = metrics.conditional_samples(G, n, seed=1)
    acc = metrics.accuracy(clf, images, labels)
    if b.fast:  # the normal run records it in gan_variants, on 1000 per class
        b.record(f"cGAN (shipped): label accuracy ({n}/class)", 100 * acc, "%", ">= 80 (fast floor)", acc >= 0.8, time.perf_counter() - start)
    xt, _ = data.mnist_tensors(train=False)
    start = time.perf_counter()
    is_mean, _ = metrics.inception_score(images, clf)
    b.record("cGAN (shipped): classifier IS", is_mean, "", ">= 8", is_mean >= 8 if not b.fast else None, time.perf_counter() - start)
    start = time.perf_counter()
    fid = metrics.frechet_distance(xt[: len(images)], images, clf)
    b.record("cGAN (shipped): classifier FID vs test set", fid, "", "compare with the floor", None, time.perf_counter() - start)


# --- Notebook 04: mode collapse and DCGAN, with the notebook's settings ---


@suite
def gan_collapse(b: Bench) -> None:
    """Notebook 04's vanilla GAN on the 5x5 grid (sigma 0.05, PacGAN protocol): modes over training, several seeds."""
    from labsupport.models import MLP2D
    from labsupport.metrics import ModeTracker
    from labsupport.train import batch_sampler, train_gan

    seeds, steps = b.pick([0, 1, 2], [0]), b.pick(5000, 600)
    x, centers = data.grid_of_gaussians(50_000, std=0.05, seed=0)
    for s in seeds:
        torch.manual_seed(s)
        G, D = MLP2D(2, 2, hidden=128), MLP2D(2, 1, hidden=128)
        tr = ModeTracker(centers, 0.05, every=100, seed=s)
        start = time.perf_counter()
        train_gan(G, D, batch_sampler(x, seed=s), steps=steps, batch_size=128, lr_g=1e-3, lr_d=1e-3, callback=tr, device="cpu", desc=f"grid seed {s}")
        b.record(f"grid GAN seed {s}: modes captured after {steps} steps", tr.modes[-1], "of 25", None, None, time.perf_counter() - start,
                 note=f"{100 * tr.high_quality[-1]:.1f}% high-quality; modes over training min {min(tr.modes)} max {max(tr.modes)}")


@suite
def dcgan(b: Bench) -> None:
    """Notebook 04's DCGAN (G width 32, z 16; D width 16 with 4 convs; batch 64, Adam lr G 4e-3 / D 2e-3, beta1 0.5) on all of MNIST: classifier IS and FID vs floor.

    The shipped DCGAN is measured as a record without a pass/fail target. Its targets (IS >= 9, FID <= 1.05 x floor) are
    retired (issue 35): six recipe searches reached IS 8.99 and FID 1.17 x floor (see ``pretrained._dcgan_spec``), and
    the diffusion model (suite ``diffusion``) is now the course's best generator, so a seventh search buys nothing
    the course needs."""
    from labsupport.models import DCGANDiscriminator, DCGANGenerator
    from labsupport.config import seed_everything
    from labsupport.train import batch_sampler, train_gan

    # the target is stated for a 5-minute budget: train for that long (fast: 150 steps)
    steps, budget, n = b.pick(10**6, 150), b.pick(300.0, None), b.pick(5000, 1000)
    clf = pretrained.load("classifier", b.device)
    x, _ = data.mnist_tensors(train=True)
    xt, _ = data.mnist_tensors(train=False)
    seed_everything(b.seed)
    G, D = DCGANGenerator(latent_dim=16, width=32), DCGANDiscriminator(width=16, depth=4)
    start = time.perf_counter()
    hist = train_gan(G, D, batch_sampler(x, seed=b.seed), steps=steps, batch_size=64, lr_g=4e-3, lr_d=2e-3, betas=(0.5, 0.999), device=b.device, max_seconds=budget)
    steps = len(hist["step"])
    secs = time.perf_counter() - start
    G.eval()  # batch norm with its running statistics, as the notebook samples
    with torch.no_grad():
        fake = torch.cat([G(torch.randn(500, G.latent_dim, device=b.device)).cpu() for _ in range(n // 500)])
    is_mean, _ = metrics.inception_score(fake, clf)
    fid = metrics.frechet_distance(xt[:n], fake, clf)
    floor = metrics.fid_floor(x, xt, clf, n)
    halves = metrics.frechet_distance(xt[:n], xt[5000 : 5000 + n], clf)  # inflated: MNIST's test halves come from different writers
    label = "150 steps" if b.fast else "5-min budget"  # names stay fixed so a rerun replaces its records
    b.record(f"DCGAN ({label}): classifier IS ({n} samples)", is_mean, "", ">= 8", is_mean >= 8 if not b.fast else None, secs,
             note=f"{steps} steps in {hist['seconds'][-1]:.0f} s")
    b.record(f"DCGAN ({label}): classifier FID vs test", fid, "", f"floor {floor:.1f}", None, 0, note=f"{steps} steps")
    b.record(f"real vs real classifier FID floor (train vs test, {n} vs {n})", floor, "", None, None, 0)
    b.record(f"real vs real classifier FID, the two test halves ({n} vs {n}; not the floor)", halves, "", None, None, 0)
    # issue 20: the shipped DCGAN (04's recipe, longer, EMA weights), on the same samples size and floor
    shipped, entry = pretrained.load("dcgan", b.device), pretrained.manifest()["dcgan"]
    with torch.no_grad():
        fake = torch.cat([shipped(z.to(b.device)).cpu() for z in torch.randn(n, shipped.latent_dim, generator=torch.Generator().manual_seed(b.seed)).split(500)])
    is_mean, fid = metrics.inception_score(fake, clf)[0], metrics.frechet_distance(xt[:n], fake, clf)
    note = f"{entry['metrics']['steps']} steps, trained {entry['train_seconds'] / 60:.0f} min on {entry['device']}"
    b.record(f"DCGAN (shipped): classifier IS ({n} samples)", is_mean, "", None, None, 0, note=f"{note}; target IS >= 9 retired (see the suite)")
    b.record("DCGAN (shipped): classifier FID vs test", fid, "", None, None, 0,
             note=f"{note}; {fid / floor:.2f} x floor {floor:.2f}; target <= 1.05 x floor retired (see the suite)")
    # what keeps the IS below real digits': samples the classifier hesitates on (notebook 04 shows the worst of them)
    unclear, unclear_real = (metrics.unclear_fraction(metrics.predict_proba(clf, images)) for images in (fake, xt))
    b.record(f"DCGAN (shipped): samples the classifier gives under {metrics.UNCLEAR_BELOW:.0%} to its top digit ({n})", 100 * unclear, "%", None, None, 0,
             note=f"real test digits: {100 * unclear_real:.1f}% of {len(xt)}")


@suite
def gan_variants(b: Bench) -> None:
    """Notebook 05: WGAN-GP vs the vanilla GAN on the ring and grid (same nets, batch, G steps; median over seeds), the shipped cGAN."""
    from labsupport.train import toy_gan

    steps, seeds = b.pick(1000, 200), b.pick([0, 1, 2], [0])
    for name, (x, centers), std in [("ring", data.ring_of_gaussians(50_000, seed=0), 0.01), ("grid", data.grid_of_gaussians(50_000, seed=0), 0.05)]:
        res = {}
        for method in ("gan", "wgan-gp"):
            covs, start = [], time.perf_counter()
            for seed in seeds:
                G, _ = toy_gan(method, x, steps=steps, seed=seed, lam=0.1)
                with torch.no_grad():
                    covs.append(metrics.mode_coverage(G(torch.randn(2500, 2, generator=torch.Generator().manual_seed(100 + seed))), centers, std))
            res[method] = covs
            med = lambda v: torch.tensor(v, dtype=torch.float64).median().item()
            secs = time.perf_counter() - start
            note = f"{steps} G steps, seeds {seeds}, per seed {[c.modes for c in covs]}"
            b.record(f"05 {name} {method}: modes (median)", med([c.modes for c in covs]), f"of {len(centers)}", None, None, secs, note=note)
            b.record(f"05 {name} {method}: high-quality fraction (median)", 100 * med([c.high_quality for c in covs]), "%", None, None, 0)
            b.record(f"05 {name} {method}: reverse KL (median)", med([c.reverse_kl for c in covs]), "nats", None, None, 0)
        never_fewer = all(w.modes >= g.modes for w, g in zip(res["wgan-gp"], res["gan"]))
        b.record(f"05 {name}: WGAN-GP modes >= GAN modes in every seed", float(never_fewer), "bool", "1", never_fewer, 0)
        if name == "ring":
            all8 = all(c.modes == 8 for c in res["wgan-gp"])
            b.record("05 ring: WGAN-GP captures all 8 modes in every seed", float(all8), "bool", "1", all8, 0)
    clf = pretrained.load("classifier", b.device)
    G = pretrained.load("cgan", b.device)
    start = time.perf_counter()
    acc = metrics.label_accuracy(G, clf, n_per_class=1000, seed=1)
    b.record("05 shipped cGAN: label accuracy (10 000 digits)", 100 * acc, "%", ">= 95", acc >= 0.95, time.perf_counter() - start)
