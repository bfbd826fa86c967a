"""Notebook 09's flow matching: the shipped flow against the floor, FID against network evaluations (flow with Euler
and Heun, diffusion with DDIM), and the in-notebook recipe over seeds.

Each suite calls the same labsupport code the notebooks use; importing this module registers them (``bench.core.suite``)."""

from __future__ import annotations

import time

import torch

from bench.core import Bench, suite
from labsupport import data, metrics, pretrained


@suite
def flow(b: Bench) -> None:
    """Notebook 09: the shipped flow model at its configured sampler (``pretrained.FLOW``: Heun 5 steps, guidance 0.5 = 20 network
    evaluations per sample) against the floor, then FID and IS against NFE (guidance included) for the flow with Euler and Heun
    and the shipped diffusion model with DDIM, same classifier, samples, labels and seed, in one run. NFE = network evaluations
    per sample: steps x (1 Euler or DDIM, 2 Heun) x 2 with guidance."""
    from labsupport import diffusion as dif, flow as fm

    cfg, dcfg = pretrained.FLOW, pretrained.DIFFUSION
    clf = pretrained.load("classifier", b.device)
    model, diff_model = pretrained.load("flow", b.device), pretrained.load("diffusion", b.device)
    x, _ = data.mnist_tensors(train=True)
    xt, _ = data.mnist_tensors(train=False)
    n = b.pick(5000, 200)
    labels = torch.arange(10).repeat_interleave(n // 10)
    floor = metrics.fid_floor(x, xt, clf, n)
    nfe = fm.nfe(cfg["sample_method"], cfg["sample_steps"], cfg["guidance"])
    start = time.perf_counter()
    images = fm.generate(model, n, steps=cfg["sample_steps"], method=cfg["sample_method"], y=labels, guidance=cfg["guidance"], seed=1,
                       device=b.device)
    ms = 1000 * (time.perf_counter() - start) / n
    is_mean, fid = metrics.inception_score(images, clf)[0], metrics.frechet_distance(xt[:n], images, clf)
    train_min = pretrained.manifest()["flow"]["train_seconds"] / 60
    b.record(f"flow (shipped), {cfg['sample_method']} NFE {nfe}: classifier IS ({n} samples)", is_mean, "", ">= 9.5", is_mean >= 9.5,
             time.perf_counter() - start, note=f"{train_min:.0f} min of training with its evaluation; guidance {cfg['guidance']:g}")
    b.record(f"flow (shipped), {cfg['sample_method']} NFE {nfe}: classifier FID vs test", fid, "", f"<= 2 x floor {floor:.1f}",
             fid <= 2 * floor, 0, note=f"{fid / floor:.2f} x floor; label accuracy {100 * metrics.accuracy(clf, images, labels):.1f}%")
    b.record(f"flow (shipped), {cfg['sample_method']} NFE {nfe}: sampling time", ms, "ms/image", None, None, 0)
    # FID against NFE, all three from this run: n_curve samples each, the same labels and noise seed
    n_curve = b.pick(1000, 100)  # 124 evaluations per sample over the three curves: 1000 samples keep the run under an hour on 2 loaded cores
    labels = torch.arange(10).repeat_interleave(n_curve // 10)
    floor_c = metrics.fid_floor(x, xt, clf, n_curve)
    schedule = dif.cosine_schedule(dcfg["T"])
    plans = [("flow (shipped), Euler", "euler", b.pick([2, 3, 5, 10], [2, 5])), ("flow (shipped), Heun", "heun", b.pick([1, 2, 3, 5], [1, 2])),
             ("diffusion (shipped), DDIM", "ddim", b.pick([2, 3, 5, 10], [2, 5]))]
    for label, method, step_counts in plans:
        for k in step_counts:
            start = time.perf_counter()
            if method == "ddim":
                imgs, calls = dif.generate(diff_model, schedule, n_curve, steps=k, y=labels, guidance=dcfg["guidance"], seed=2, device=b.device), 2 * k
            else:
                imgs = fm.generate(model, n_curve, steps=k, method=method, y=labels, guidance=cfg["guidance"], seed=2, device=b.device)
                calls = fm.nfe(method, k, cfg["guidance"])
            f = metrics.frechet_distance(xt[:n_curve], imgs, clf)
            b.record(f"{label} NFE {calls}: classifier FID ({n_curve} samples)", f, "", f"floor {floor_c:.1f}", None, time.perf_counter() - start,
                     note=f"{k} steps, guidance {dcfg['guidance'] if method == 'ddim' else cfg['guidance']:g}; IS {metrics.inception_score(imgs, clf)[0]:.2f}")


@suite
def flow_seeds(b: Bench) -> None:
    """Notebook 09's in-notebook MNIST run (U-Net width 16, batch 32, EMA 0.995, the notebook's 150 s budget, inside 3 minutes)
    repeated over seeds, scored as the notebook scores it: Heun 5 steps at guidance 2 (20 NFE)."""
    from labsupport import flow as fm
    from labsupport.config import seed_everything
    from labsupport.models import DiffusionUNet
    from labsupport.train import train_diffusion

    seeds, budget, n = b.pick([0, 1, 2], [0]), b.pick(150.0, 5.0), b.pick(1000, 100)
    clf = pretrained.load("classifier", b.device)
    x, y = data.mnist_tensors(train=True, n=b.pick(None, 2000))
    xt, _ = data.mnist_tensors(train=False)
    labels = torch.arange(10).repeat_interleave(n // 10)
    floor, runs = metrics.fid_floor(x, xt, clf, n, seed=0), []
    for seed in seeds:
        seed_everything(seed)
        hist, ema = train_diffusion(DiffusionUNet(pretrained.FLOW["width"], num_classes=10, T=1), x, None, y=y, max_seconds=budget, batch_size=32,
                                    lr=2e-3, ema_decay=0.995, seed=seed, device=b.device, desc=f"flow 150 s, seed {seed}",
                                    loss=lambda m, x1, _s, yb: fm.loss(m, x1, yb))
        images = fm.generate(ema, n, steps=5, method="heun", y=labels, guidance=2.0, seed=seed, device=b.device)
        runs.append((metrics.inception_score(images, clf)[0], metrics.frechet_distance(xt[:n], images, clf), len(hist["step"])))
    v = torch.tensor(runs, dtype=torch.float64)
    note = f"{len(seeds)} seeds, {v[:, 2].mean():.0f} steps each on average; per seed IS " + ", ".join(f"{r[0]:.2f}" for r in runs)
    b.record(f"flow (09's in-notebook recipe), Heun NFE 20: classifier IS, mean over seeds ({n} samples)", v[:, 0].mean().item(), "", ">= 7",
             bool(v[:, 0].min() >= 7), budget * len(seeds), note=note)
    b.record("flow (09's in-notebook recipe), Heun NFE 20: classifier FID, mean over seeds", v[:, 1].mean().item(), "", f"floor {floor:.1f}",
             None, 0, note="per seed " + ", ".join(f"{r[1]:.1f}" for r in runs))
