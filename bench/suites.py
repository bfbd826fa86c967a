"""The measured suites. Each calls the same labsupport code the notebooks use."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.core import ROOT, Bench, suite
from labsupport import config, data, metrics, pretrained
from labsupport.losses import reparameterize


class ExamplesVAE(nn.Module):
    """The pytorch/examples ``vae/main.py`` configuration: MLP 784-400-20, written here from its description."""

    def __init__(self):
        super().__init__()
        self.latent_dim = 20
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def encode(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return self.fc4(F.relu(self.fc3(z))).view(-1, 1, 28, 28)  # logits; the example applies sigmoid


def examples_loss(x, x_logits, mu, logvar):
    """The example's loss: BCE summed over pixels *and the batch*, plus the KL summed likewise."""
    bce = F.binary_cross_entropy_with_logits(x_logits, x, reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def examples_batch_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """pytorch/examples' objective on one batch ``x: (B, 1, 28, 28)``: encode, sample, decode, summed negative ELBO."""
    mu, logvar = model.encode(x)
    return examples_loss(x, model.decode(reparameterize(mu, logvar)), mu, logvar)


@suite
def vae(b: Bench) -> None:
    """Our VAE vs the pytorch/examples configuration, same wall-time budget, same binarized data."""
    from labsupport.models import MLPVAE
    from labsupport.config import seed_everything
    from labsupport.train import train_vae

    # Normal mode: equal wall time, the comparison that matters. Fast mode: two epochs (938 steps)
    # each, so the smoke floor does not depend on how loaded the machine is.
    budget = b.pick(300.0, None)
    n_iw, k = b.pick(1000, 100), b.pick(1000, 100)
    x, _ = data.mnist_tensors(train=True)
    results = {}
    for name, model, loss in [("ours", MLPVAE(), None), ("pytorch/examples", ExamplesVAE(), examples_batch_loss)]:
        seed_everything(b.seed)
        model = model.to(b.device)
        start = time.perf_counter()
        # ours: the shipped recipe (cosine lr decay over the budget); the reference: its own (constant Adam 1e-3)
        hist = train_vae(model, x, max_seconds=budget, epochs=None if budget else 2, batch_loss=loss, device=b.device, desc=name,
                         seed=b.seed, lr_decay=loss is None)
        ev = metrics.evaluate_vae(model, n_elbo=10_000, n_iw=n_iw, k=k, seed=b.seed)
        secs = time.perf_counter() - start
        epochs = len(hist["loss"]) * 128 / len(x)
        results[name] = ev
        target = "<= 92" if name == "ours" and not b.fast else None
        ok = (ev["test_iw_nll"] <= 92) if target else None
        b.record(f"VAE {name}: test IW-NLL (K={k}, {n_iw} images)", ev["test_iw_nll"], "nats", target, ok, secs,
                 note=f"{budget:.0f} s training = {epochs:.1f} epochs" if budget else f"{len(hist['loss'])} steps")
        b.record(f"VAE {name}: test negative ELBO", ev["test_neg_elbo"], "nats", None, None, 0)
        b.record(f"VAE {name}: epochs in the budget", epochs, "epochs", None, None, 0)
    ratio = results["ours"]["test_iw_nll"] / results["pytorch/examples"]["test_iw_nll"]
    b.record("VAE ours / pytorch/examples IW-NLL", ratio, "ratio", *(("< 1", ratio < 1) if budget else (None, None)), 0)
    if b.fast:  # loose smoke floor: a VAE that learned anything beats 150 nats within seconds
        b.record("VAE fast floor: ours IW-NLL", results["ours"]["test_iw_nll"], "nats", "< 160 (fast floor)", results["ours"]["test_iw_nll"] < 160, 0)


@suite
def reference(b: Bench) -> None:
    """The evaluation classifier and the real-data values every generative metric is compared with."""
    clf = pretrained.load("classifier", b.device)
    xt, yt = data.mnist_tensors(train=False)
    xr, _ = data.mnist_tensors(train=True, n=b.pick(10_000, 2000))
    n = b.pick(10_000, 2000)
    start = time.perf_counter()
    acc = metrics.accuracy(clf, xt, yt)
    b.record("classifier: test accuracy", 100 * acc, "%", ">= 99", acc >= 0.99, time.perf_counter() - start)
    start = time.perf_counter()
    is_mean, _ = metrics.inception_score(xt[:n], clf)
    b.record(f"real test digits: classifier IS ({n})", is_mean, "", "9.4-9.9 (reference)", 9.0 <= is_mean <= 10, time.perf_counter() - start)
    start = time.perf_counter()
    floor = metrics.frechet_distance(xr, xt[:n], clf)
    b.record(f"real train vs test: classifier FID floor ({len(xr)} vs {n})", floor, "", None, None, time.perf_counter() - start)


def _sliders(widget):
    import ipywidgets as W

    found, stack = [], [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, W.FloatSlider):
            found.append(w)
        stack.extend(getattr(w, "children", ()))
    return found


@suite
def sliders(b: Bench) -> None:
    """Latent-slider redraw latency: decode one z and encode the PNG, as a slider move does."""
    from labsupport import widgets

    for name in ("vae", "vae2d"):
        if name not in pretrained.REGISTRY or not pretrained.path_of(name).exists():
            b.record(f"slider redraw latency ({name})", float("nan"), "ms", "< 100", False, note="checkpoint missing")
            continue
        vae = pretrained.load(name, "cpu")
        xt, _ = data.mnist_tensors(train=False, n=16)
        w = widgets.vae_explorer(vae, xt)
        s = _sliders(w)[0]
        reps, times = b.pick(200, 30), []
        for i in range(reps):
            start = time.perf_counter()
            s.value = -2.0 + 4.0 * (i % 40) / 40
            times.append(time.perf_counter() - start)
        ms = 1000 * torch.tensor(times).median().item()
        b.record(f"slider redraw latency ({name}, CPU, median of {reps})", ms, "ms", "< 100", ms < 100, sum(times))


@suite
def notebooks(b: Bench) -> None:
    """Wall time of every notebook, executed with nbclient, in fast mode and (normal run) normal mode,
    and the numbers the notebooks hand over with ``metrics.report`` (CycleGAN identity, anomaly AUROC, ...)."""
    import json
    import tempfile

    from labsupport import course

    paths = sorted((ROOT / "solutions").glob("*.ipynb"))
    if b.notebook_prefixes:
        paths = [p for p in paths if p.stem.startswith(tuple(b.notebook_prefixes))]
    elif b.fast:
        paths = paths[:1]
    wanted = b.notebook_modes or (["fast"] if b.fast else ["fast", "normal"])
    for mode in wanted:
        for p in paths:
            with tempfile.TemporaryDirectory() as tmp:
                report = Path(tmp) / "report.jsonl"
                res = course.run(p, env=config.environment(mode=mode, report=report))
                for line in report.read_text().splitlines() if report.exists() else []:
                    r = json.loads(line)
                    b.record(f"{p.stem[:2]} ({mode}): {r['name']}", r["value"], r["unit"], None, None, 0)
            limit = {"fast": 90, "normal": 300}[mode]  # the course's promise: every notebook within 5 minutes on 2 CPU cores
            ok = res["error"] is None and res["seconds"] <= limit
            b.record(f"notebook {p.stem} ({mode} mode)", res["seconds"], "s", f"<= {limit}", ok, res["seconds"], note=res["error"] or "")


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


@suite
def grading(b: Bench) -> None:
    """Seconds to grade a submission in fast mode (one at a time, and a class with --jobs 2)."""
    from bench.grading import measure

    start = time.perf_counter()
    records = measure(class_size=b.pick(30, 4), jobs=2)
    for r in records:
        b.record(f"grading: {r['name'].strip()}", r["value"], r["unit"], None, r["pass"], r["seconds"], r.get("note", ""))
    ok = all(r["pass"] is not False for r in records)
    b.record("grading: solutions full marks, students zero", float(ok), "bool", "yes (a fast floor too)", ok, time.perf_counter() - start)


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


@suite
def denoise(b: Bench) -> None:
    """Issue 20: the shipped diffusion model as a denoiser (one Tweedie step at the matching time, unconditional) on noisy test
    digits: squared error per image and the classifier's accuracy, noisy input vs denoised, at each sigma notebook 06 shows."""
    from labsupport import diffusion as dif

    n = b.pick(1000, 200)
    model, clf = pretrained.load_or_train("diffusion", device=b.device), pretrained.load_or_train("classifier", device=b.device)
    schedule = dif.cosine_schedule(pretrained.DIFFUSION["T"])
    xt, yt = data.mnist_tensors(train=False, n=n)
    g, wins = torch.Generator().manual_seed(b.seed), []
    err = lambda a: (a - xt).pow(2).sum((1, 2, 3)).mean().item()
    acc = lambda a: 100 * metrics.accuracy(clf, a, yt)
    a_clean = acc(xt)  # the ceiling: a denoiser cannot be asked to beat a noisy input already there
    b.record("denoise: classifier accuracy, clean digits", a_clean, "%", None, None, 0, note=f"{n} test digits")
    for sigma in (0.1, 0.2, 0.3, 0.5):
        y = xt + sigma * torch.randn(xt.shape, generator=g)
        start = time.perf_counter()
        out = dif.denoise(model, schedule, y, sigma)
        secs = time.perf_counter() - start
        e_noisy, e_out, a_noisy, a_out = err(y), err(out), acc(y), acc(out)
        t = dif.matching_time(schedule, sigma)
        b.record(f"denoise sigma {sigma}: squared error per image, noisy", e_noisy, "sum over pixels", None, None, 0,
                 note=f"{n} test digits; noisy clamped to [0, 1]: {err(y.clamp(0, 1)):.1f}")
        b.record(f"denoise sigma {sigma}: squared error per image, denoised", e_out, "sum over pixels", "< noisy (fast floor too)",
                 e_out < e_noisy, secs, note=f"t = {t}, one Tweedie step")
        b.record(f"denoise sigma {sigma}: classifier accuracy, noisy", a_noisy, "%", None, None, 0)
        b.record(f"denoise sigma {sigma}: classifier accuracy, denoised", a_out, "%", "> noisy, or >= clean (fast floor too)",
                 a_out > a_noisy or a_out >= a_clean, 0)
        wins.append(e_out < e_noisy and (a_out > a_noisy or a_out >= a_clean))
    b.record("denoise: beats the noisy input at every sigma (error, and accuracy unless at the clean ceiling)", float(all(wins)), "bool", "1 (fast floor too)", all(wins), 0)


@suite
def anomaly(b: Bench) -> None:
    """Issue 20: notebook 06's anomaly detector. A VAE trained on every digit but 7 for the notebook's budget; AUROC on the
    test set of the raw likelihood (negative ELBO at z = mu), the PNG-corrected one and the k-NN density of the code mu(x)."""
    from labsupport.config import seed_everything
    from labsupport.models import MLPVAE
    from labsupport.train import train_vae
    from sklearn.metrics import roc_auc_score

    held_out, budget = 7, b.pick(30.0, 4.0)  # notebook 06's BUDGET_S
    x, y = data.mnist_tensors(train=True, n=b.pick(None, 10_000))
    xt, yt = data.mnist_tensors(train=False, n=b.pick(None, 2000))
    keep = y != held_out
    seed_everything(b.seed)
    vae = MLPVAE(20, 256).to(b.device)
    start = time.perf_counter()
    hist = train_vae(vae, x[keep], max_seconds=budget, seed=b.seed, device=b.device, desc=f"VAE without {held_out}s")
    train_s = time.perf_counter() - start
    xt_bin = data.binarize(xt, generator=torch.Generator().manual_seed(0))
    x_ref = x[keep][torch.randperm(int(keep.sum()), generator=torch.Generator().manual_seed(1))[:30_000]]  # notebook 06's N_CODES
    x_bin = data.binarize(x_ref, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mu, logvar = vae.encode(xt_bin.to(b.device))
        raw = (F.binary_cross_entropy_with_logits(vae.decode(mu), xt_bin.to(b.device), reduction="none").flatten(1).sum(1)
               + 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)).cpu()
        train_codes = torch.cat([vae.encode(xb.to(b.device))[0].cpu() for xb in x_bin.split(1000)])
    corrected = raw - torch.log(torch.tensor(2.0)) * 8 * metrics.png_bytes(xt_bin).float()
    start = time.perf_counter()
    latent = metrics.knn_neg_log_density(train_codes, mu.cpu(), k=5)
    knn_s = time.perf_counter() - start
    is_new = (yt == held_out).numpy()
    note = f"{hist['step'][-1]} steps in {budget:.0f} s, {len(xt)} test digits"
    b.record(f"anomaly, unseen {held_out}s: AUROC, negative ELBO at z = mu", roc_auc_score(is_new, raw.numpy()), "AUROC", None, None, train_s, note=note)
    b.record(f"anomaly, unseen {held_out}s: AUROC, PNG-corrected", roc_auc_score(is_new, corrected.numpy()), "AUROC", None, None, 0)
    a = roc_auc_score(is_new, latent.numpy())
    b.record(f"anomaly, unseen {held_out}s: AUROC, k-NN density of the code", a, "AUROC", ">= 0.85", a >= 0.85, knn_s,
             note=f"{len(train_codes)} training codes, k = 5")


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


@suite
def semisupervised(b: Bench) -> None:
    """Issue 20: learning from 100 labels (10 per class), mean and spread over label draws: logistic regression on pixels and
    on the shipped VAE's codes, and Kingma et al. (2014)'s M1+M2 (M2 over the VAE's active code dimensions); then the shipped
    cGAN's digits as extra training data for the codes' logistic regression (the cGAN itself saw all 60 000 labels).

    M1+M2 is measured as a record without a pass/fail target. Its target (>= 90%) is retired (issue 35): it reached
    89.3%, and the goal it stood for (90% from 100 labels) is met by M1 + semi-supervised EM, which keeps its >= 90
    target here (95.1%)."""
    from labsupport.models import SemiSupervisedVAE, fit_semisupervised_gmm
    from labsupport.train import train_semisupervised

    draws, steps, n_test = b.pick(list(range(5)), [0, 1]), b.pick(4000, 100), b.pick(None, 2000)
    vae = pretrained.load_or_train("vae", device=b.device)
    x, y = data.mnist_tensors(train=True)
    xt, yt = data.mnist_tensors(train=False, n=n_test)
    start = time.perf_counter()
    with torch.no_grad():
        codes, logvar = (torch.cat(t) for t in zip(*[[h.cpu() for h in vae.encode(xb.to(b.device))] for xb in x.split(1000)]))
        codes_t = torch.cat([vae.encode(xb.to(b.device))[0].cpu() for xb in xt.split(1000)])
    active = codes.std(0) > 0.1  # the VAE leaves some dimensions unused (codes near 0 for every digit): noise for M2
    std = (0.5 * logvar[:, active]).exp()  # M2 sees draws of M1's posterior, as in the paper
    enc_s = time.perf_counter() - start
    b.record("semisupervised: active VAE code dimensions", float(active.sum()), f"of {vae.latent_dim}", None, None, enc_s,
             note="std over the 60 000 training codes > 0.1; seconds: encoding 70 000 digits")
    acc: dict[str, list[float]] = {"pixels": [], "codes": [], "M1+M2": [], "cGAN only": [], "real + cGAN": []}
    half = len(yt) // 2  # the EM below reports on test digits [half, end): M1+M2 is scored there too, for a like-for-like row
    m2_held_out: list[float] = []
    secs: dict[str, float] = dict.fromkeys(acc, 0.0)
    G = pretrained.load_or_train("cgan", device=b.device)
    fake, fake_y = metrics.conditional_samples(G, b.pick(100, 30), seed=1)
    with torch.no_grad():  # the cGAN's digits go through the same encoder: the classifier is the codes' logistic regression
        fake_codes = torch.cat([vae.encode(xb.to(b.device))[0].cpu() for xb in fake.split(1000)])
    for draw in draws:
        few = data.few_labels(y, 10, seed=draw)
        for name, (tr, te) in {"pixels": (x[few].flatten(1), xt.flatten(1)), "codes": (codes[few], codes_t)}.items():
            t0 = time.perf_counter()
            acc[name].append(100 * metrics.linear_probe_accuracy(tr, y[few], te, yt))
            secs[name] += time.perf_counter() - t0
        t0 = time.perf_counter()
        config.seed_everything(draw)
        m2 = SemiSupervisedVAE(int(active.sum()), z_dim=4, hidden=64)
        train_semisupervised(m2, codes[:, active], codes[few][:, active], y[few], steps=steps, batch_size=128, alpha=1.0, lr=3e-3,
                             seed=draw, device=b.device, desc=f"M2 draw {draw}", unlabelled_std=std, labelled_std=std[few])
        with torch.no_grad():
            right = m2.classify(codes_t[:, active].to(b.device)).argmax(1).cpu() == yt
        acc["M1+M2"].append(100 * right.float().mean().item())
        m2_held_out.append(100 * right[half:].float().mean().item())
        secs["M1+M2"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        acc["real + cGAN"].append(100 * metrics.linear_probe_accuracy(torch.cat([codes[few], fake_codes]), torch.cat([y[few], fake_y]),
                                                                       codes_t, yt))
        secs["real + cGAN"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    acc["cGAN only"].append(100 * metrics.linear_probe_accuracy(fake_codes, fake_y, codes_t, yt))  # no label draw involved
    secs["cGAN only"] = time.perf_counter() - t0
    stats = {k: (torch.tensor(v).mean().item(), torch.tensor(v).std().item() if len(v) > 1 else 0.0) for k, v in acc.items()}
    where = f"{len(yt)} test digits, label draws (seeds) {draws}"
    for name, label in [("pixels", "logistic regression on pixels"), ("codes", "logistic regression on VAE codes"),
                        ("M1+M2", f"M1+M2 ({steps} steps)")]:
        mean, std = stats[name]
        retired = "; target >= 90 retired (see the suite)" if name == "M1+M2" else ""
        b.record(f"semisupervised 100 labels: {label}, mean over draws", mean, "%", None, None, secs[name],
                 note=f"± {std:.1f} (std over draws); per draw {[round(a, 1) for a in acc[name]]}; {where}{retired}")
    # M1 + semi-supervised EM (one full-covariance Gaussian per class) on the same active codes. The unlabelled rows'
    # weight is chosen on other label draws, scored on the first half of the test digits; the draws above are then
    # scored on the second half only, so the reported accuracy did not choose the weight.
    ca, cta = codes[:, active], codes_t[:, active]
    weights, iters, sel_draws = b.pick([1.0, 0.1, 0.01], [0.1, 0.01]), b.pick(100, 20), [100 + d for d in draws]
    t0 = time.perf_counter()
    sel: dict[float, float] = {}
    for w in weights:
        scores = []
        for d in sel_draws:
            few = data.few_labels(y, 10, seed=d)
            g = fit_semisupervised_gmm(ca, ca[few], y[few], unlabelled_weight=w, iters=iters)
            scores.append(100 * (g.classify(cta[:half]).argmax(1) == yt[:half]).double().mean().item())
        sel[w] = sum(scores) / len(scores)
    best_w = max(sel, key=sel.get)
    b.record("semisupervised EM: unlabelled weight chosen on validation draws", best_w, "", None, None, time.perf_counter() - t0,
             note=f"mean accuracy per weight {({w: round(a, 1) for w, a in sel.items()})}; label draws {sel_draws}, test digits 0-{half - 1}; at most {iters} EM iterations (each fit stops early once its class means settle)")
    t0, em, em_all = time.perf_counter(), [], []
    for draw in draws:
        few = data.few_labels(y, 10, seed=draw)
        g = fit_semisupervised_gmm(ca, ca[few], y[few], unlabelled_weight=best_w, iters=iters)
        right = g.classify(cta).argmax(1) == yt
        em.append(100 * right[half:].double().mean().item())
        em_all.append(100 * right.double().mean().item())  # includes the digits that chose the weight: for comparison only
    em_mean, em_std = torch.tensor(em).mean().item(), (torch.tensor(em).std().item() if len(em) > 1 else 0.0)
    b.record("semisupervised 100 labels: M1 + semi-supervised EM (Gaussian per class), mean over draws", em_mean, "%",
             ">= 90" if not b.fast else None, (em_mean >= 90) if not b.fast else None, time.perf_counter() - t0,
             note=f"± {em_std:.1f} (std over draws); per draw {[round(a, 1) for a in em]}; weight {best_w}; test digits {half}-{len(yt) - 1}, "
                  f"label draws (seeds) {draws}; on all {len(yt)} test digits {sum(em_all) / len(em_all):.1f} (those include the weight's choice)")
    b.record("semisupervised 100 labels: M1+M2, on the EM's test digits, mean over draws", sum(m2_held_out) / len(m2_held_out), "%", None, None, 0,
             note=f"per draw {[round(a, 1) for a in m2_held_out]}; test digits {half}-{len(yt) - 1}, the same models as the M1+M2 row")
    gain = stats["M1+M2"][0] - stats["codes"][0]
    b.record("semisupervised fast floor: M1+M2 minus codes, mean accuracy", gain, "points", "> -10 (fast floor)" if b.fast else "> 0",
             gain > (-10 if b.fast else 0), 0)
    n_fake = len(fake_y)
    b.record(f"semisupervised: logistic regression on VAE codes, 100 real + {n_fake} cGAN digits, mean over draws", stats["real + cGAN"][0], "%", None, None,
             secs["real + cGAN"], note=f"± {stats['real + cGAN'][1]:.1f}; the cGAN was trained with all 60 000 labels; {where}")
    b.record(f"semisupervised: logistic regression on VAE codes, {n_fake} cGAN digits only", stats["cGAN only"][0], "%", None, None, secs["cGAN only"],
             note="the cGAN was trained with all 60 000 labels")


@suite
def debias(b: Bench) -> None:
    """Issue 39: debiasing with a VAE's latent density (DB-VAE, Amini et al. 2019), notebook 06's setting. 1% of the training
    digits have inverted contrast (the rare group, never shown to training); a classifier + VAE sharing one encoder, trained
    with a plain shuffle (baseline) or with examples drawn ∝ max_d q̂_d(z)^-α from per-dimension histograms of the codes,
    recomputed every epoch (debiased). Same seeds, same initial networks. Accuracy of every test digit as it is (common
    group) and inverted (rare group); "average" weights the two by their training share."""
    from labsupport import debias as db

    seeds, n, epochs = b.pick([0, 1, 2, 3, 4], [0, 1]), b.pick(20_000, 3000), b.pick(3, 2)
    x, y = data.mnist_tensors(train=True, n=n)
    xt, yt = data.mnist_tensors(train=False, n=b.pick(None, 1000))
    start = time.perf_counter()
    runs = db.compare(x, y, xt, yt, seeds, epochs=epochs, device=b.device)
    secs = (time.perf_counter() - start) / (2 * len(seeds))
    s = db.summary(runs)
    where = f"{n} training digits ({100 * db.RARE_SHARE:.0f}% inverted), {epochs} epochs, {len(yt)} test digits, seeds {seeds}"
    per_seed = lambda method, key: [round(100 * r[key], 1) for r in runs if r["method"] == method]
    for method, label in (("baseline", "baseline (uniform shuffle)"), ("debiased", "DB-VAE resampling")):
        for key, what in (("worst", "worst-group accuracy"), ("average", "average accuracy"), ("rare", "rare group accuracy"),
                          ("common", "common group accuracy")):
            mean, std = s[method][key]
            b.record(f"debias {label}: {what}, mean over seeds", mean, "%", None, None, secs if key == "worst" else 0,
                     note=f"± {std:.2f} (std over seeds); per seed {per_seed(method, key)}; {where}")
    gain, spread = s["gain"]["worst"]
    b.record("debias: worst-group accuracy gain, DB-VAE - baseline", gain, "points", ">= 10", gain >= 10, 0,
             note=f"± {spread:.1f} (std over seeds of the per-seed gain); {where}")
    change, spread = s["gain"]["average"]
    b.record("debias: average accuracy change, DB-VAE - baseline", change, "points", "within ± 1", abs(change) <= 1, 0,
             note=f"± {spread:.2f} (std over seeds of the per-seed change)")
    seen, _ = s["debiased"]["rare_seen"]
    b.record("debias: rare group's share of the examples drawn in the last epoch", seen, "%", "> its training share (fast floor too)",
             seen > 100 * db.RARE_SHARE, 0, note=f"training share {100 * db.RARE_SHARE:.0f}%; baseline {s['baseline']['rare_seen'][0]:.2f}%")
