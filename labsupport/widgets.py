"""Interactive explorers built from plain ipywidgets (work in JupyterLab, Notebook, VS Code, Colab).

Images are shown with an ``ipywidgets.Image`` holding PNG bytes: a redraw only decodes and encodes
one small image, no matplotlib figure, so it stays well under 100 ms on a CPU
(:func:`redraw_latency` measures it).

* :func:`vae_explorer`: sliders for latent dimensions, "start from this test digit", random draw.
* :func:`interpolation_explorer`: a slider that walks the straight line between two test digits' codes.
* :func:`latent_map_explorer`: for a 2D-latent VAE, a map of the latent plane (test codes or the
  decoded grid) with a cross you move by clicking or dragging on the map (mouse events come from
  the small ``ipyevents`` widget; without it, only the x/y sliders move the cross).
* :func:`cgan_explorer`: a conditional generator's digit picker and noise sliders.
* :func:`denoising_explorer`: a slider along a diffusion model's reverse chain (frames kept by
  ``labsupport.diffusion.generate(..., keep=...)``, its second value).

Every explorer returns a widget box with two extra attributes: ``.view`` (the ``Image`` that shows
the decoded digit) and ``.sliders`` (the sliders that move it), used by :func:`redraw_latency` and
the tests.
"""

from __future__ import annotations

import base64
import functools
import io
import statistics
import time
from typing import Callable

import ipywidgets as W
import torch
from PIL import Image, ImageDraw

from .config import resolve_device


def to_png(img: torch.Tensor, scale: int = 6) -> bytes:
    """``img: (1, H, W) or (H, W) in [0, 1]`` -> PNG bytes, enlarged ``scale`` times without blurring."""
    arr = (img.detach().float().cpu().clamp(0, 1).squeeze() * 255).round().byte().numpy()
    pil = Image.fromarray(arr, mode="L").resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    return _png(pil)


def _png(pil: Image.Image) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=1)  # level 1: 3x faster than the default, files barely larger
    return buf.getvalue()


def _show_strip(view: W.Image, imgs: torch.Tensor, scale: int = 2, pad: int = 2) -> None:
    """Show ``imgs: (N, 1, H, W) in [0, 1]`` side by side on a white strip in ``view``, at its pixel size."""
    n, _, h, w = imgs.shape
    strip = torch.ones(h + 2 * pad, n * (w + pad) + pad)
    for i, im in enumerate(imgs.detach().float().cpu().clamp(0, 1)):
        strip[pad : pad + h, pad + i * (w + pad) : pad + i * (w + pad) + w] = im[0]
    view.value = to_png(strip, scale)
    view.width, view.height = str(strip.shape[1] * scale), str(strip.shape[0] * scale)  # else browsers stretch it to the cell's width


def _explorer(box: W.Box, view: W.Image, sliders: list[W.Widget]) -> W.Box:
    box.view, box.sliders = view, sliders
    box.add_class("labsupport-explorer")  # CSS classes let a browser test find the explorer and its image
    view.add_class("labsupport-view")

    def bundle(**kwargs):  # a still of the first picture for pages without a kernel (the website, nbconvert)
        data = type(box)._repr_mimebundle_(box, **kwargs)
        data = dict(data[0]) if isinstance(data, tuple) else dict(data or {})
        data["image/png"] = base64.b64encode(view.value).decode()
        data["text/plain"] = "An interactive explorer: run the notebook in Jupyter or Colab to move its controls."
        return data

    box._repr_mimebundle_ = bundle
    return box


def _quiet_set(sliders: list[W.Widget], values: list[float], callback) -> None:
    """Move several sliders without one redraw per slider (the caller redraws once)."""
    for s, v in zip(sliders, values):
        s.unobserve(callback, names="value")
        s.value = max(s.min, min(s.max, float(v)))
        s.observe(callback, names="value")


def _one_thread(fn):
    """Run ``fn`` on one torch CPU thread: one small image gains nothing from more, and on a busy
    2-core machine two threads made each redraw 40x slower (measured: 0.4 ms on one, 16 ms on two)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(n)

    return wrapped


def _require(model: torch.nn.Module, what: str, attrs: tuple[str, ...]) -> None:
    """A clear error when a model lacks the interface an explorer needs (see labsupport.models)."""
    missing = [a for a in attrs if not hasattr(model, a)]
    if missing:
        raise TypeError(f"This explorer needs {what} with {', '.join(attrs)}; {type(model).__name__} has no {', '.join(missing)}.")


def _require_images(images: torch.Tensor | None, name: str = "images") -> None:
    if images is not None and (not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28) or len(images) == 0):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} should be a tensor of shape (N, 1, 28, 28) in [0, 1], got {got}. "
                         "Use labsupport.data.mnist_tensors(train=False) for the test digits.")


def _label(text: str) -> W.HTML:
    return W.HTML(f"<b>{text}</b>")


def _image(scale: int) -> W.Image:
    return W.Image(format="png", width=28 * scale, height=28 * scale, layout=W.Layout(border="1px solid #999"))


@torch.no_grad()
def _active_dims(vae: torch.nn.Module, images: torch.Tensor, k: int) -> list[int]:
    """The ``k`` latent dimensions the encoder uses most (largest variance of mu over ``images``).

    A VAE leaves some dimensions unused (their posterior equals the prior for every input): a slider
    on one of them would change nothing, so the explorer puts sliders on the busiest ones first.
    """
    mu = vae.encode(images[:1000].to(resolve_device(model=vae)))[0]
    return mu.var(0).argsort(descending=True)[:k].tolist()


def vae_explorer(vae: torch.nn.Module, images: torch.Tensor | None = None, n_sliders: int = 8, scale: int = 6) -> W.Widget:
    """Sliders for ``n_sliders`` latent dimensions and the decoded digit, redrawn live.

    ``vae``: has ``latent_dim``, ``encode(x) -> (mu, logvar)`` and ``decode(z) -> logits``.
    ``images: (N, 1, 28, 28)`` in [0, 1] (optional): a picker and a "start from this test digit"
    button that set every dimension to that digit's code ``mu(x)``; the sliders then sit on the
    dimensions the encoder uses most. Dimensions without a slider keep the starting code
    (0, the prior's mean, until you start from a digit).
    """
    _require(vae, "a VAE", ("latent_dim", "encode", "decode"))
    _require_images(images)
    vae.eval()
    dev, d = resolve_device(model=vae), vae.latent_dim
    dims = _active_dims(vae, images, min(n_sliders, d)) if images is not None else list(range(min(n_sliders, d)))
    base = torch.zeros(1, d, device=dev)
    sliders = [W.FloatSlider(value=0.0, min=-3.0, max=3.0, step=0.05, description=f"z[{i}]", continuous_update=True) for i in dims]
    view = _image(scale)

    @_one_thread
    def redraw(_=None):
        z = base.clone()
        for i, s in zip(dims, sliders):
            z[0, i] = s.value
        with torch.no_grad():
            view.value = to_png(torch.sigmoid(vae.decode(z))[0], scale)

    def set_base(z: torch.Tensor) -> None:
        nonlocal base
        base = z
        _quiet_set(sliders, [z[0, i].item() for i in dims], redraw)
        redraw()

    for s in sliders:
        s.observe(redraw, names="value")
    zero = W.Button(description="z = 0 (prior mean)", layout=W.Layout(width="160px"))
    rand = W.Button(description="random z ~ N(0, I)", layout=W.Layout(width="160px"))
    zero.on_click(lambda _: set_base(torch.zeros(1, d, device=dev)))
    rand.on_click(lambda _: set_base(torch.randn(1, d, device=dev)))
    left: list[W.Widget] = [_label(f"latent code: {len(dims)} of {d} dimensions")] + sliders + [W.HBox([zero, rand])]
    right: list[W.Widget] = [_label("decoded digit"), view]
    if images is not None:
        pick = W.BoundedIntText(value=0, min=0, max=len(images) - 1, description="test digit", layout=W.Layout(width="180px"))
        start = W.Button(description="start from this test digit", button_style="info", layout=W.Layout(width="200px"))
        thumb = _image(max(1, scale // 2))

        def show_pick(_=None):
            thumb.value = to_png(images[pick.value], max(1, scale // 2))

        @_one_thread
        def start_from(_=None):
            with torch.no_grad():
                set_base(vae.encode(images[pick.value : pick.value + 1].to(dev))[0])

        pick.observe(show_pick, names="value")
        start.on_click(start_from)
        show_pick()
        left = [W.HBox([W.VBox([pick, start]), thumb])] + left
    redraw()
    return _explorer(W.HBox([W.VBox(left), W.VBox(right)]), view, sliders)


def interpolation_explorer(
    vae: torch.nn.Module,
    images: torch.Tensor,
    a: int = 0,
    b: int = 1,
    scale: int = 6,
    steps: int = 9,
    interpolate: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> W.Widget:
    """Walk a path between two test digits' codes, by default the straight line ``z = (1 - t) mu(x_a) + t mu(x_b)``.

    ``images: (N, 1, 28, 28)`` in [0, 1]; ``a``, ``b``: indices of the two digits (pickers change them).
    ``interpolate(z0: (D,), z1: (D,), t: (T,)) -> (T, D)`` replaces the straight line (e.g. notebook 07's
    ``slerp``); the strip and the slider both use it. Shows digit A, the decoded point at ``t`` (slider),
    digit B, and a strip of ``steps`` points.
    """
    _require(vae, "a VAE", ("latent_dim", "encode", "decode"))
    _require_images(images)
    vae.eval()
    dev = resolve_device(model=vae)
    pick_a = W.BoundedIntText(value=a, min=0, max=len(images) - 1, description="digit A", layout=W.Layout(width="170px"))
    pick_b = W.BoundedIntText(value=b, min=0, max=len(images) - 1, description="digit B", layout=W.Layout(width="170px"))
    t = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.02, description="t (A → B)", continuous_update=True)
    view, view_a, view_b, strip = _image(scale), _image(scale // 2), _image(scale // 2), W.Image(format="png")
    codes: dict[str, torch.Tensor] = {}
    path = interpolate or (lambda z0, z1, ts: torch.lerp(z0, z1, ts[:, None]))

    @_one_thread
    def redraw(_=None):
        z = path(codes["a"], codes["b"], torch.tensor([t.value], device=dev))
        with torch.no_grad():
            view.value = to_png(torch.sigmoid(vae.decode(z))[0], scale)

    @_one_thread
    def new_ends(_=None):
        with torch.no_grad():
            codes["a"] = vae.encode(images[pick_a.value : pick_a.value + 1].to(dev))[0][0]
            codes["b"] = vae.encode(images[pick_b.value : pick_b.value + 1].to(dev))[0][0]
            ts = torch.linspace(0, 1, steps, device=dev)
            _show_strip(strip, torch.sigmoid(vae.decode(path(codes["a"], codes["b"], ts))))
        view_a.value, view_b.value = to_png(images[pick_a.value], scale // 2), to_png(images[pick_b.value], scale // 2)
        redraw()

    pick_a.observe(new_ends, names="value")
    pick_b.observe(new_ends, names="value")
    t.observe(redraw, names="value")
    new_ends()
    top = W.HBox([W.VBox([_label("A"), view_a]), W.VBox([_label("decoded at t"), view]), W.VBox([_label("B"), view_b])])
    box = W.VBox([W.HBox([pick_a, pick_b]), t, top, _label(f"{steps} evenly spaced values of t from A (t = 0) to B (t = 1), "
                                                          f"on {'the straight line' if interpolate is None else getattr(interpolate, '__name__', 'your path')}"), strip])
    return _explorer(box, view, [t])


def latent_map_explorer(
    vae: torch.nn.Module,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    extent: float = 3.0,
    scale: int = 6,
    map_px: int = 380,
) -> W.Widget:
    """For a VAE with ``latent_dim == 2``: a map of the latent plane and the digit decoded at a point.

    The map shows the test codes ``mu(x)`` (``images: (N, 1, 28, 28)``, ``labels: (N,)``, one marker
    and colour per digit) or, with the toggle, the decoded grid of the square ``[-extent, extent]^2``.
    A red cross marks the point ``(z1, z2)``; click or drag on the map to move it (through
    ``ipyevents``, a course dependency; if it is missing, only the two sliders move it).
    """
    _require(vae, "a VAE", ("latent_dim", "encode", "decode"))
    _require_images(images)
    if vae.latent_dim != 2:
        raise ValueError(f"latent_map_explorer needs a VAE with latent_dim == 2, got latent_dim = {vae.latent_dim}. Use vae_explorer instead.")
    vae.eval()
    dev = resolve_device(model=vae)
    with torch.no_grad():
        codes = vae.encode(images[:2000].to(dev))[0].cpu() if images is not None else None
        n = 15
        ticks = torch.linspace(-extent, extent, n)
        gy, gx = torch.meshgrid(ticks.flip(0), ticks, indexing="ij")  # row 0 is the top: largest z2
        grid = torch.sigmoid(vae.decode(torch.stack([gx.flatten(), gy.flatten()], 1).to(dev))).cpu()
    backgrounds = {"decoded grid": _grid_map(grid, n, extent, map_px)}
    if codes is not None:
        backgrounds = {"test codes": _scatter_map(codes, labels[: len(codes)] if labels is not None else None, extent, map_px), **backgrounds}
    choice = W.ToggleButtons(options=list(backgrounds), description="map")
    x = W.FloatSlider(value=0.0, min=-extent, max=extent, step=0.05, description="z1", continuous_update=True)
    y = W.FloatSlider(value=0.0, min=-extent, max=extent, step=0.05, description="z2", continuous_update=True)
    view = _image(scale)
    map_view = W.Image(format="png", layout=W.Layout(border="1px solid #999"))
    map_view.add_class("labsupport-map")

    @_one_thread
    def redraw(_=None):
        with torch.no_grad():
            view.value = to_png(torch.sigmoid(vae.decode(torch.tensor([[x.value, y.value]], device=dev)))[0], scale)
        pil, to_px = backgrounds[choice.value]
        pil = pil.copy()
        map_view.width, map_view.height = str(pil.width), str(pil.height)
        px, py = to_px(x.value, y.value)
        draw = ImageDraw.Draw(pil)
        draw.line([(px - 9, py), (px + 9, py)], fill=(220, 0, 0), width=3)
        draw.line([(px, py - 9), (px, py + 9)], fill=(220, 0, 0), width=3)
        draw.ellipse([px - 6, py - 6, px + 6, py + 6], outline=(220, 0, 0), width=2)
        map_view.value = _png(pil)

    for w in (x, y, choice):
        w.observe(redraw, names="value")
    hint = "drag the z1 / z2 sliders to move the red cross"
    try:  # optional: click or drag on the map itself
        from ipyevents import Event

        @_one_thread
        def on_mouse(event: dict) -> None:
            if event.get("type") == "mousemove" and not event.get("buttons"):
                return  # only a drag (button held) moves the cross, not hovering
            _, to_px = backgrounds[choice.value]
            z1, z2 = to_px.inverse(event["dataX"], event["dataY"])
            _quiet_set([x, y], [z1, z2], redraw)
            redraw()

        map_view._events = Event(source=map_view, watched_events=["mousedown", "mousemove"], prevent_default_action=True,
                                 wait=40, throttle_or_debounce="throttle")  # at most 25 drag updates a second
        map_view._events.on_dom_event(on_mouse)
        hint = "click or drag on the map, or use the z1 / z2 sliders"
    except ImportError:
        pass
    redraw()
    left = W.VBox([_label("latent plane"), map_view, W.HTML(f"<i>{hint}</i>")])
    box = W.VBox([choice, W.HBox([left, W.VBox([_label("decoded at (z1, z2)"), view, x, y])])])
    return _explorer(box, view, [x, y])


class _PlaneToPixels:
    """Maps latent coordinates to pixel coordinates of a rendered map image, and back."""

    def __init__(self, x0: float, y0: float, x1: float, y1: float, extent: float):
        self.x0, self.y0, self.x1, self.y1, self.extent = x0, y0, x1, y1, extent  # pixel box of [-e, e]^2 (y0 = top)

    def __call__(self, z1: float, z2: float) -> tuple[float, float]:
        e = self.extent
        return self.x0 + (z1 + e) / (2 * e) * (self.x1 - self.x0), self.y0 + (e - z2) / (2 * e) * (self.y1 - self.y0)

    def inverse(self, px: float, py: float) -> tuple[float, float]:
        e = self.extent
        return (px - self.x0) / (self.x1 - self.x0) * 2 * e - e, e - (py - self.y0) / (self.y1 - self.y0) * 2 * e


def _scatter_map(codes: torch.Tensor, labels: torch.Tensor | None, extent: float, px: int):
    """The test codes drawn once with matplotlib (markers per digit), as a PIL image + coordinate map."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plotting import scatter_2d

    fig = Figure(figsize=(px / 80, px / 80), dpi=80)  # drawn off-screen: never shown as a notebook figure
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes([0.12, 0.1, 0.85, 0.83])
    scatter_2d(codes, labels, title="test digits' codes $\\mu(x)$", ax=ax, s=5, alpha=0.5)
    ax.set(xlim=(-extent, extent), ylim=(-extent, extent))
    ax.legend(markerscale=2.5, fontsize=6, loc="upper right", framealpha=0.8, ncol=2) if labels is not None else None
    canvas.draw()
    pil = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    (x0, y0), (x1, y1) = ax.transData.transform([(-extent, extent), (extent, -extent)])
    h = pil.height  # matplotlib's pixel y grows upwards, PIL's downwards
    return pil, _PlaneToPixels(x0, h - y0, x1, h - y1, extent)


def _grid_map(grid: torch.Tensor, n: int, extent: float, px: int):
    """``grid: (n*n, 1, 28, 28)`` decoded on an n x n lattice (row 0 on top) as one PIL image + coordinate map."""
    tiles = grid.view(n, n, 28, 28).permute(0, 2, 1, 3).reshape(n * 28, n * 28)
    pil = Image.fromarray((tiles.clamp(0, 1) * 255).round().byte().numpy(), mode="L").resize((px, px), Image.BILINEAR).convert("RGB")
    half = px / n / 2  # lattice points sit at the tile centres
    return pil, _PlaneToPixels(half, half, px - half, px - half, extent)


def cgan_explorer(generator: torch.nn.Module, n_sliders: int = 8, scale: int = 6, seed: int = 0) -> W.Widget:
    """Pick a digit and move noise sliders: the conditional generator's image, redrawn live.

    ``generator(z: (B, latent_dim), y: (B,) int64) -> (B, 1, 28, 28)`` in [0, 1], with attributes
    ``latent_dim`` and ``num_classes``. The sliders set the first ``n_sliders`` noise dimensions; the
    rest come from "new noise". Below, the same noise for every class: the label picks the digit,
    the noise its style.
    """
    _require(generator, "a conditional generator G(z, y)", ("latent_dim", "num_classes"))
    generator.eval()
    dev, d, k = resolve_device(model=generator), generator.latent_dim, generator.num_classes
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, d, generator=g).to(dev)
    digit = W.ToggleButtons(options=list(range(k)), value=0, description="digit y", style={"button_width": "32px"})
    sliders = [W.FloatSlider(value=0.0, min=-3.0, max=3.0, step=0.05, description=f"z[{i}]", continuous_update=True) for i in range(min(n_sliders, d))]
    for s, v in zip(sliders, base[0, : len(sliders)].tolist()):
        s.value = max(-3.0, min(3.0, v))
    view, row = _image(scale), W.Image(format="png")
    new = W.Button(description="new noise", layout=W.Layout(width="160px"))

    def noise() -> torch.Tensor:
        z = base.clone()
        z[0, : len(sliders)] = torch.tensor([s.value for s in sliders], device=dev)
        return z

    @_one_thread
    def redraw(_=None):
        with torch.no_grad():
            y = torch.tensor([digit.value], device=dev)
            view.value = to_png(generator(noise(), y)[0], scale)

    def redraw_row(_=None):
        with torch.no_grad():
            _show_strip(row, generator(noise().expand(k, d), torch.arange(k, device=dev)))

    @_one_thread
    def both(_=None):
        redraw()
        redraw_row()

    @_one_thread
    def new_noise(_=None):
        nonlocal base
        base = torch.randn(1, d, generator=g).to(dev)
        _quiet_set(sliders, base[0, : len(sliders)].tolist(), both)
        both()

    digit.observe(redraw, names="value")
    for s in sliders:
        s.observe(both, names="value")
    new.on_click(new_noise)
    both()
    left = W.VBox([_label(f"noise z: {len(sliders)} of {d} dimensions"), *sliders, new])
    box = W.VBox([digit, W.HBox([left, W.VBox([_label("G(z, y)"), view])]), _label(f"the same noise z with every label y = 0 … {k - 1}"), row])
    return _explorer(box, view, sliders)


def denoising_explorer(frames: dict[int, torch.Tensor], n: int = 8, scale: int = 3) -> W.Widget:
    """A slider over the kept steps of a reverse diffusion chain: ``frames = {t: (B, 1, 28, 28) in [0, 1]}``.

    The slider runs from the noisiest kept step to t = 0; the view shows the first ``n`` images at that step.
    """
    if not frames or any(not isinstance(v, torch.Tensor) or v.dim() != 4 for v in frames.values()):
        raise ValueError("frames should be {t: tensor (B, 1, 28, 28)}, the second value diffusion.generate(..., keep=[...]) returns.")
    times = sorted(frames, reverse=True)
    view = W.Image(format="png", layout=W.Layout(border="1px solid #999"))
    slider = W.SelectionSlider(options=[(str(t), t) for t in times], value=times[0], description="step t",
                               continuous_update=True, layout=W.Layout(width="420px"))

    def redraw(_=None) -> None:
        _show_strip(view, frames[slider.value][:n], scale=scale)

    slider.observe(redraw, names="value")
    redraw()
    box = W.VBox([_label("Reverse chain: from noise (t = T) to a digit (t = 0)"), slider, view])
    return _explorer(box, view, [slider])


def redraw_latency(explorer: W.Widget, repeats: int = 30, slider: int = 0) -> dict[str, float]:
    """Time the explorer's redraw: nudge ``explorer.sliders[slider]`` ``repeats`` times.

    ipywidgets calls the redraw synchronously when a value changes, so each timing covers the whole
    Python side (model forward pass, PNG encoding, handing the bytes to the widget); the browser
    then only swaps an image. Returns ``{"median_ms", "max_ms", "repeats"}``; raises if the image
    did not change (a redraw that does nothing would look fast).
    """
    s = explorer.sliders[slider]
    lo, hi = s.min, s.max
    start_value, changed, times = s.value, 0, []
    for i in range(repeats):
        before = explorer.view.value
        target = lo + (hi - lo) * ((i % 10) + 0.5) / 10
        if abs(target - s.value) < 1e-9:
            target = lo + (hi - lo) * 0.97
        t0 = time.perf_counter()
        s.value = target
        times.append(time.perf_counter() - t0)
        changed += explorer.view.value != before
    s.value = start_value
    if changed == 0:
        raise RuntimeError("moving the slider never changed the image: the explorer is not redrawing")
    return {"median_ms": 1e3 * statistics.median(times), "max_ms": 1e3 * max(times), "repeats": repeats}
