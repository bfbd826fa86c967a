"""Issue 38's capstone option, latent flow matching: flow matching on the shipped VAE's codes (notebook 03 meets notebook 09), a small
MLP instead of the pixel U-Net, measured on the ``flow`` suite's protocol (same classifier, sample count, labels, noise seed and FID
floor as its FID-against-NFE curve) so that its rows read beside the pixel flow's.

What it buys is measured as training seconds and milliseconds per sample; what it costs as the FID of the VAE's own reconstructions of
real digits, the decoder's blur that every latent sample passes through. Importing this module registers the suite
(``bench.core.suite``)."""

from __future__ import annotations

import time

import torch

from bench.core import Bench, suite
from labsupport import data, metrics, pretrained

# the velocity MLP and its training: a step budget, not a time budget, so the numbers do not depend on the machine's load.
# Normal: 8000 steps of batch 256 (34 passes over the 60 000 codes), a couple of minutes on one CPU core (the training record
# times it); fast: 400 steps on 10 000 codes, seconds.
HIDDEN, DEPTH, BATCH, LR, P_UNCOND, EMA = 512, 3, 256, 1e-3, 0.1, 0.999
NFES = (2, 4, 10, 20)  # network evaluations per sample, guidance included
GUIDANCE = pretrained.FLOW["guidance"]  # the pixel flow's configured w, so the two curves differ only in where the flow runs


def _steps(k: int) -> str:
    return f"{k} step" + ("s" if k != 1 else "")


@suite
def latent_flow(b: Bench) -> None:
    """Latent flow matching on the shipped VAE's codes (posterior means of the training digits): training time, classifier IS and FID
    (and FID / floor) at NFE 2, 4, 10, 20 with Euler at the pixel flow's guidance, Heun where its NFE fits, a guidance sweep at NFE 20,
    then the baselines: the VAE's own samples (decoded prior draws), its reconstructions (the decoder's ceiling), and the shipped
    pixel flow at NFE 4 (fast) or 4 and 20 (normal), same samples, labels and seed. Last, two summary records: the cost per sample and
    the FID of latent against pixel flow at NFE 20 (normal) or 4 (fast)."""
    from labsupport import flow as fm, latent_flow as lf
    from labsupport.config import seed_everything

    steps, n = b.pick(8000, 400), b.pick(1000, 100)
    clf, vae = pretrained.load("classifier", b.device), pretrained.load("vae", b.device)
    x, y = data.mnist_tensors(train=True)
    xt, _ = data.mnist_tensors(train=False)
    labels = torch.arange(10).repeat_interleave(n // 10)
    floor = metrics.fid_floor(x, xt, clf, n)

    def score(images: torch.Tensor) -> tuple[float, float, str]:
        fid = metrics.frechet_distance(xt[:n], images, clf)
        return metrics.inception_score(images, clf)[0], fid, f"{fid / floor:.2f} x floor {floor:.1f}"

    # training: encode (part of the cost), then fit the MLP
    start = time.perf_counter()
    n_train = b.pick(len(x), 10_000)
    z = lf.encode(vae, x[:n_train])
    seed_everything(b.seed)
    model = lf.LatentVelocity(vae.latent_dim, num_classes=10, hidden=HIDDEN, depth=DEPTH)
    hist, ema = lf.train_latent_flow(model, z, y[:n_train], steps=steps, batch_size=BATCH, lr=LR, p_uncond=P_UNCOND, ema_decay=EMA,
                                     seed=b.seed, device=b.device, desc="latent flow")
    train_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    b.record(f"latent flow: training time ({steps} steps, {n_train} codes)", train_s, "s", None, None, train_s,
             note=f"MLP {DEPTH} x {HIDDEN} ({params / 1e3:.0f}k weights), batch {BATCH}, Adam {LR:g} cosine, EMA {EMA}; encoding included; "
                  f"final loss {sum(hist['loss'][-100:]) / len(hist['loss'][-100:]):.3f}")

    def latent(nfe: int, method: str, w: float) -> tuple[float, float, str, float, float]:
        """IS, FID, its note, label accuracy and ms per sample (decoding included) of ``n`` latent samples at ``nfe`` evaluations."""
        k = nfe // fm.nfe(method, 1, w)
        start = time.perf_counter()
        images = lf.generate(ema, vae, n, steps=k, method=method, y=labels, guidance=w, seed=2)
        ms = 1000 * (time.perf_counter() - start) / n
        return (*score(images), 100 * metrics.accuracy(clf, images, labels), ms)

    curve = {}
    for nfe in NFES:  # the curve: Euler at the pixel flow's guidance, one step per 2 evaluations
        start = time.perf_counter()
        is_mean, fid, ratio, acc, ms = latent(nfe, "euler", GUIDANCE)
        curve[nfe] = (is_mean, fid, ms)
        b.record(f"latent flow, Euler NFE {nfe}: classifier IS ({n} samples)", is_mean, "", None, None, time.perf_counter() - start,
                 note=f"{_steps(nfe // 2)}, guidance {GUIDANCE:g}; label accuracy {acc:.1f}%; {ms:.2f} ms/sample with decoding")
        b.record(f"latent flow, Euler NFE {nfe}: classifier FID ({n} samples)", fid, "", f"floor {floor:.1f}", None, 0, note=ratio)
    for nfe in (4, 20):  # Heun costs 2 evaluations a step, 4 with guidance
        start = time.perf_counter()
        is_mean, fid, ratio, acc, _ = latent(nfe, "heun", GUIDANCE)
        b.record(f"latent flow, Heun NFE {nfe}: classifier FID ({n} samples)", fid, "", f"floor {floor:.1f}", None, time.perf_counter() - start,
                 note=f"{_steps(nfe // 4)}, guidance {GUIDANCE:g}; {ratio}; IS {is_mean:.2f}, label accuracy {acc:.1f}%")
    fids = {}
    for w in b.pick([0.0, 0.5, 1.0, 2.0], [0.0, 1.0]):  # guidance at NFE 20 (w = 0: 20 steps, no unconditional pass)
        if w == GUIDANCE:
            continue  # measured above
        start = time.perf_counter()
        is_mean, fids[w], ratio, acc, _ = latent(20, "euler", w)
        b.record(f"latent flow, Euler NFE 20, guidance {w:g}: classifier FID ({n} samples)", fids[w], "", f"floor {floor:.1f}", None,
                 time.perf_counter() - start, note=f"{ratio}; IS {is_mean:.2f}, label accuracy {acc:.1f}%")

    # baselines: the VAE alone (prior draws), its reconstructions of real digits (the decoder's ceiling), the pixel flow
    start = time.perf_counter()
    prior = lf.decode(vae, torch.randn(n, vae.latent_dim, generator=torch.Generator().manual_seed(2)))
    is_mean, prior_fid, ratio = score(prior)
    b.record(f"VAE (shipped) prior samples: classifier IS ({n} samples)", is_mean, "", None, None, time.perf_counter() - start,
             note="decoded N(0, I) draws, pixel probabilities (no labels: IS and FID only)")
    b.record(f"VAE (shipped) prior samples: classifier FID ({n} samples)", prior_fid, "", f"floor {floor:.1f}", None, 0, note=ratio)
    start = time.perf_counter()
    real = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:n]  # fid_floor's training digits, decoded from their codes
    is_mean, recon_fid, ratio = score(lf.decode(vae, lf.encode(vae, x[real])))
    b.record(f"VAE (shipped) reconstructions of training digits: classifier FID ({n})", recon_fid, "", f"floor {floor:.1f}", None,
             time.perf_counter() - start, note=f"{ratio}; IS {is_mean:.2f}; the floor's real digits through encoder means and decoder: "
                                               "the blur every latent sample carries")
    model_px, cfg = pretrained.load("flow", b.device), pretrained.FLOW
    pixel = {}
    for nfe in b.pick([4, 20], [4]):
        start = time.perf_counter()
        images = fm.generate(model_px, n, steps=nfe // 2, method="euler", y=labels, guidance=cfg["guidance"], seed=2, device=b.device)
        pixel[nfe] = 1000 * (time.perf_counter() - start) / n
        is_mean, fid, ratio = score(images)
        pixel[nfe] = (pixel[nfe], fid)
        b.record(f"flow (shipped, pixels), Euler NFE {nfe}: classifier FID ({n} samples)", fid, "", f"floor {floor:.1f}", None,
                 time.perf_counter() - start, note=f"{ratio}; IS {is_mean:.2f}; {pixel[nfe][0]:.1f} ms/sample; guidance {cfg['guidance']:g}")

    # the trade in two numbers, at the largest NFE both were sampled at
    nfe = max(pixel)
    ms_px, fid_px = pixel[nfe]
    _, fid_l, ms_l = curve[nfe]
    train_px = pretrained.manifest()["flow"]["train_seconds"]
    b.record(f"latent vs pixel flow, Euler NFE {nfe}: sampling cost per sample (pixel / latent)", ms_px / ms_l, "x", None, None, 0,
             note=f"{ms_l:.2f} vs {ms_px:.1f} ms/sample on this machine; training {train_s / 60:.1f} min here vs the shipped pixel flow's "
                  f"{train_px / 60:.0f} min")
    b.record(f"latent vs pixel flow, Euler NFE {nfe}: classifier FID (latent / pixel)", fid_l / fid_px, "x", None, None, 0,
             note=f"FID {fid_l:.1f} vs {fid_px:.1f} (floor {floor:.1f}); the VAE's reconstructions alone score {recon_fid:.1f}")
    if b.fast:  # a smoke floor: 400 steps already learn codes closer to the digits than the VAE's own prior draws
        fid_20 = curve[20][1]
        b.record("latent flow fast floor: classifier FID at Euler NFE 20", fid_20, "", f"< VAE prior samples' {prior_fid:.1f} (fast floor)",
                 fid_20 < prior_fid, 0)
