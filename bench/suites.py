"""The measured suites. Each calls the same labsupport code the notebooks use."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.run import ROOT, Bench, suite
from labsupport import data, metrics, pretrained


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


@suite
def vae(b: Bench) -> None:
    """Our VAE vs the pytorch/examples configuration, same wall-time budget, same binarized data."""
    from labsupport.models import MLPVAE
    from labsupport.train import seed_everything, train_vae

    budget = b.pick(300.0, 15.0)
    n_iw, k = b.pick(1000, 100), b.pick(1000, 100)
    x, _ = data.mnist_tensors(train=True)
    results = {}
    for name, model, loss in [("ours", MLPVAE(), None), ("pytorch/examples", ExamplesVAE(), examples_loss)]:
        seed_everything(b.seed)
        model = model.to(b.device)
        start = time.perf_counter()
        hist = train_vae(model, x, max_seconds=budget, loss=loss, device=b.device, desc=name, seed=b.seed)
        ev = metrics.evaluate_vae(model, n_elbo=10_000, n_iw=n_iw, k=k, seed=b.seed)
        secs = time.perf_counter() - start
        epochs = len(hist["loss"]) * 128 / len(x)
        results[name] = ev
        target = "<= 92" if name == "ours" and not b.quick else None
        ok = (ev["test_iw_nll"] <= 92) if target else None
        b.record(f"VAE {name}: test IW-NLL (K={k}, {n_iw} images)", ev["test_iw_nll"], "nats", target, ok, secs,
                 note=f"{budget:.0f} s training = {epochs:.1f} epochs")
        b.record(f"VAE {name}: test negative ELBO", ev["test_neg_elbo"], "nats", None, None, 0)
        b.record(f"VAE {name}: epochs in the budget", epochs, "epochs", None, None, 0)
    ratio = results["ours"]["test_iw_nll"] / results["pytorch/examples"]["test_iw_nll"]
    b.record("VAE ours / pytorch/examples IW-NLL", ratio, "ratio", "< 1", ratio < 1, 0)
    if b.quick:  # loose smoke floor: a VAE that learned anything beats 150 nats within seconds
        b.record("VAE quick floor: ours IW-NLL", results["ours"]["test_iw_nll"], "nats", "< 160", results["ours"]["test_iw_nll"] < 160, 0)


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
    """Wall time of every notebook, executed with nbclient, in fast mode and (full run) normal mode."""
    from labsupport import course

    paths = sorted((ROOT / "solutions").glob("*.ipynb"))
    if b.quick:
        paths = paths[:1]
    modes = [("fast", "1")] + ([] if b.quick else [("normal", "0")])
    old = os.environ.get("LABSUPPORT_FAST")
    try:
        for mode, flag in modes:
            os.environ["LABSUPPORT_FAST"] = flag
            for p in paths:
                res = course.run(p)
                limit = {"fast": 90, "normal": 600 if p.stem.startswith("06") else 300}[mode]
                ok = res["error"] is None and res["seconds"] <= limit
                b.record(f"notebook {p.stem} ({mode} mode)", res["seconds"], "s", f"<= {limit}", ok, res["seconds"],
                         note=res["error"] or "")
    finally:
        if old is None:
            os.environ.pop("LABSUPPORT_FAST", None)
        else:
            os.environ["LABSUPPORT_FAST"] = old
