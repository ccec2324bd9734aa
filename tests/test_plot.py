"""scoregen.plot: lazy import, exact data layout (grids, tiles, arrows, breaks), atomic output."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from scoregen import plot
from scoregen._io import atomic_write
from scoregen.gmm import preset


def test_import_scoregen_and_plot_does_not_import_matplotlib():
    code = "import sys, scoregen, scoregen.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "matplotlib was imported at module import time"


def test_grid_points_rows_run_along_y():
    points, xs, ys = plot.grid_points((-1.0, 3.0, 10.0, 12.0), 5)
    assert points.shape == (25, 2) and points.dtype == torch.float64
    image = points.reshape(5, 5, 2)
    assert np.allclose(image[2, 4].numpy(), [xs[4], ys[2]])
    assert np.allclose(xs, np.linspace(-1, 3, 5)) and np.allclose(ys, np.linspace(10, 12, 5))


@pytest.mark.parametrize("bounds", [0.0, (1, 0, 0, 1), (0, 1, 0)])
def test_bad_bounds_are_a_value_error(bounds):
    with pytest.raises(ValueError, match="bounds"):
        plot.grid_points(bounds, 4)


def test_tile_images_places_each_image_at_its_row_and_column():
    batch, height, width = 5, 2, 3
    images = torch.arange(batch, dtype=torch.float64)[:, None, None, None].expand(
        batch, 1, height, width
    )
    tiled = plot.tile_images(images, nrow=3, padding=1, value_range=(0.0, 4.0), pad_value=-1.0)
    assert tiled.shape == (2 * (height + 1) + 1, 3 * (width + 1) + 1, 1)
    for b in range(batch):
        top, left = 1 + (b // 3) * (height + 1), 1 + (b % 3) * (width + 1)
        block = tiled[top : top + height, left : left + width, 0]
        assert np.allclose(block, b / 4.0), f"image {b} not at row {b // 3}, column {b % 3}"
    assert np.all(tiled[0] == -1.0) and np.all(tiled[:, 0] == -1.0)
    # the empty sixth slot stays padding
    assert np.all(tiled[4:6, 9:12] == -1.0)


def test_tile_images_applies_normalization_then_clips():
    images = torch.tensor([[[[-1.0, 0.0, 1.0, 3.0]]]])  # [1, 1, 1, 4] in model space
    tiled = plot.tile_images(images, padding=0, normalization={"scale": 0.5, "shift": 0.5})
    assert np.allclose(tiled[0, :, 0], [0.0, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("shape", [(3, 4), (2, 1, 1, 3, 3)])
def test_tile_images_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match="images must be"):
        plot.tile_images(torch.zeros(shape))


def test_score_field_arrows_point_along_the_exact_score():
    mixture = preset("ncsn2d")
    sigma, n_arrows, bounds = 1.0, 7, (-8.0, 8.0, -8.0, 8.0)
    fig = plot.score_field(mixture.score, sigma, bounds, n_arrows=n_arrows, dtype=torch.float64)
    quiver = next(c for c in fig.axes[0].collections if type(c).__name__ == "Quiver")
    arrows = np.stack([quiver.U, quiver.V], axis=-1).reshape(-1, 2)
    exact = mixture.score(plot.grid_points(bounds, n_arrows)[0], sigma).numpy()
    norm = np.linalg.norm(exact, axis=1)
    cosine = (arrows * exact).sum(1) / (np.linalg.norm(arrows, axis=1) * norm)
    assert cosine.min() > 1 - 1e-9, f"an arrow deviates from the score: cos = {cosine.min()}"
    spacing = 16.0 / (n_arrows - 1)
    scale = 0.25 * np.median(norm)
    expected = spacing * norm / (norm + scale)
    assert np.allclose(np.linalg.norm(arrows, axis=1), expected, rtol=1e-9)


def test_score_field_stream_kind_and_bad_kind():
    mixture = preset("ring8")
    fig = plot.score_field(mixture.score, 0.5, 8.0, kind="stream", n_arrows=25)
    assert fig.axes[0].get_title() == "score, σ = 0.5"
    with pytest.raises(ValueError, match="kind"):
        plot.score_field(mixture.score, 0.5, 8.0, kind="arrows")


def test_posterior_mean_vs_map_breaks_only_the_map_line_at_the_jump():
    y = np.linspace(-3, 3, 121)  # a jump of 2 over 0.05: slope 40 > 20
    means = np.tanh(y)[None]
    maps = np.where(y < 0.25, -1.0, 1.0)[None]
    fig = plot.posterior_mean_vs_map(y, means, maps, [1.0], jumps=[0.25])
    lines = [line for line in fig.axes[0].lines if len(line.get_xdata()) > 2]
    mean_line, map_line = lines[1], lines[2]  # after the identity line
    assert not np.isnan(mean_line.get_ydata()).any()
    x_map = np.asarray(map_line.get_xdata())
    gap = np.nonzero(np.isnan(x_map))[0]
    assert len(gap) == 1 and x_map[gap[0] - 1] < 0.25 <= x_map[gap[0] + 1]
    # without the jump location the break is found from the slope
    fig = plot.posterior_mean_vs_map(y, means, maps, [1.0])
    assert np.isnan(fig.axes[0].lines[2].get_xdata()).sum() == 1
    with pytest.raises(ValueError, match=r"\[S, N\]"):
        plot.posterior_mean_vs_map(y, means, maps[:, :10], [1.0])


def test_density_2d_clips_to_the_dynamic_range():
    mixture = preset("ring8")
    fig = plot.density_2d(lambda p: mixture.log_prob(p), 8.0, n_grid=40, dynamic_range=5.0)
    image = fig.axes[0].images[0].get_array()
    assert image.max() - image.min() == pytest.approx(5.0)
    fig = plot.density_2d(np.zeros((4, 4)), 1.0, kind="contour", vmin=-1.0, vmax=1.0)
    assert fig.axes[0].get_xlabel() == "$x_1$"


def test_one_dimensional_plots_label_their_curves():
    mixture = preset("bimodal1d")
    x = torch.linspace(-4, 4, 50, dtype=torch.float64)[:, None]
    fig = plot.density_1d(x[:, 0], {"p": mixture.log_prob(x).exp()}, markers={"mode": -2.0})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["p", "mode"]
    samples = mixture.sample(500, generator=torch.Generator().manual_seed(0))
    fig = plot.histogram_1d(samples, {"exact": mixture, "half": lambda t: 0.5 * t[:, 0] ** 0})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["samples", "exact", "half"]


def test_scatter_samples_draws_points_and_rejects_non_2d():
    mixture = preset("ncsn2d")
    samples = mixture.sample(100, generator=torch.Generator().manual_seed(0))
    fig = plot.scatter_samples(samples, mixture, title="ncsn2d")
    offsets = fig.axes[0].collections[-1].get_offsets()
    assert np.allclose(offsets, samples.numpy())
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plot.scatter_samples(torch.zeros(5, 3))


def test_trajectory_strip_shows_the_first_and_last_frames_at_a_regular_stride():
    frames = [torch.full((4, 2), float(t)) for t in range(10)]
    fig = plot.trajectory_strip(frames, n_panels=4, labels=[f"step {t}" for t in range(10)])
    assert [ax.get_title() for ax in fig.axes] == ["step 0", "step 3", "step 6", "step 9"]
    # a start and 10 levels in 7 panels: every second level, not 0, 2, 3, 5, 7, 8, 10
    frames = [torch.full((4, 2), float(t)) for t in range(11)]
    fig = plot.trajectory_strip(frames, n_panels=7, labels=[f"step {50 * t}" for t in range(11)])
    assert [ax.get_title() for ax in fig.axes] == [f"step {s}" for s in range(0, 501, 100)]
    # no stride fits exactly: regular from the start, the last frame after a shorter gap
    frames = [torch.full((4, 2), float(t)) for t in range(12)]
    fig = plot.trajectory_strip(frames, n_panels=4, labels=[f"step {t}" for t in range(12)])
    assert [ax.get_title() for ax in fig.axes] == ["step 0", "step 4", "step 8", "step 11"]
    images = [torch.rand(6, 1, 8, 8) for _ in range(3)]
    fig = plot.trajectory_strip(images, n_panels=5)
    assert len(fig.axes) == 3


def test_trajectory_gif_has_one_frame_per_state(tmp_path):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    frames = [torch.randn(30, 2, generator=generator) * (1 + t) for t in range(4)]
    path = plot.trajectory_gif(frames, tmp_path / "points.gif", mixture=preset("ncsn2d"))
    with Image.open(path) as gif:
        assert gif.n_frames == 4
    path = plot.trajectory_gif([torch.rand(4, 1, 8, 8)] * 2, tmp_path / "images.gif", fps=4)
    with Image.open(path) as gif:
        assert gif.n_frames == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.gif", "points.gif"]


def test_save_figure_writes_a_png_and_leaves_no_temporary_file(tmp_path):
    from PIL import Image

    fig = plot.image_grid(torch.rand(6, 3, 8, 8), nrow=3, title="rgb")
    path = plot.save_figure(fig, tmp_path / "sub" / "grid.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["grid.png"]
    # a PNG over the size limit is reduced to a palette image
    plot.save_figure(plot.image_grid(torch.rand(6, 3, 8, 8)), tmp_path / "p.png", max_png_bytes=0)
    with Image.open(tmp_path / "p.png") as image:
        assert image.mode == "P"
    plot.save_figure(plot.image_grid(torch.rand(2, 1, 8, 8)), tmp_path / "grid.pdf")
    assert (tmp_path / "grid.pdf").read_bytes().startswith(b"%PDF")
    with pytest.raises(ValueError, match="suffix"):
        plot.save_figure(fig, tmp_path / "no_suffix")


def test_save_figure_closes_pyplot_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    number = fig.number
    plot.save_figure(fig, tmp_path / "pyplot.png")
    assert number not in plt.get_fignums()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "numbers.json"
    target.write_text("old")

    def failing(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing, mode="w")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["numbers.json"]
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_text() == "new"
    with pytest.raises(ValueError, match="mode"):
        atomic_write(target, lambda f: None, mode="a")


def _pixel_size(fig) -> tuple[int, int]:
    width, height = fig.get_size_inches() * fig.dpi
    return round(width), round(height)


def _axes_pixels(ax) -> tuple[float, float]:
    box = ax.get_window_extent()
    return box.width, box.height


def test_sample_sheet_shows_each_image_pixel_as_a_block_of_at_least_four():
    samples, reference = torch.rand(64, 1, 8, 8), torch.rand(30, 1, 8, 8)
    fig = plot.sample_sheet(samples, reference, suptitle="digits")
    assert [ax.get_title() for ax in fig.axes] == ["samples (64)", "held-out images (30)"]
    # 8 per row: 8 × (8 + 1) + 1 = 73 pixels wide; 64 images are 8 rows, 30 are 4 rows
    for ax, rows in zip(fig.axes, (8, 4)):
        image = ax.images[0].get_array()
        scale = image.shape[1] // 73
        assert scale >= 4 and image.shape[:2] == (scale * (9 * rows + 1), scale * 73)
        # nearest-neighbour blocks: each scale × scale block is one value
        block = np.asarray(image[scale : 2 * scale, scale : 2 * scale])
        assert np.all(block == block[0, 0])
        # drawn one array pixel per screen pixel
        width, height = _axes_pixels(ax)
        assert abs(width - image.shape[1]) <= 1 and abs(height - image.shape[0]) <= 1
    fig = plot.sample_sheet(samples, scale=6)
    assert len(fig.axes) == 1 and fig.axes[0].images[0].get_array().shape[0] == 6 * 73
    with pytest.raises(ValueError, match="scale must be an integer >= 1"):
        plot.sample_sheet(samples, scale=0)


def test_class_panel_groups_images_by_label_with_counts():
    images = torch.stack([torch.full((1, 8, 8), k / 10) for k in range(10) for _ in range(k)])
    labels = torch.tensor([k for k in range(10) for _ in range(k)])  # k images of class k
    fig = plot.class_panel(images, labels, n_classes=10, per_class=5, scale=4)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == "0: 0 (0%)" and texts[9] == f"9: 9 ({9 / 45:.0%})"
    image = np.asarray(ax.images[0].get_array())
    assert image.shape[:2] == (4 * (10 * 9 + 1), 4 * (5 * 9 + 1))
    # row k, slot j holds an image of class k while j < k, else white
    for k in (0, 3, 9):
        for j in (0, 2, 4):
            top, left = 4 * (1 + 9 * k), 4 * (1 + 9 * j)
            expected = k / 10 if j < k else 1.0
            assert image[top, left] == pytest.approx(expected), (k, j)
    with pytest.raises(ValueError, match="one label each"):
        plot.class_panel(images, labels[:-1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        plot.class_panel(images, labels, n_classes=5)
