import matplotlib.pyplot as plt
import numpy as np
import torch

from labsupport import plotting


def _not_blank(fig) -> bool:
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)
    return img.std() > 5


def test_figures_have_titles_and_content():
    x = torch.rand(16, 1, 28, 28)
    figs = [
        plotting.show_images(x, nrow=8, title="grid", captions=[str(i) for i in range(16)]),
        plotting.show_reconstructions(x, x.flip(0), title="recon"),
        plotting.plot_losses({"loss": list(np.linspace(2, 1, 50)), "kl": list(np.linspace(0, 1, 50))}, smooth=5, title="curves"),
        plotting.scatter_2d(torch.randn(200, 2), torch.randint(0, 3, (200,)), title="scatter"),
        plotting.plot_density_2d(lambda p: -0.5 * (p ** 2).sum(1), samples=torch.randn(50, 2), title="density"),
    ]
    for fig in figs:
        assert isinstance(fig, plt.Figure)
        titles = [a.get_title() for a in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
        assert any(titles), "every figure needs a title"
        assert _not_blank(fig)
        plt.close(fig)


def test_scatter_uses_markers_not_only_colour():
    fig = plotting.scatter_2d(torch.randn(90, 2), torch.arange(90) % 3, title="s")
    markers = {tuple(map(tuple, c.get_paths()[0].vertices.round(3))) for c in fig.axes[0].collections}
    assert len(markers) == 3
    plt.close(fig)
