"""Interactive explorers built from plain ipywidgets (work in JupyterLab, Notebook, VS Code, Colab).

Images are shown with an ``ipywidgets.Image`` holding PNG bytes: a redraw only decodes and encodes
one small image, no matplotlib figure, so it stays well under 100 ms on a CPU.
"""

from __future__ import annotations

import io

import ipywidgets as W
import torch
from PIL import Image


def to_png(img: torch.Tensor, scale: int = 6) -> bytes:
    """``img: (1, H, W) or (H, W) in [0, 1]`` -> PNG bytes, enlarged ``scale`` times without blurring."""
    arr = (img.detach().float().cpu().clamp(0, 1).squeeze() * 255).round().byte().numpy()
    pil = Image.fromarray(arr, mode="L").resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def vae_explorer(vae: torch.nn.Module, images: torch.Tensor | None = None, n_sliders: int = 8, scale: int = 6) -> W.Widget:
    """Sliders for the first ``n_sliders`` latent dimensions and the decoded digit, redrawn live.

    ``images: (N, 1, 28, 28)`` (optional): a picker to start from the code of that test digit.
    Dimensions beyond the sliders stay at the starting code (0 = the prior's mean).
    """
    vae.eval()
    dev = next(vae.parameters()).device
    d = vae.latent_dim
    base = torch.zeros(1, d, device=dev)
    sliders = [W.FloatSlider(value=0.0, min=-3.0, max=3.0, step=0.05, description=f"z[{i}]", continuous_update=True) for i in range(min(n_sliders, d))]
    view = W.Image(format="png", width=28 * scale, height=28 * scale)

    def redraw(_=None):
        z = base.clone()
        for i, s in enumerate(sliders):
            z[0, i] = s.value
        with torch.no_grad():
            view.value = to_png(torch.sigmoid(vae.decode(z))[0], scale)

    for s in sliders:
        s.observe(redraw, names="value")
    controls: list[W.Widget] = []
    if images is not None:
        pick = W.IntSlider(value=0, min=0, max=len(images) - 1, description="test digit")

        def start_from(_=None):
            nonlocal base
            with torch.no_grad():
                base = vae.encode(images[pick.value : pick.value + 1].to(dev))[0]
            for i, s in enumerate(sliders):
                s.unobserve(redraw, names="value")
                s.value = float(base[0, i].clamp(-3, 3))
                s.observe(redraw, names="value")
            redraw()

        pick.observe(start_from, names="value")
        controls.append(pick)
    redraw()
    return W.HBox([W.VBox(controls + sliders), view])


# --- Explorers (issue 10: VAE, 2D latent map, conditional GAN) ---
