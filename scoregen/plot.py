"""Figures: one small style and plotting functions that take arrays or tensors and return a Figure.

matplotlib is imported inside the functions, so ``import scoregen`` stays fast. Figures are
built as ``matplotlib.figure.Figure`` objects, not through ``pyplot``: they need no display
and no backend (PNG and GIF frames are drawn with Agg), and nothing is left open in a global
figure list. Every function that draws takes ``ax=None`` (a new figure is made) or an Axes
to draw into, and returns the Figure. Draw inside ``with style():`` when adding your own
titles or labels, so the text gets the same sizes.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from scoregen._io import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "STYLE",
    "COLORS",
    "DENSITY_CMAP",
    "FIELD_CMAP",
    "ERROR_CMAP",
    "DPI",
    "style",
    "new_figure",
    "grid_points",
    "density_1d",
    "density_2d",
    "heatmap",
    "score_field",
    "posterior_mean_vs_map",
    "scatter_samples",
    "histogram_1d",
    "tile_images",
    "image_grid",
    "sample_sheet",
    "class_panel",
    "trajectory_strip",
    "trajectory_gif",
    "save_figure",
]

DPI = 110
PANEL_SIZE = (3.3, 2.9)  # inches per panel: ~360 × 320 px at DPI
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
DENSITY_CMAP = "viridis"  # log-densities
FIELD_CMAP = "viridis"  # score magnitudes (its dark 85 %)
ERROR_CMAP = "magma"  # errors
STYLE: dict[str, Any] = {
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 1.4,
    "image.cmap": DENSITY_CMAP,
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
}

_MARKER_STYLES = ("--", ":", "-.", (0, (1, 3)))


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply :data:`STYLE` (font sizes, colour cycle, dpi) to everything drawn inside."""
    import matplotlib
    from cycler import cycler

    with matplotlib.rc_context({**STYLE, "axes.prop_cycle": cycler(color=list(COLORS))}):
        yield


def _styled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with style():
            return fn(*args, **kwargs)

    return wrapper


def new_figure(
    ncols: int = 1, nrows: int = 1, *, panel_size: tuple[float, float] = PANEL_SIZE, **kwargs
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure with an ``[nrows, ncols]`` array of Axes, sized per panel."""
    from matplotlib.figure import Figure

    fig = Figure(
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows), dpi=DPI, layout="constrained"
    )
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _axes(ax: Axes | None, panel_size=PANEL_SIZE) -> tuple[Figure, Axes]:
    if ax is None:
        fig, axes = new_figure(panel_size=panel_size)
        return fig, axes[0, 0]
    return ax.figure, ax


def _np(values) -> np.ndarray:
    """Tensor or array-like -> float64 numpy array (detached, on the CPU)."""
    if isinstance(values, Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _bounds(bounds) -> tuple[float, float, float, float]:
    """``L`` -> ``(−L, L, −L, L)``; ``(xmin, xmax, ymin, ymax)`` as floats."""
    if isinstance(bounds, (int, float)):
        lim = float(bounds)
        if not lim > 0:
            raise ValueError(f"bounds as one number must be > 0, got {bounds}")
        return (-lim, lim, -lim, lim)
    values = tuple(float(b) for b in bounds)
    if len(values) != 4 or not (values[0] < values[1] and values[2] < values[3]):
        raise ValueError(
            f"bounds must be L > 0 or (xmin, xmax, ymin, ymax) with min < max, got {bounds}"
        )
    return values


def grid_points(bounds, n: int) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """An ``n × n`` grid over ``bounds``: points ``[n², 2]`` (float64) and the axes ``xs, ys``.

    Point ``i * n + j`` is ``(xs[j], ys[i])``, so values computed on the points reshape to an
    ``[n, n]`` image whose rows run along y (``imshow(..., origin="lower")``).
    """
    xmin, xmax, ymin, ymax = _bounds(bounds)
    if n < 2:
        raise ValueError(f"n must be >= 2 grid points per axis, got {n}")
    xs, ys = np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    points = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], axis=1))
    return points, xs, ys


def _grid_values(values, bounds, n_grid: int, dtype=torch.float64) -> np.ndarray:
    """An ``[n, n]`` array, or ``values(points)`` (a callable on ``[N, 2]``) evaluated on the grid."""
    if callable(values):
        points, _, _ = grid_points(bounds, n_grid)
        with torch.no_grad():
            out = values(points.to(dtype))
        return _np(out).reshape(n_grid, n_grid)
    values = _np(values)
    if values.ndim != 2:
        raise ValueError(f"grid values must be a 2-D array [n, n], got shape {values.shape}")
    return values


def _log_density_fn(mixture, sigma: float = 0.0) -> Callable[[Tensor], Tensor]:
    return lambda points: mixture.log_prob(points, sigma)


# ---------------------------------------------------------------------- densities
@_styled
def density_1d(
    x,
    curves: Mapping[str, Any],
    *,
    ax: Axes | None = None,
    markers: Mapping[str, float] | None = None,
    title: str | None = None,
    xlabel: str = "x",
    ylabel: str = "density",
    logy: bool = False,
    colors: Sequence[str] | None = None,
) -> Figure:
    """Curves ``{label: values on x}`` on one axis, with optional vertical ``markers {label: x}``."""
    fig, ax = _axes(ax)
    x = _np(x)
    colors = colors or COLORS
    for i, (label, values) in enumerate(curves.items()):
        ax.plot(x, _np(values), color=colors[i % len(colors)], label=label)
    for i, (label, position) in enumerate((markers or {}).items()):
        linestyle = _MARKER_STYLES[i % len(_MARKER_STYLES)]
        ax.axvline(float(position), color="0.15", ls=linestyle, lw=1.1, label=label)
    if logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(x[0], x[-1]))
    if title:
        ax.set_title(title)
    ax.legend(loc="best")
    return fig


@_styled
def density_2d(
    log_density,
    bounds,
    *,
    ax: Axes | None = None,
    n_grid: int = 200,
    kind: str = "image",
    dynamic_range: float = 12.0,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    colorbar: bool = True,
    cmap: str = DENSITY_CMAP,
    label: str = "log density",
) -> Figure:
    """A log-density on a 2-D grid: ``kind="image"`` (imshow) or ``"contour"`` (filled contours).

    ``log_density`` is an ``[n, n]`` array on :func:`grid_points` or a callable
    ``f(points [N, 2]) -> [N]`` (e.g. ``lambda p: mixture.log_prob(p, sigma)``). Values more
    than ``dynamic_range`` nats below the maximum are clipped, so the tails stay readable;
    ``vmin``/``vmax`` fix the colour scale instead (to share one between panels).
    """
    if kind not in ("image", "contour"):
        raise ValueError(f"kind must be 'image' or 'contour', got {kind!r}")
    fig, ax = _axes(ax)
    box = _bounds(bounds)
    values = _grid_values(log_density, box, n_grid)
    vmax = float(np.nanmax(values)) if vmax is None else vmax
    vmin = vmax - dynamic_range if vmin is None else vmin
    values = np.clip(values, vmin, vmax)
    if kind == "image":
        return heatmap(values, box, ax=ax, vmin=vmin, vmax=vmax, title=title, cmap=cmap,
                       colorbar=colorbar, label=label)  # fmt: skip
    ys = np.linspace(box[2], box[3], values.shape[0])
    xs = np.linspace(box[0], box[1], values.shape[1])
    mappable = ax.contourf(xs, ys, values, levels=np.linspace(vmin, vmax, 15), cmap=cmap)
    ax.set_aspect("equal")
    if colorbar:
        fig.colorbar(mappable, ax=ax, shrink=0.85, label=label)
    ax.set(xlabel="$x_1$", ylabel="$x_2$", xlim=box[:2], ylim=box[2:])
    if title:
        ax.set_title(title)
    return fig


@_styled
def heatmap(
    values,
    bounds,
    *,
    ax: Axes | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    cmap: str = DENSITY_CMAP,
    colorbar: bool = True,
    label: str | None = None,
) -> Figure:
    """An ``[n, n]`` array on the :func:`grid_points` of ``bounds`` as an image (rows along y)."""
    fig, ax = _axes(ax)
    box = _bounds(bounds)
    values = _np(values)
    if values.ndim != 2:
        raise ValueError(f"values must be a 2-D array [n, n], got shape {values.shape}")
    image = ax.imshow(values, origin="lower", extent=box, cmap=cmap, aspect="equal",
                      vmin=vmin, vmax=vmax, interpolation="nearest")  # fmt: skip
    if colorbar:
        fig.colorbar(image, ax=ax, shrink=0.85, label=label)
    ax.set(xlabel="$x_1$", ylabel="$x_2$", xlim=box[:2], ylim=box[2:])
    if title:
        ax.set_title(title)
    return fig


def _density_contours(ax, mixture, sigma: float, box, n_grid: int = 120, dynamic_range=9.0):
    """Thin grey contour lines of ``log p_σ``, 1.5 nats apart (the backdrop of scatter and
    field plots)."""
    points, xs, ys = grid_points(box, n_grid)
    values = _np(mixture.log_prob(points.to(mixture.dtype), sigma)).reshape(n_grid, n_grid)
    top = float(values.max())
    levels = np.arange(top - dynamic_range, top, 1.5)[1:]
    ax.contour(xs, ys, values, levels=levels, colors="0.6", linewidths=0.6, linestyles="solid")


# ---------------------------------------------------------------------- score fields
@_styled
def score_field(
    score_fn: Callable[[Tensor, Any], Tensor],
    sigma,
    bounds,
    *,
    ax: Axes | None = None,
    n_arrows: int = 21,
    kind: str = "quiver",
    mixture=None,
    magnitude_scale: float | None = None,
    log_magnitude_range: tuple[float, float] | None = None,
    dtype: torch.dtype = torch.float32,
    title: str | None = None,
    colorbar: bool = True,
) -> Figure:
    """The 2-D vector field ``score_fn(x, sigma)`` on an ``n_arrows × n_arrows`` grid.

    ``kind="quiver"``: arrows point along the score; their length is
    ``spacing · ‖s‖ / (‖s‖ + magnitude_scale)`` (default scale: a quarter of the median ‖s‖
    of the field), so arrows shrink where the score vanishes (modes, saddles) and saturate far
    away, where scores grow without bound. ``kind="stream"``: streamlines. Both are coloured
    by ``log10 ‖s‖`` over ``log_magnitude_range`` (default: the top three decades of the
    field; pass the same range and scale to compare two fields). With ``mixture`` the contours of its ``log p_σ``
    are drawn underneath. Points reach ``score_fn`` in ``dtype`` (float32 suits networks).
    """
    if kind not in ("quiver", "stream"):
        raise ValueError(f"kind must be 'quiver' or 'stream', got {kind!r}")
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap, Normalize

    fig, ax = _axes(ax)
    box = _bounds(bounds)
    points, xs, ys = grid_points(box, n_arrows)
    with torch.no_grad():
        field = _np(score_fn(points.to(dtype), sigma)).reshape(n_arrows, n_arrows, 2)
    norm = np.linalg.norm(field, axis=-1)
    log_norm = np.log10(np.maximum(norm, 1e-12))
    high = float(log_norm.max()) + 1e-9
    low, high = log_magnitude_range or (max(float(log_norm.min()), high - 3.0), high)
    # the dark 85 % of the colormap: its light end vanishes on a white background
    cmap = ListedColormap(colormaps[FIELD_CMAP](np.linspace(0.0, 0.85, 256)))
    if mixture is not None:
        _density_contours(ax, mixture, float(sigma), box)
    if kind == "quiver":
        scale = 0.25 * float(np.median(norm)) if magnitude_scale is None else magnitude_scale
        spacing = min(box[1] - box[0], box[3] - box[2]) / (n_arrows - 1)
        length = spacing * norm / (norm + max(scale, 1e-300))
        arrows = field * (length / np.maximum(norm, 1e-300))[..., None]
        mappable = ax.quiver(xs, ys, arrows[..., 0], arrows[..., 1], log_norm, cmap=cmap,
                             clim=(low, high), angles="xy", scale_units="xy", scale=1.0,
                             width=0.006, pivot="mid")  # fmt: skip
    else:
        stream = ax.streamplot(xs, ys, field[..., 0], field[..., 1], color=log_norm, cmap=cmap,
                               norm=Normalize(low, high), density=1.1, linewidth=0.8,
                               arrowsize=0.8)  # fmt: skip
        mappable = stream.lines
    if colorbar:
        fig.colorbar(mappable, ax=ax, shrink=0.85, label=r"$\log_{10}\|s\|$")
    ax.set(xlabel="$x_1$", ylabel="$x_2$", xlim=box[:2], ylim=box[2:], aspect="equal")
    ax.set_title(title if title is not None else f"score, σ = {float(sigma):g}")
    return fig


# ---------------------------------------------------------------------- posterior mean vs MAP
def _break_at(y: np.ndarray, values: np.ndarray, jump: float | None, max_slope: float = 20.0):
    """Insert a NaN where a curve jumps, so the plot shows a gap instead of a vertical line.

    With ``jump`` (the y of the discontinuity) the break goes there; without it, wherever the
    curve rises faster than ``max_slope`` between two grid points.
    """
    if jump is not None:
        cut = np.searchsorted(y, jump)
        cuts = [cut] if 0 < cut < len(y) else []
    else:
        slope = np.abs(np.diff(values)) / np.maximum(np.abs(np.diff(y)), 1e-300)
        cuts = list(np.nonzero(slope > max_slope)[0] + 1)
    return np.insert(y, cuts, np.nan), np.insert(values, cuts, np.nan)


@_styled
def posterior_mean_vs_map(
    y,
    posterior_means,
    maps,
    sigmas: Sequence[float],
    *,
    jumps: Sequence[float | None] | None = None,
    prior_modes: Sequence[float] | None = None,
    ax: Axes | None = None,
    title: str | None = "posterior mean vs MAP",
) -> Figure:
    """``E[x | y]`` (solid) and ``MAP(y)`` (dashed) against ``y``, one colour per σ.

    ``posterior_means`` and ``maps`` are ``[S, N]`` (one row per σ) on the ``[N]`` grid ``y``.
    ``jumps[i]`` is where the MAP of row i jumps between modes (None: found from the slope);
    the dashed line is broken there. The identity ``y ↦ y`` (no denoising) is dotted.
    """
    fig, ax = _axes(ax)
    y = _np(y)
    means, modes = _np(posterior_means), _np(maps)
    if means.shape != (len(sigmas), len(y)) or modes.shape != means.shape:
        raise ValueError(
            f"posterior_means and maps must be [S, N] = [{len(sigmas)}, {len(y)}], "
            f"got {means.shape} and {modes.shape}"
        )
    ax.plot(y, y, color="0.6", ls=":", lw=1.0)
    for mode in prior_modes or ():
        ax.axhline(mode, color="0.85", lw=0.8, zorder=0)
    for i, sigma in enumerate(sigmas):
        color = COLORS[i % len(COLORS)]
        ax.plot(y, means[i], color=color, label=f"σ = {sigma:g}")
        ax.plot(*_break_at(y, modes[i], None if jumps is None else jumps[i]), color=color, ls="--")
    ax.plot([], [], color="0.3", label="E[x | y]")
    ax.plot([], [], color="0.3", ls="--", label="MAP(y)")
    ax.plot([], [], color="0.6", ls=":", label="x = y")
    span = float(np.nanmax(np.abs(np.concatenate([means.ravel(), modes.ravel()]))))
    ax.set(xlabel="observation y", ylabel="estimate of x", xlim=(y[0], y[-1]))
    ax.set_ylim(-1.15 * span, 1.15 * span)
    ax.legend(loc="upper left", ncol=1)
    if title:
        ax.set_title(title)
    return fig


# ---------------------------------------------------------------------- samples
@_styled
def scatter_samples(
    samples,
    mixture=None,
    *,
    sigma: float = 0.0,
    bounds=None,
    ax: Axes | None = None,
    title: str | None = None,
    color: str = COLORS[0],
    label: str | None = None,
    size: float = 4.0,
    alpha: float = 0.5,
) -> Figure:
    """2-D samples ``[N, 2]`` as dots, over the contours of ``mixture``'s ``log p_σ`` if given."""
    points = _np(samples)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"samples must be [N, 2] for a scatter plot, got shape {points.shape}")
    fig, ax = _axes(ax)
    if bounds is None:
        extent = np.abs(points).max() if len(points) else 1.0
        if mixture is not None:
            extent = max(extent, float(mixture.means.abs().max()) + 3.0)
        bounds = 1.05 * extent
    box = _bounds(bounds)
    if mixture is not None:
        _density_contours(ax, mixture, sigma, box)
    ax.scatter(points[:, 0], points[:, 1], s=size, alpha=alpha, color=color, label=label, lw=0)
    ax.set(xlabel="$x_1$", ylabel="$x_2$", xlim=box[:2], ylim=box[2:], aspect="equal")
    if label:
        ax.legend(loc="upper right", markerscale=2.5)
    if title:
        ax.set_title(title)
    return fig


@_styled
def histogram_1d(
    samples,
    densities: Mapping[str, Any] | None = None,
    *,
    bins: int = 60,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str = "x",
    label: str = "samples",
) -> Figure:
    """A density-normalised histogram of 1-D samples ``[N]`` or ``[N, 1]`` with reference curves.

    ``densities`` maps a label to a mixture (its density is drawn) or to a callable
    ``f(x [M, 1]) -> density [M]``.
    """
    values = _np(samples)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"samples must be [N] or [N, 1], got shape {values.shape}")
    fig, ax = _axes(ax)
    ax.hist(values, bins=bins, density=True, color=COLORS[0], alpha=0.35, label=label)
    lo, hi = float(values.min()), float(values.max())
    pad = 0.1 * (hi - lo) + 1e-9
    grid = torch.linspace(lo - pad, hi + pad, 400, dtype=torch.float64)[:, None]
    for i, (name, density) in enumerate((densities or {}).items()):
        curve = density.log_prob(grid).exp() if hasattr(density, "log_prob") else density(grid)
        ax.plot(grid[:, 0].numpy(), _np(curve), color=COLORS[(i + 1) % len(COLORS)], label=name)
    ax.set(xlabel=xlabel, ylabel="density")
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return fig


# ---------------------------------------------------------------------- images
def tile_images(
    images,
    nrow: int = 8,
    *,
    padding: int = 1,
    pad_value: float = 1.0,
    value_range: tuple[float, float] = (0.0, 1.0),
    normalization: Mapping[str, float] | None = None,
) -> np.ndarray:
    """``[B, C, H, W]`` (or ``[B, H, W]``) -> one ``[rows·(H+p)+p, nrow·(W+p)+p, C]`` array in [0, 1].

    ``normalization`` ``{"scale", "shift"}`` first maps model space to data space
    (``x·scale + shift``, as :class:`scoregen.data.Dataset` stores it); then ``value_range``
    is mapped to [0, 1] and clipped. Image ``b`` sits at row ``b // nrow``, column ``b % nrow``.
    """
    x = _np(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W] or [B, H, W], got shape {x.shape}")
    if normalization:
        x = x * normalization.get("scale", 1.0) + normalization.get("shift", 0.0)
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    batch, channels, height, width = x.shape
    ncol = max(1, min(nrow, batch))
    rows = max(1, math.ceil(batch / ncol))
    out = np.full(
        (rows * (height + padding) + padding, ncol * (width + padding) + padding, channels),
        pad_value,
    )
    for b in range(batch):
        top = padding + (b // ncol) * (height + padding)
        left = padding + (b % ncol) * (width + padding)
        out[top : top + height, left : left + width] = x[b].transpose(1, 2, 0)
    return out


@_styled
def image_grid(
    images,
    nrow: int = 8,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    normalization: Mapping[str, float] | None = None,
    padding: int = 1,
) -> Figure:
    """A batch of images ``[B, C, H, W]`` tiled ``nrow`` per row (grey for C = 1, RGB for C = 3)."""
    tiled = tile_images(
        images, nrow, padding=padding, value_range=value_range, normalization=normalization
    )
    if ax is None:
        height, width = tiled.shape[:2]
        inches = 5.0 / max(height, width)  # the longer side 5 inches
        size = (max(1.0, width * inches), max(1.0, height * inches) + (0.3 if title else 0.0))
        ax = new_figure(panel_size=size)[1][0, 0]
    _show_pixels(ax, tiled, title)
    return ax.figure


def _show_pixels(ax: Axes, array: np.ndarray, title: str | None) -> None:
    """``array`` ``[H, W, C]`` in [0, 1] on ``ax`` pixel for pixel (grey for C = 1), no axes,
    ``title`` above it."""
    if array.shape[2] == 1:
        ax.imshow(array[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(array, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def _upscale(tiled: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling: every pixel becomes a ``scale × scale`` block."""
    return np.repeat(np.repeat(tiled, scale, axis=0), scale, axis=1)


def _pixel_exact_figure(
    panels: Sequence[tuple[np.ndarray, str | None]],
    *,
    gap: int = 16,
    margin: int = 6,
    left: int = 0,
    title_band: int = 22,
    suptitle: str | None = None,
) -> Figure:
    """A figure whose panels show each ``[H, W, C]`` array one array pixel per screen pixel
    at :data:`DPI` (so an upscaled array keeps its hard-edged blocks), side by side, each
    with its title above; ``left`` pixels are left free for row labels of the first panel."""
    from matplotlib.figure import Figure

    heights = [array.shape[0] for array, _ in panels]
    widths = [array.shape[1] for array, _ in panels]
    title_lines = max((title.count("\n") + 1 for _, title in panels if title), default=0)
    suptitle_lines = suptitle.count("\n") + 1 if suptitle else 0
    top = title_band * title_lines + (title_band - 6) * suptitle_lines + margin
    width_px = left + sum(widths) + gap * (len(panels) - 1) + 2 * margin
    height_px = max(heights) + top + margin
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    x = margin + left
    for array, title in panels:
        h, w = array.shape[:2]
        box = (x / width_px, (height_px - top - h) / height_px, w / width_px, h / height_px)
        _show_pixels(fig.add_axes(box), array, title)
        x += w + gap
    if suptitle:
        fig.suptitle(suptitle, y=1 - 4 / height_px, va="top")
    return fig


def _check_scale(scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(
            f"scale must be an integer >= 1 (screen pixels per image pixel), got {scale!r}"
        )
    return scale


@_styled
def sample_sheet(
    samples,
    reference=None,
    *,
    nrow: int = 8,
    n_images: int = 64,
    scale: int | None = None,
    titles: tuple[str, str] = ("samples", "held-out images"),
    suptitle: str | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    normalization: Mapping[str, float] | None = None,
) -> Figure:
    """Samples beside real images, large enough to read: the first ``n_images`` of
    ``samples`` (and of ``reference``, if given) ``[B, C, H, W]`` tiled ``nrow`` per row and
    upscaled by nearest neighbour, ``scale`` screen pixels per image pixel at :data:`DPI`
    (default: the smallest of 4, 5, … that makes a grid at least 320 pixels wide, so 8×8
    digits show at 5× in an 8-wide grid). Values as in :func:`tile_images`."""
    panels = []
    sets = [(samples, titles[0])] + ([] if reference is None else [(reference, titles[1])])
    tiles = [
        tile_images(
            _np(images)[:n_images], nrow, value_range=value_range, normalization=normalization
        )
        for images, _ in sets
    ]
    if scale is None:
        scale = max(4, math.ceil(320 / tiles[0].shape[1]))
    scale = _check_scale(scale)
    for tiled, (images, title) in zip(tiles, sets):
        count = min(n_images, _np(images).shape[0])
        panels.append((_upscale(tiled, scale), f"{title} ({count})"))
    return _pixel_exact_figure(panels, suptitle=suptitle)


@_styled
def class_panel(
    images,
    labels,
    *,
    n_classes: int | None = None,
    per_class: int = 12,
    scale: int = 4,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    normalization: Mapping[str, float] | None = None,
) -> Figure:
    """Images grouped by a classifier's label: one row per class holding its first
    ``per_class`` images (empty slots stay padding), labelled with the class, its count and
    share of all images. ``labels`` ``[B]`` integers in ``[0, n_classes)`` (default: the
    largest label + 1); images as in :func:`sample_sheet`."""
    x = _np(images)
    labels = np.asarray(_np(labels)).astype(np.int64)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or labels.shape != (x.shape[0],):
        raise ValueError(
            f"images must be [B, C, H, W] with one label each, got images {x.shape} and "
            f"labels {labels.shape}"
        )
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"labels must lie in [0, {n_classes - 1}], got {labels.min()}..{labels.max()}"
        )
    if class_names is not None and len(class_names) != n_classes:
        raise ValueError(f"class_names must name {n_classes} classes, got {len(class_names)}")
    scale = _check_scale(scale)
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an integer >= 1, got {per_class!r}")
    if normalization:
        x = x * normalization.get("scale", 1.0) + normalization.get("shift", 0.0)
    _, channels, height, width = x.shape
    # empty slots hold the top of the value range: white, like the padding
    grid = np.full((n_classes * per_class, channels, height, width), float(value_range[1]))
    counts = np.bincount(labels, minlength=n_classes)
    for k in range(n_classes):
        members = x[labels == k][:per_class]
        grid[k * per_class : k * per_class + len(members)] = members
    tiled = tile_images(grid, per_class, value_range=value_range)
    label_px = 110
    # the title centred over the whole figure (labels and grid), not over the grid alone
    fig = _pixel_exact_figure([(_upscale(tiled, scale), None)], left=label_px, suptitle=title)
    ax = fig.axes[0]
    row_px = (height + 1) * scale
    for k in range(n_classes):
        name = class_names[k] if class_names is not None else str(k)
        share = counts[k] / max(1, x.shape[0])
        ax.text(
            -8, (k * row_px + row_px / 2 + scale / 2), f"{name}: {counts[k]} ({share:.0%})",
            ha="right", va="center", fontsize=8,
        )  # fmt: skip
    return fig


# ---------------------------------------------------------------------- trajectories
def _draw_state(ax, state, *, mixture, sigma, bounds, n_images: int, title: str | None):
    """One trajectory state: a point cloud ``[B, 2]`` or a batch of images ``[B, C, H, W]``."""
    x = _np(state)
    if x.ndim == 2 and x.shape[1] == 2:
        scatter_samples(x, mixture, sigma=sigma, bounds=bounds, ax=ax, title=title, size=3)
    elif x.ndim in (3, 4):
        count = min(n_images, x.shape[0])
        image_grid(x[:count], nrow=math.ceil(math.sqrt(count)), ax=ax, title=title)
    else:
        raise ValueError(
            f"a trajectory state must be [B, 2] points or [B, C, H, W] images, got {x.shape}"
        )


def _pick(n_frames: int, n_panels: int) -> list[int]:
    """At most ``n_panels`` frame indices at one regular stride from the first frame, and the
    last frame. Trajectories are recorded at regular steps, so the panels are too; only the
    last gap may be shorter (the smallest stride that fits is used)."""
    if n_frames == 0:
        raise ValueError("frames is empty")
    n_panels = max(1, min(n_panels, n_frames))
    if n_panels == 1:
        return [0]
    stride = -(-(n_frames - 1) // (n_panels - 1))  # ceil
    picked = list(range(0, n_frames, stride))
    return picked if picked[-1] == n_frames - 1 else [*picked, n_frames - 1]


@_styled
def trajectory_strip(
    frames: Sequence,
    *,
    labels: Sequence[str] | None = None,
    mixture=None,
    sigma: float = 0.0,
    bounds=None,
    n_panels: int = 6,
    n_images: int = 16,
    title: str | None = None,
) -> Figure:
    """A row of snapshots of a sampler's batch: at most ``n_panels`` frames at a regular
    stride from the first, and the last.

    ``frames[t]`` is the batch after step t (``[B, 2]`` points, drawn over ``mixture``'s
    contours, or ``[B, C, H, W]`` images, the first ``n_images`` tiled); ``labels[t]`` titles it.
    """
    picked = _pick(len(frames), n_panels)
    if bounds is None and _np(frames[0]).ndim == 2:
        extent = max(float(np.abs(_np(frames[t])).max()) for t in picked)
        bounds = 1.05 * extent
    fig, axes = new_figure(len(picked), panel_size=(2.6, 2.9 if title else 2.6))
    fig.set_layout_engine("compressed")  # square panels packed, titles clear of the suptitle
    for ax, t in zip(axes[0], picked):
        label = labels[t] if labels is not None else f"frame {t}"
        _draw_state(ax, frames[t], mixture=mixture, sigma=sigma, bounds=bounds,
                    n_images=n_images, title=label)  # fmt: skip
    if title:
        fig.suptitle(title)
    return fig


def _render_rgb(fig) -> np.ndarray:
    """Draw a Figure with Agg and return its pixels ``[H, W, 3]`` (uint8)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def trajectory_gif(
    frames: Sequence,
    path,
    *,
    labels: Sequence[str] | None = None,
    mixture=None,
    sigma: float = 0.0,
    bounds=None,
    fps: float = 8.0,
    n_images: int = 16,
    max_frames: int = 120,
) -> Path:
    """An animated GIF of a trajectory (one frame per state, at most ``max_frames`` spread evenly).

    ``frames`` and ``labels`` as in :func:`trajectory_strip`. The axis limits stay fixed
    over the animation. Written atomically; returns the path.
    """
    from PIL import Image

    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    picked = _pick(len(frames), max_frames)
    if bounds is None and _np(frames[0]).ndim == 2:
        bounds = 1.05 * max(float(np.abs(_np(frames[t])).max()) for t in picked)
    pictures = []
    with style():
        for t in picked:
            fig, axes = new_figure(panel_size=(3.6, 3.4))
            label = labels[t] if labels is not None else f"frame {t}"
            _draw_state(axes[0, 0], frames[t], mixture=mixture, sigma=sigma, bounds=bounds,
                        n_images=n_images, title=label)  # fmt: skip
            pictures.append(Image.fromarray(_render_rgb(fig)))
    duration = max(20, round(1000 / fps))

    def write(f) -> None:
        pictures[0].save(f, format="GIF", save_all=True, append_images=pictures[1:],
                         duration=duration, loop=0)  # fmt: skip

    return atomic_write(path, write)


# ---------------------------------------------------------------------- output
def save_figure(fig: Figure, path, *, dpi: float = DPI, max_png_bytes: int = 250_000) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: .png, .pdf, .svg) atomically, then close it.

    The file goes to a temporary name beside ``path`` and is renamed over it, so a reader
    never sees half an image. A PNG larger than ``max_png_bytes`` (smooth heatmaps compress
    poorly) is reduced to a 256-colour palette, typically three times smaller; 0 always
    reduces, None never. A ``pyplot`` figure is closed too.
    """
    import io

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"path needs a suffix naming the format (.png, .pdf, .svg), got {path}")

    def write(f) -> None:
        if fmt != "png":
            with style():
                fig.savefig(f, format=fmt, dpi=dpi)
            return
        from PIL import Image

        with style():
            fig.set_dpi(dpi)
            image = Image.fromarray(_render_rgb(fig))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        if max_png_bytes is not None and buffer.tell() > max_png_bytes:
            # octree keeps colormap ends intact (median cut merges small areas like colorbars)
            image = image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
        f.write(buffer.getvalue())

    managed = getattr(fig.canvas, "manager", None) is not None  # (rendering swaps the canvas)
    atomic_write(path, write)
    if managed:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path
