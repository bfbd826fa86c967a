"""The DCGAN recipe search behind notebook 04's settings: same time budget, one variant each.

    python -m bench.dcgan_recipes                  # 150 s per variant (about 30 min with evaluation)
    python -m bench.dcgan_recipes --budget 20 --only base "lr G 4e-3"
    python -m bench.dcgan_recipes --steps 4000 --only "lr G 4e-3 / D 2e-3, z 16"   # equal steps instead

Each variant trains a DCGAN (generator width 32, batch 64 unless stated) on all of MNIST for the same
wall-clock budget, then prints the classifier IS and FID of 5000 samples (generator in eval mode)
and of an exponential moving average of the generator's weights (decay 0.999). Equal *time*, not
equal steps: a wider network or a larger batch must earn its cost. The search started from the
discriminator with two strided convolutions (width 32); the last variants give it three and four.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from labsupport import data, metrics, pretrained
from labsupport.models import DCGANDiscriminator, DCGANGenerator
from labsupport.config import seed_everything, setup
from labsupport.train import batch_sampler, train_gan


def _no_bn(D: nn.Module) -> nn.Module:
    D.net = nn.Sequential(*[m for m in D.net if not isinstance(m, nn.BatchNorm2d)])
    return D


def _spectral(D: nn.Module) -> nn.Module:
    D.net = nn.Sequential(*[nn.utils.parametrizations.spectral_norm(m) if isinstance(m, (nn.Conv2d, nn.Linear)) else m for m in _no_bn(D).net])
    return D


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()


# name -> (generator width, discriminator width, D transform, train_gan keyword arguments); z has 64 dimensions
# unless "z" is given, D has two strided convolutions unless "depth" is given
VARIANTS = {
    "base": (32, 32, None, dict(lr_g=1e-3, lr_d=2e-4)),
    "D without batch norm": (32, 32, _no_bn, dict(lr_g=1e-3, lr_d=2e-4)),
    "G width 64": (64, 32, None, dict(lr_g=1e-3, lr_d=2e-4)),
    "D width 64": (32, 64, None, dict(lr_g=1e-3, lr_d=2e-4)),
    "batch 128": (32, 32, None, dict(lr_g=1e-3, lr_d=2e-4, batch_size=128)),
    "Adam betas (0, 0.99)": (32, 32, None, dict(lr_g=1e-3, lr_d=2e-4, betas=(0.0, 0.99))),
    "hinge + spectral norm, D without batch norm, lr 1e-3 both": (32, 32, _spectral, dict(lr_g=1e-3, lr_d=1e-3, d_loss=_hinge_d, g_loss=lambda f: -f.mean())),
    "lr G 2e-3 / D 4e-4": (32, 32, None, dict(lr_g=2e-3, lr_d=4e-4)),
    "lr G 4e-3 / D 8e-4": (32, 32, None, dict(lr_g=4e-3, lr_d=8e-4)),
    "lr G 4e-3 / D 2e-3": (32, 32, None, dict(lr_g=4e-3, lr_d=2e-3)),
    "lr G 4e-3 / D 4e-3": (32, 32, None, dict(lr_g=4e-3, lr_d=4e-3)),
    "lr G 4e-3 / D 2e-3, G width 64": (64, 32, None, dict(lr_g=4e-3, lr_d=2e-3)),
    "lr G 4e-3 / D 2e-3, D without batch norm": (32, 32, _no_bn, dict(lr_g=4e-3, lr_d=2e-3)),
    "lr G 4e-3 / D 2e-3, z 16": (32, 32, None, dict(lr_g=4e-3, lr_d=2e-3, z=16)),
    "lr G 4e-3 / D 2e-3, z 8": (32, 32, None, dict(lr_g=4e-3, lr_d=2e-3, z=8)),
    "lr G 4e-3 / D 2e-3, z 16, D with 3 convs (width 16)": (32, 16, None, dict(lr_g=4e-3, lr_d=2e-3, z=16, depth=3)),
    "lr G 4e-3 / D 2e-3, z 16, D with 4 convs (width 16, notebook 04)": (32, 16, None, dict(lr_g=4e-3, lr_d=2e-3, z=16, depth=4)),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=150.0, help="training seconds per variant")
    p.add_argument("--steps", type=int, help="train every variant for this many steps instead of --budget seconds")
    p.add_argument("--only", nargs="*", help="variants whose names start with these")
    p.add_argument("--samples", type=int, default=5000)
    args = p.parse_args()
    setup(seed=0)
    clf = pretrained.load("classifier", "cpu")
    x, _ = data.mnist_tensors(train=True)
    xt, _ = data.mnist_tensors(train=False)
    rows = []
    for name, (gw, dw, transform, kw) in VARIANTS.items():
        if args.only and not name.startswith(tuple(args.only)):
            continue
        seed_everything(0)
        kw = {"batch_size": 64, "betas": (0.5, 0.999), **kw}
        G, D = DCGANGenerator(kw.pop("z", 64), gw), DCGANDiscriminator(dw, depth=kw.pop("depth", 2))
        D = transform(D) if transform else D
        ema = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
        hist = train_gan(G, D, batch_sampler(x, seed=0), steps=args.steps or 10**6, device="cpu", max_seconds=None if args.steps else args.budget,
                         callback=lambda step, G, D: ema.update_parameters(G), desc=name, **kw)
        scores = []
        for g in (G, ema.module):
            g.eval()
            torch.manual_seed(1)
            with torch.no_grad():
                fake = torch.cat([g(torch.randn(500, g.latent_dim)) for _ in range(args.samples // 500)])
            scores += [metrics.inception_score(fake, clf)[0], metrics.frechet_distance(xt[: len(fake)], fake, clf)]
        rows.append((name, len(hist["step"]), hist["seconds"][-1], *scores))
        print(f"{name}: {rows[-1][1:]}", flush=True)
    each = f"{args.steps} steps" if args.steps else f"{args.budget:.0f} s"
    print(f"\nDCGAN variants, {each} of training each, {args.samples} samples\n")
    print("| variant | steps | seconds | IS | FID | IS (EMA) | FID (EMA) |\n|---|---|---|---|---|---|---|")
    for name, steps, secs, is_g, fid_g, is_e, fid_e in rows:
        print(f"| {name} | {steps} | {secs:.0f} | {is_g:.2f} | {fid_g:.1f} | {is_e:.2f} | {fid_e:.1f} |")


if __name__ == "__main__":
    main()
