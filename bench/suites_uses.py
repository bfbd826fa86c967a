"""Notebook 06's uses of generative models (issues 20 and 39): denoising with the diffusion model, anomaly detection
with a VAE, learning from 100 labels, debiasing a classifier with a VAE's latent density.

Each suite calls the same labsupport code the notebooks use; importing this module registers them (``bench.core.suite``)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.core import Bench, suite
from labsupport import config, data, metrics, pretrained


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
