"""Small pretrained weights shipped inside the package, with their SHA-256 and the metrics they reached.

    python -m labsupport.pretrained list               # what is shipped, its size, hash and metrics
    python -m labsupport.pretrained verify             # re-hash every file against the manifest
    python -m labsupport.pretrained train [NAME ...]   # retrain (seeded) and overwrite, all by default

Notebooks call :func:`load_or_train`: load the shipped weights when present, train when asked
(``retrain=True``) or when the file is absent. Files are loaded with ``torch.load(...,
weights_only=True)``; a truncated or tampered file raises :class:`CheckpointError` naming the file and
the retrain command, never an unpickling traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from . import metrics
from .config import resolve_device, seed_everything, setup
from .data import mnist_tensors
from . import diffusion, flow
from .models import (MLPVAE, ConditionalDiscriminator, ConditionalGenerator, DCGANDiscriminator, DCGANGenerator, DiffusionUNet,
                     DigitClassifier)
from .train import batch_sampler, train_classifier, train_conditional_gan, train_diffusion, train_gan, train_vae, weight_average

DIR = Path(__file__).resolve().parent / "checkpoints"
MANIFEST = DIR / "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, tampered with, or does not fit its model."""


@dataclass(frozen=True)
class Spec:
    build: Callable[[], nn.Module]                                   # an untrained model of the right shape
    train: Callable[[torch.device], tuple[nn.Module, dict]]          # (trained model, metrics it reached)
    seed: int = 0


def _classifier_spec() -> Spec:
    return Spec(build=DigitClassifier, train=lambda dev: train_classifier(epochs=4, device=dev, seed=0))


def _vae_spec(latent_dim: int, hidden: int, epochs: int) -> Callable[[], Spec]:
    """A VAE trained with :func:`labsupport.train.train_vae` on all 60 000 dynamically binarized digits."""

    def make() -> Spec:
        def fit_vae(dev: torch.device) -> tuple[nn.Module, dict]:
            x, _ = mnist_tensors(train=True)
            vae = MLPVAE(latent_dim, hidden).to(dev)
            hist = train_vae(vae, x, epochs=epochs, device=dev, seed=0, lr_decay=True, desc=f"VAE z={latent_dim}")
            return vae, {**metrics.evaluate_vae(vae), "epochs": epochs, "steps": hist["step"][-1], "latent_dim": latent_dim, "hidden": hidden,
                         "lr": "Adam 1e-3, cosine decay", "batch_size": 128}

        return Spec(build=lambda: MLPVAE(latent_dim, hidden), train=fit_vae)

    return make


def _cgan_spec(schedule: tuple[tuple[float, float], ...] = ((8e-4, 6), (2e-4, 3), (5e-5, 2)), batch_size: int = 64) -> Spec:
    """Conditional MLP GAN (projection discriminator) on all 60 000 digits, ``schedule`` = (lr, epochs) phases; only G is shipped."""
    def fit_cgan(dev: torch.device) -> tuple[nn.Module, dict]:
        x, y = mnist_tensors(train=True)
        G, D = ConditionalGenerator().to(dev), ConditionalDiscriminator().to(dev)
        steps = [(lr, int(epochs * len(x) // batch_size)) for lr, epochs in schedule]
        train_conditional_gan(G, D, x, y, schedule=steps, batch_size=batch_size, device=dev)
        clf = load("classifier", dev)
        images, labels = metrics.conditional_samples(G, 1000, seed=1)
        xt, _ = mnist_tensors(train=False)
        return G, {"label_accuracy": round(metrics.accuracy(clf, images, labels), 4),
                   "fid_vs_test": round(metrics.frechet_distance(xt, images, clf), 2),
                   "epochs": sum(e for _, e in schedule), "schedule_lr_steps": steps, "batch_size": batch_size}

    return Spec(build=ConditionalGenerator, train=fit_cgan)


DIFFUSION = {"width": 16, "T": 1000, "schedule": "cosine", "epochs": 16, "batch_size": 32, "lr": 2e-3, "p_uncond": 0.1,
             "ema_decay": 0.999, "sample_steps": 25, "guidance": 0.5}  # notebook 08's shipped denoiser and the sampler its metrics use
# guidance 0.5 (bench diffusion_guidance, this model, 2000 samples, DDIM 25): FID 13.3 at w = 0, 8.6 at 0.25, 9.3 at 0.5,
# 15.8 at 1; 0.5 gives up 0.7 FID against 0.25 for label accuracy 98.0% instead of 96.2%


def _diffusion_spec() -> Spec:
    """Conditional U-Net denoiser (notebook 08) on all 60 000 digits; the EMA weights are shipped, measured on 5000 DDIM samples."""
    cfg = DIFFUSION

    def fit_diffusion(dev: torch.device) -> tuple[nn.Module, dict]:
        x, y = mnist_tensors(train=True)
        schedule = diffusion.cosine_schedule(cfg["T"])
        model = DiffusionUNet(cfg["width"], num_classes=10, T=cfg["T"])
        hist, ema = train_diffusion(model, x, schedule, y=y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                                    p_uncond=cfg["p_uncond"], ema_decay=cfg["ema_decay"], seed=0, device=dev, desc="diffusion")
        clf = load("classifier", dev)
        labels = torch.arange(10).repeat_interleave(500)
        start = time.perf_counter()
        images = diffusion.generate(ema, schedule, len(labels), steps=cfg["sample_steps"], y=labels, guidance=cfg["guidance"], seed=1, device=dev)
        ms = 1000 * (time.perf_counter() - start) / len(labels)
        xt, _ = mnist_tensors(train=False)
        is_mean, _ = metrics.inception_score(images, clf)
        return ema, {**{k: v for k, v in cfg.items()}, "steps": hist["step"][-1], "final_loss": round(hist["loss"][-1], 4),
                     "inception_score": round(is_mean, 3), "fid_vs_test": round(metrics.frechet_distance(xt[:5000], images, clf), 2),
                     "fid_floor_train_vs_test": round(metrics.fid_floor(x, xt, clf, 5000), 2),
                     "label_accuracy": round(metrics.accuracy(clf, images, labels), 4), "ms_per_sample": round(ms, 1), "n_samples": len(labels)}

    return Spec(build=lambda: DiffusionUNet(cfg["width"], num_classes=10, T=cfg["T"]), train=fit_diffusion)


FLOW = {"width": 16, "epochs": 3, "batch_size": 32, "lr": 2e-3, "p_uncond": 0.1, "ema_decay": 0.999, "sample_method": "euler",
        "sample_steps": 10, "guidance": 0.5}  # notebook 09's shipped velocity network and the sampler its metrics use (20 NFE with guidance)
# sampler and guidance (these weights, 300 samples, floor 16.8 at that size): Euler 10 steps, w = 0.5: IS 8.46 / FID 25.4; Heun 5 steps
# (also 20 NFE): 8.42 / 36.8 (its last corrector reads the network at t = 1 on the predictor's point and leaves speckle); Heun 5 with an
# Euler last step (18 NFE): 8.49 / 26.2; Euler 10 at w = 1 / 2: 8.68 / 38.6 and 8.71 / 66.0 (guidance buys label accuracy, not IS)


def _flow_spec() -> Spec:
    """Class-conditional flow matching (notebook 09): 08's U-Net as a velocity network ``v(x_t, t, y)`` (``T=1``: t in [0, 1]
    gets the same sinusoidal embedding as diffusion's t / 1000), trained with :func:`labsupport.flow.loss` by 08's loop (labels
    dropped 10% of the time for guidance); the EMA weights are shipped, measured on 5000 samples of ``flow.nfe(...)`` = 20
    network evaluations each, guidance included. Trained on one thread of a loaded 2-core machine (several engineers at once), hence 3 epochs, not 08's 16.
    The shipped run: 5625 steps in 33 min 15 s; its scoring at the sampler first configured (Heun 5) was stopped, and the weights
    were scored at the configured Euler 10 by this function's metric code; train_seconds = that training + that scoring."""
    cfg = FLOW

    def fit_flow(dev: torch.device) -> tuple[nn.Module, dict]:
        x, y = mnist_tensors(train=True)
        model = DiffusionUNet(cfg["width"], num_classes=10, T=1)
        hist, ema = train_diffusion(model, x, None, y=y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                                    p_uncond=cfg["p_uncond"], ema_decay=cfg["ema_decay"], seed=0, device=dev, desc="flow matching",
                                    loss=lambda m, x1, _schedule, yb: flow.loss(m, x1, yb))
        torch.save({k: v.detach().cpu() for k, v in ema.state_dict().items()}, DIR / "flow.unscored.pt")  # kept if scoring is cut short
        clf = load("classifier", dev)
        labels = torch.arange(10).repeat_interleave(500)
        start = time.perf_counter()
        images = flow.generate(ema, len(labels), steps=cfg["sample_steps"], method=cfg["sample_method"], y=labels, guidance=cfg["guidance"],
                             seed=1, device=dev)
        ms = 1000 * (time.perf_counter() - start) / len(labels)
        xt, _ = mnist_tensors(train=False)
        (DIR / "flow.unscored.pt").unlink()
        return ema, {**cfg, "nfe": flow.nfe(cfg["sample_method"], cfg["sample_steps"], cfg["guidance"]), "steps": hist["step"][-1],
                     "final_loss": round(hist["loss"][-1], 4), "inception_score": round(metrics.inception_score(images, clf)[0], 3),
                     "fid_vs_test": round(metrics.frechet_distance(xt[:5000], images, clf), 2),
                     "fid_floor_train_vs_test": round(metrics.fid_floor(x, xt, clf, 5000), 2),
                     "label_accuracy": round(metrics.accuracy(clf, images, labels), 4), "ms_per_sample": round(ms, 1), "n_samples": len(labels)}

    return Spec(build=lambda: DiffusionUNet(cfg["width"], num_classes=10, T=1), train=fit_flow)


DCGAN = {"latent_dim": 16, "width": 64, "d_width": 32, "d_depth": 4, "batch_size": 64, "betas": (0.5, 0.999), "ema_decay": 0.9998,
         "phases": ((4e-3, 2e-3, 54000),)}  # notebook 04's recipe with G and D twice as wide, 58 epochs: (lr G, lr D, steps) phases


def _dcgan_spec() -> Spec:
    """Notebook 04's DCGAN and recipe with G and D twice as wide (widths 64 / 32), trained 58 epochs; an exponential moving average
    of G's weights is shipped (a GAN's raw weights keep circling the equilibrium; their average sits nearer it). Measured at
    training (5000 samples, floor 4.55): widths 32 / 16 for 22 500 steps IS 8.68 / FID 7.39; the same with a second phase at a
    quarter of the rates IS 8.59 / FID 8.30; widths 64 / 16 for 30 000 steps IS 8.80 / FID 6.17 (26 min on 2 CPU cores);
    widths 64 / 32 for 36 000 steps IS 8.92 / FID 6.32 (40 min). At 6000 steps D width 32 beat 16 (IS 8.62 / FID 7.73 vs
    8.59 / 8.28); width 64 costs about 3x per step. At 6000 steps a spectral-norm D without batch norm and the hinge loss, at
    the same rates, did much worse: IS 8.07 / FID 14.98 against 8.63 / 7.30 for this recipe.

    One run of widths 64 / 32 for 59 004 steps (stopped by time), averages with decays 0.999 / 0.9995 / 0.9998 kept side by
    side and scored as below, IS / FID on z seed 1 (the bench's seed 0 in brackets): 36 000 steps 8.86 / 6.42 (8.92 / 5.89),
    8.86 / 6.10 (8.94 / 5.67), 8.86 / 5.95 (8.95 / 5.57); 48 000 steps 8.92 / 5.90 (8.95 / 5.55), 8.93 / 5.72 (8.95 / 5.43),
    8.92 / 5.77 (8.97 / 5.42); 54 000 steps 8.92 / 5.84 (8.95 / 5.38), 8.92 / 5.89 (8.98 / 5.31), 8.95 / 5.83 (8.99 / 5.33);
    59 004 steps 8.91 / 6.08 (8.96 / 5.85), 8.94 / 5.94 (8.99 / 5.73), 8.95 / 5.82 (9.00 / 5.54). Training longer and a
    longer average both help a little, the IS levels off just under 9; shipped: 54 000 steps, decay 0.9998. Its recorded
    4589 s are that run's time to step 54 000, slowed by the two extra averages and four scorings beside it (alone: about
    13 steps/s, 70 min, on 2 CPU cores)."""
    cfg = DCGAN

    def build() -> nn.Module:
        return DCGANGenerator(latent_dim=cfg["latent_dim"], width=cfg["width"])

    def fit_dcgan(dev: torch.device) -> tuple[nn.Module, dict]:
        x, _ = mnist_tensors(train=True)
        G, D = build(), DCGANDiscriminator(width=cfg["d_width"], depth=cfg["d_depth"])
        build()  # drawn and dropped: the shipped run built its average's first copy here, and the random numbers after it must match
        average = weight_average(G, cfg["ema_decay"], device=dev)
        average.update_parameters(G)  # the average starts at G's initial weights
        sample, done = batch_sampler(x, seed=0), 0
        for lr_g, lr_d, steps in cfg["phases"]:
            train_gan(G, D, sample, steps=steps, batch_size=cfg["batch_size"], lr_g=lr_g, lr_d=lr_d, betas=cfg["betas"],
                      callback=lambda step, G, D: average.update_parameters(G), device=dev, desc=f"DCGAN, lr G {lr_g:g}")
            done += steps
        # batch norm: statistics of the averaged weights' own activations (a cumulative average over 20 noise batches), not the raw G's
        update_bn([torch.randn(500, cfg["latent_dim"], generator=torch.Generator().manual_seed(100 + i)).to(dev) for i in range(20)], average)
        ema = average.module.eval()
        clf = load("classifier", dev)
        with torch.no_grad():
            images = torch.cat([ema(z.to(dev)).cpu() for z in torch.randn(5000, cfg["latent_dim"], generator=torch.Generator().manual_seed(1)).split(500)])
        xt, _ = mnist_tensors(train=False)
        return ema.cpu(), {**{k: v for k, v in cfg.items()}, "steps": done, "inception_score": round(metrics.inception_score(images, clf)[0], 3),
                           "fid_vs_test": round(metrics.frechet_distance(xt[:5000], images, clf), 2),
                           "fid_floor_train_vs_test": round(metrics.fid_floor(x, xt, clf, 5000), 2), "n_samples": len(images)}

    return Spec(build=build, train=fit_dcgan)


# name -> Spec: the evaluation classifier (notebook 01), the VAEs (03), the conditional GAN (05).
REGISTRY: dict[str, Callable[[], Spec]] = {
    "classifier": _classifier_spec,
    "vae": _vae_spec(latent_dim=32, hidden=256, epochs=60),     # the notebook's main VAE (2.2 MB)
    "vae2d": _vae_spec(latent_dim=2, hidden=256, epochs=20),    # 2D latent: manifold grid and latent map
    "cgan": lambda: _cgan_spec(),                                # G(z, y): ask for any digit
    "dcgan": _dcgan_spec,                                        # notebook 04: G(z), EMA weights
    "diffusion": _diffusion_spec,                                # notebook 08: eps(x_t, t, y), EMA weights
    "flow": _flow_spec,                                          # notebook 09: v(x_t, t, y), EMA weights
}


def _retrain_hint(name: str) -> str:
    return f"Retrain it with:  python -m labsupport.pretrained train {name}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def path_of(name: str) -> Path:
    return DIR / f"{name}.pt"


def _spec(name: str) -> Spec:
    if name not in REGISTRY:
        raise KeyError(f"No pretrained model called {name!r}. Known: {', '.join(REGISTRY)}")
    return REGISTRY[name]()


def load(name: str, device: torch.device | str | None = None, path: Path | None = None) -> nn.Module:
    """Load shipped weights into a fresh model (eval mode) on ``device`` (None: the best available).

    Raises :class:`CheckpointError` on any problem with the file."""
    spec, path = _spec(name), Path(path) if path else path_of(name)
    if not path.exists():
        raise CheckpointError(f"Checkpoint {path} is missing. {_retrain_hint(name)}")
    expected = manifest().get(name, {}).get("sha256") if path == path_of(name) else None
    if expected and sha256(path) != expected:
        raise CheckpointError(f"Checkpoint {path} does not match its SHA-256 in {MANIFEST.name} (truncated or modified). {_retrain_hint(name)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"Checkpoint {path} could not be read ({type(err).__name__}); it is corrupt or not a weights file. {_retrain_hint(name)}") from None
    model = spec.build()
    try:
        model.load_state_dict(state)
    except Exception as err:
        raise CheckpointError(f"Checkpoint {path} does not fit the current {type(model).__name__} ({str(err)[:300]}). {_retrain_hint(name)}") from None
    return model.to(resolve_device(device)).eval()


def save(name: str, model: nn.Module, metrics: dict, seconds: float, device: torch.device) -> Path:
    """Write the weights and record their hash, metrics and provenance in the manifest."""
    DIR.mkdir(exist_ok=True)
    path = path_of(name)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    entries = manifest()
    entries[name] = {
        "file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size, "metrics": metrics,
        "seed": _spec(name).seed, "train_seconds": round(seconds, 1), "device": str(device), "torch": torch.__version__,
    }
    MANIFEST.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return path


def train(name: str, device: torch.device | str | None = None, keep: bool = True) -> tuple[nn.Module, dict]:
    """Train ``name`` from scratch with its fixed seed; with ``keep``, overwrite the shipped file."""
    dev = resolve_device(device)
    spec = _spec(name)
    seed_everything(spec.seed)
    start = time.perf_counter()
    model, metrics = spec.train(dev)
    seconds = time.perf_counter() - start
    if keep:
        save(name, model, metrics, seconds, dev)
    return model.eval(), metrics


def load_or_train(name: str, retrain: bool = False, device: torch.device | str | None = None) -> nn.Module:
    """The shipped model when present (and ``retrain`` is False); otherwise train it now.

    A model trained here is not written over the shipped file (only ``python -m labsupport.pretrained
    train`` does that), so a notebook never changes the package it runs from.
    """
    dev = resolve_device(device)
    if retrain or not path_of(name).exists():
        print(f"training {name!r} from scratch ...")
        model, metrics = train(name, dev, keep=False)
        print(f"trained {name!r}: {metrics}")
        return model.to(dev)
    model = load(name, dev)
    print(f"loaded pretrained {name!r} ({path_of(name).name}): {manifest().get(name, {}).get('metrics', {})}")
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labsupport.pretrained", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="retrain models (all by default) and overwrite the shipped weights")
    t.add_argument("names", nargs="*")
    t.add_argument("--device", default=None)
    sub.add_parser("verify", help="check every shipped file against its SHA-256")
    sub.add_parser("list", help="list shipped checkpoints")
    args = p.parse_args(argv)
    if args.cmd == "train":
        setup(seed=0, device=args.device)
        for name in args.names or list(REGISTRY):
            _, m = train(name, args.device)
            print(f"{name}: {m}  -> {path_of(name)}  sha256 {manifest()[name]['sha256'][:12]}")
        return 0
    bad = 0
    for name, entry in manifest().items():
        if args.cmd == "list":
            print(f"{name:12s} {entry['bytes'] / 1e6:6.2f} MB  sha256 {entry['sha256'][:12]}  {entry['metrics']}")
            continue
        try:
            load(name)
            print(f"ok   {name}")
        except CheckpointError as err:
            bad += 1
            print(f"FAIL {err}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
