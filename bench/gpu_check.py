"""The GPU check in one command: ``make gpu-check`` or ``python -m bench.gpu_check [--device cuda] [--jobs 2]``.

On the given device (default: ``cuda``; ``mps`` on a Mac) it

1. loads every shipped checkpoint there and runs a batch through it;
2. times the course's training steps (VAE, DCGAN, evaluation classifier) on the CPU and on the device;
3. runs every solution notebook in fast mode with ``LABSUPPORT_DEVICE`` set to it;
4. runs the bench's fast suites there (``python -m bench --mode fast --device ...``).

Prints one table (the format of ``python -m bench``) and exits 1 if anything failed. Meant to take
under 5 minutes on one GPU. ``--skip notebooks bench`` leaves parts out (e.g. for a dry run on a CPU).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from bench.core import ROOT, machine, table
from labsupport import config, models, pretrained
from labsupport.losses import gan_d_loss, vae_objective
from labsupport.train import gan_step

PARTS = ("checkpoints", "steps", "notebooks", "bench")


def _record(name: str, value: float, unit: str, ok: bool | None, seconds: float, device: torch.device, note: str = "") -> dict:
    return {"name": name, "value": round(float(value), 4) if value == value else None, "unit": unit, "target": None,
            "pass": ok, "seconds": round(seconds, 1), "device": str(device), "note": note}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def check_checkpoints(device: torch.device) -> list[dict]:
    """Every shipped model loads on ``device`` and gives finite outputs there."""
    out = []
    for name in pretrained.REGISTRY:
        start = time.perf_counter()
        try:
            model = pretrained.load(name, device)
            on = {p.device.type for p in model.parameters()}
            with torch.no_grad():
                if hasattr(model, "encode"):
                    y = model.decode(model.encode(torch.rand(8, 1, 28, 28, device=device))[0])
                elif hasattr(model, "num_classes"):
                    y = model(torch.randn(8, model.latent_dim, device=device), torch.arange(8, device=device))
                else:
                    y = model(torch.rand(8, 1, 28, 28, device=device))
            ok = on == {device.type} and y.device.type == device.type and bool(torch.isfinite(y).all())
            out.append(_record(f"checkpoint {name} loads and runs", float(ok), "bool", ok, time.perf_counter() - start, device))
        except Exception as err:
            out.append(_record(f"checkpoint {name} loads and runs", 0.0, "bool", False, time.perf_counter() - start, device, f"{type(err).__name__}: {err}"))
    return out


def _workloads(device: torch.device):
    """Name -> a function doing one training step on ``device`` (models built fresh, seeded)."""
    config.seed_everything(0)
    vae = models.MLPVAE().to(device)
    opt_vae = torch.optim.Adam(vae.parameters(), 1e-3)
    x_vae = torch.bernoulli(torch.rand(128, 1, 28, 28, device=device))

    def vae_step():
        loss, _ = vae_objective(vae, x_vae)
        opt_vae.zero_grad()
        loss.backward()
        opt_vae.step()

    G, D = models.DCGANGenerator(latent_dim=16, width=32).to(device), models.DCGANDiscriminator(width=16).to(device)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), 4e-3, betas=(0.5, 0.999)), torch.optim.Adam(D.parameters(), 2e-3, betas=(0.5, 0.999))
    x_gan = torch.rand(64, 1, 28, 28, device=device)

    def dcgan_step():
        gan_step(G, D, opt_g, opt_d, x_gan, torch.randn(64, 16, device=device), d_loss=gan_d_loss)

    clf = models.DigitClassifier().to(device)
    opt_c = torch.optim.Adam(clf.parameters(), 1e-3)
    x_c, y_c = torch.rand(128, 1, 28, 28, device=device), torch.randint(0, 10, (128,), device=device)

    def classifier_step():
        loss = torch.nn.functional.cross_entropy(clf(x_c), y_c)
        opt_c.zero_grad()
        loss.backward()
        opt_c.step()

    return {"VAE step (batch 128)": vae_step, "DCGAN step (batch 64)": dcgan_step, "classifier step (batch 128)": classifier_step}


def step_times(device: torch.device, seconds: float = 3.0) -> list[dict]:
    """Milliseconds per training step on the CPU and on ``device``, each timed for about ``seconds``."""
    timings = {}
    for dev in dict.fromkeys([torch.device("cpu"), device]):
        for name, step in _workloads(dev).items():
            for _ in range(3):  # warm-up: kernels, allocator, autotuning
                step()
            _sync(dev)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                step()
                n += 1
            _sync(dev)
            timings[(name, dev.type)] = 1000 * (time.perf_counter() - start) / n
    out = []
    for (name, kind), ms in timings.items():
        out.append(_record(f"{name}: ms per step", ms, "ms", None, seconds, torch.device(kind)))
    if device.type != "cpu":
        for name in _workloads(torch.device("cpu")):
            out.append(_record(f"{name}: speed-up on {device.type}", timings[(name, "cpu")] / timings[(name, device.type)], "x", None, 0, device))
    return out


def run_notebooks(device: torch.device, jobs: int) -> list[dict]:
    """Every solution notebook in fast mode with ``LABSUPPORT_DEVICE`` = ``device``, ``jobs`` at a time."""
    from labsupport import course

    paths = sorted((ROOT / "solutions").glob("*.ipynb"))
    threads = max(1, config.cores() // max(1, jobs))
    env = config.environment(mode="fast", threads=threads, device=str(device))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda p: course.run(p, env=env, timeout=600), paths))
    return [_record(f"notebook {Path(r['notebook']).stem} (fast mode)", r["seconds"], "s", r["error"] is None, r["seconds"], device,
                    (r["error"] or "")[-300:]) for r in results]


def run_bench(device: torch.device) -> list[dict]:
    """``python -m bench --mode fast`` on ``device``; its records, marked with the device."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench", "--mode", "fast", "--device", str(device), "--out", str(out)], cwd=ROOT,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        records = json.loads(out.read_text())["records"] if out.exists() else []
    note = "" if proc.returncode == 0 else proc.stdout[-300:] + proc.stderr[-300:]
    return records + [_record("bench --mode fast", float(proc.returncode == 0), "bool", proc.returncode == 0, seconds, device, note)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="the accelerator to check (default: cuda)")
    p.add_argument("--jobs", type=int, default=2, help="notebooks run at once (default 2)")
    p.add_argument("--skip", nargs="*", choices=PARTS, default=[], help="parts to leave out")
    args = p.parse_args(argv)
    try:
        device = config.get_device(args.device)
    except ValueError as err:
        print(f"No GPU check possible here: {err}", file=sys.stderr)
        return 2
    config.setup(seed=0, device=str(device))
    start = time.perf_counter()
    records = []
    for part, fn in (("checkpoints", lambda: check_checkpoints(device)), ("steps", lambda: step_times(device)),
                     ("notebooks", lambda: run_notebooks(device, args.jobs)), ("bench", lambda: run_bench(device))):
        if part not in args.skip:
            print(f"## {part}", flush=True)
            records += fn()
    print("\n" + table(records))
    print(f"\n{machine()}; GPU check took {time.perf_counter() - start:.0f} s")
    failed = [r["name"] for r in records if r["pass"] is False]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
