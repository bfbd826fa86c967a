"""The denoiser search behind the diffusion suite: equal CPU time for each variant, the same sampler.

    python -m bench.diffusion_recipes                      # 90 s per variant
    python -m bench.diffusion_recipes --budget 30 --only "U-Net w16"

Each variant trains a conditional denoiser on all of MNIST for the same wall-clock budget (labels dropped
10% of the time), keeps an EMA of its weights, then draws 1000 digits (100 per class) with DDIM and
guidance 1 and prints the classifier IS, FID (against the real-vs-real floor), label accuracy, the
training steps it managed and the milliseconds per sample. Equal *time*, not equal steps: a bigger
network must earn its cost on a CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from labsupport import data, metrics, pretrained
from labsupport import diffusion as dif
from labsupport.config import seed_everything, setup
from labsupport.models import DiffusionUNet, MLPDenoiser
from labsupport.train import train_diffusion

VARIANTS = {
    "MLP 1024": lambda: MLPDenoiser(1024, num_classes=10),
    "U-Net w16": lambda: DiffusionUNet(16, num_classes=10),
    "U-Net w32": lambda: DiffusionUNet(32, num_classes=10),
}
SCHEDULES = {"cosine": dif.cosine_schedule, "linear": dif.linear_schedule}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.diffusion_recipes", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=90.0, help="training seconds per variant")
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), default=None)
    p.add_argument("--schedule", choices=list(SCHEDULES), default="cosine")
    p.add_argument("--steps", type=int, default=25, help="DDIM sampling steps")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    device = setup(seed=0)
    clf = pretrained.load("classifier", device)
    x, y = data.mnist_tensors(train=True)
    xt, _ = data.mnist_tensors(train=False)
    floor = metrics.frechet_distance(xt[:1000], xt[5000:6000], clf)
    schedule = SCHEDULES[args.schedule](1000)
    labels = torch.arange(10).repeat_interleave(100)
    rows = ["| variant | parameters | steps | IS | FID | label acc. | ms / sample |", "|---|---|---|---|---|---|---|"]
    for name in args.only or list(VARIANTS):
        seed_everything(0)
        model = VARIANTS[name]()
        hist, ema = train_diffusion(model, x, schedule, y=y, max_seconds=args.budget, batch_size=args.batch_size, lr=args.lr, seed=0,
                                    device=device, desc=name)
        start = time.perf_counter()
        images = dif.generate(ema, schedule, len(labels), steps=args.steps, y=labels, guidance=1.0, seed=1, device=device)
        ms = 1000 * (time.perf_counter() - start) / len(labels)
        is_mean, _ = metrics.inception_score(images, clf)
        fid = metrics.frechet_distance(xt[:1000], images, clf)
        acc = metrics.accuracy(clf, images, labels)
        rows.append(f"| {name} | {sum(q.numel() for q in model.parameters()):,} | {len(hist['step'])} | {is_mean:.2f} | {fid:.1f} | "
                    f"{100 * acc:.1f}% | {ms:.1f} |")
        print(rows[-1], flush=True)
    print(f"\n{args.budget:.0f} s per variant, {args.schedule} schedule, DDIM {args.steps} steps, guidance 1, "
          f"1000 samples; real-vs-real FID floor {floor:.1f}\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
