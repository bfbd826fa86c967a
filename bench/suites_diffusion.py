"""Notebook 08's diffusion model: the shipped denoiser against the floor (and against 5 minutes of training), its
guidance strength, and the in-notebook recipe over seeds.

Each suite calls the same labsupport code the notebooks use; importing this module registers them (``bench.core.suite``)."""

from __future__ import annotations

import time

import torch

from bench.core import Bench, suite
from labsupport import data, metrics, pretrained


@suite
def diffusion(b: Bench) -> None:
    """Notebook 08: the shipped conditional U-Net denoiser (DDIM 25 steps, its configured guidance) against the floor; normal mode also
    trains the same network for the DCGAN suite's 5-minute budget, so the two families are compared in equal time (with notebook
    08's short-budget settings: batch 32 and EMA decay 0.995; a slower EMA (the shipped run's 0.999) lags behind in minutes)."""
    from labsupport import diffusion as dif
    from labsupport.config import seed_everything
    from labsupport.models import DiffusionUNet
    from labsupport.train import train_diffusion

    cfg, n = pretrained.DIFFUSION, b.pick(5000, 500)
    clf = pretrained.load("classifier", b.device)
    xt, _ = data.mnist_tensors(train=False)
    schedule = dif.cosine_schedule(cfg["T"])
    labels = torch.arange(10).repeat_interleave(n // 10)
    x, y = data.mnist_tensors(train=True)
    floor = metrics.fid_floor(x, xt, clf, n)
    models_to_measure = [("shipped", pretrained.load("diffusion", b.device), pretrained.manifest()["diffusion"]["train_seconds"])]
    if not b.fast:
        seed_everything(b.seed)
        start = time.perf_counter()
        _, ema = train_diffusion(DiffusionUNet(cfg["width"], num_classes=10, T=cfg["T"]), x, schedule, y=y, max_seconds=300.0,
                                 batch_size=32, lr=cfg["lr"], ema_decay=0.995, seed=b.seed, device=b.device, desc="diffusion 5 min")
        models_to_measure.append(("5-min budget", ema, time.perf_counter() - start))
    for label, model, train_s in models_to_measure:
        start = time.perf_counter()
        images = dif.generate(model, schedule, n, steps=cfg["sample_steps"], y=labels, guidance=cfg["guidance"], seed=1, device=b.device)
        ms = 1000 * (time.perf_counter() - start) / n
        is_mean, _ = metrics.inception_score(images, clf)
        fid = metrics.frechet_distance(xt[:n], images, clf)
        shipped = label == "shipped"
        b.record(f"diffusion ({label}): classifier IS ({n} samples)", is_mean, "", ">= 9" if shipped else "compare with DCGAN 5-min",
                 is_mean >= 9 if shipped else None, time.perf_counter() - start, note=f"{train_s / 60:.0f} min of training (shipped: with its evaluation)")
        b.record(f"diffusion ({label}): classifier FID vs test", fid, "", f"<= 2 x floor {floor:.1f}" if shipped else f"floor {floor:.1f}",
                 fid <= 2 * floor if shipped else None, 0)
        b.record(f"diffusion ({label}): sampling time, DDIM {cfg['sample_steps']} + guidance", ms, "ms/image", None, None, 0)
        if shipped and b.fast:
            acc = metrics.accuracy(clf, images, labels)
            b.record(f"diffusion (shipped): label accuracy ({n // 10}/class)", 100 * acc, "%", ">= 80 (fast floor)", acc >= 0.8, 0)


@suite
def diffusion_guidance(b: Bench) -> None:
    """Notebook 08: which guidance strength the shipped denoiser is measured at. FID and IS of DDIM-25 samples for each w;
    ``pretrained.DIFFUSION["guidance"]`` is a mild one, near the lowest FID, where label accuracy has mostly risen (guidance
    buys obedience with diversity); the record says which w had the lowest FID and how far the configured one is from it."""
    from labsupport import diffusion as dif

    cfg, n = pretrained.DIFFUSION, b.pick(2000, 100)
    strengths = b.pick([0.0, 0.25, 0.5, 0.75, 1.0, 2.0], [0.0, 1.0])
    clf, model = pretrained.load("classifier", b.device), pretrained.load("diffusion", b.device)
    x, _ = data.mnist_tensors(train=True)
    xt, _ = data.mnist_tensors(train=False)
    schedule = dif.cosine_schedule(cfg["T"])
    labels = torch.arange(10).repeat_interleave(n // 10)
    floor, fids = metrics.fid_floor(x, xt, clf, n), {}
    for w in strengths:
        start = time.perf_counter()
        images = dif.generate(model, schedule, n, steps=cfg["sample_steps"], y=labels, guidance=w, seed=1, device=b.device)
        fids[w] = metrics.frechet_distance(xt[:n], images, clf)
        b.record(f"diffusion (shipped), guidance {w:g}: classifier FID ({n} samples)", fids[w], "", f"floor {floor:.1f}", None,
                 time.perf_counter() - start, note=f"IS {metrics.inception_score(images, clf)[0]:.2f}, "
                                                   f"label accuracy {100 * metrics.accuracy(clf, images, labels):.1f}%")
    best = min(fids, key=fids.get)
    w = cfg["guidance"]
    note = f"configured w = {w:g}: FID {fids[w]:.2f} vs {fids[best]:.2f} at the best" if w in fids else f"configured w = {w:g} not swept"
    b.record("diffusion (shipped): guidance with the lowest FID", best, "", None, None, 0, note=note)


@suite
def diffusion_seeds(b: Bench) -> None:
    """Notebook 08's in-notebook run (U-Net width 16, batch 32, EMA 0.995, 3 minutes) repeated over seeds: is IS >= 7 in
    3 minutes a property of the recipe or of seed 0? Each seed: DDIM 25 steps at guidance 3 (as 08 scores it) and at
    guidance 1 (milder)."""
    from labsupport import diffusion as dif
    from labsupport.config import seed_everything
    from labsupport.models import DiffusionUNet
    from labsupport.train import train_diffusion

    cfg, seeds, budget, n, steps = pretrained.DIFFUSION, b.pick([0, 1, 2], [0]), b.pick(180.0, 5.0), b.pick(1000, 100), b.pick(25, 5)
    clf = pretrained.load("classifier", b.device)
    x, y = data.mnist_tensors(train=True, n=b.pick(None, 2000))
    xt, _ = data.mnist_tensors(train=False)
    schedule = dif.cosine_schedule(cfg["T"])
    labels = torch.arange(10).repeat_interleave(n // 10)
    floor = metrics.fid_floor(x, xt, clf, n, seed=0)
    scores = {3.0: [], 1.0: []}
    for seed in seeds:
        seed_everything(seed)
        hist, ema = train_diffusion(DiffusionUNet(cfg["width"], num_classes=10, T=cfg["T"]), x, schedule, y=y, max_seconds=budget, batch_size=32,
                                    lr=cfg["lr"], ema_decay=0.995, seed=seed, device=b.device, desc=f"diffusion 3 min, seed {seed}")
        for w in scores:
            images = dif.generate(ema, schedule, n, steps=steps, y=labels, guidance=w, seed=seed, device=b.device)
            scores[w].append((metrics.inception_score(images, clf)[0], metrics.frechet_distance(xt[:n], images, clf),
                              metrics.accuracy(clf, images, labels), len(hist["step"])))
    for w, runs in scores.items():
        v = torch.tensor(runs, dtype=torch.float64)
        mean, std = v.mean(0), (v.std(0) if len(v) > 1 else torch.zeros(4, dtype=torch.float64))
        note = f"{len(seeds)} seeds, {mean[3]:.0f} steps each on average; per seed IS " + ", ".join(f"{r[0]:.2f}" for r in runs)
        b.record(f"diffusion (08's 3-min recipe), guidance {w:g}: classifier IS, mean over seeds ({n} samples)", mean[0].item(), "",
                 ">= 7" if w == 3.0 else None, bool(v[:, 0].min() >= 7) if w == 3.0 and not b.fast else None, budget * len(seeds), note=note)
        b.record(f"diffusion (08's 3-min recipe), guidance {w:g}: IS spread over seeds (std)", std[0].item(), "", None, None, 0)
        b.record(f"diffusion (08's 3-min recipe), guidance {w:g}: classifier FID, mean ± std over seeds", mean[1].item(), "", f"floor {floor:.1f}",
                 None, 0, note=f"std {std[1]:.1f}")
        b.record(f"diffusion (08's 3-min recipe), guidance {w:g}: label accuracy, mean over seeds", 100 * mean[2].item(), "%", None, None, 0,
                 note=f"std {100 * std[2]:.1f}")
