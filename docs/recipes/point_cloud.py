"""Recipe: train a denoiser on your own 2-D point cloud, sample from it, plot the samples.

    python docs/recipes/point_cloud.py --points my_points.npy --out out/my_points
    python docs/recipes/point_cloud.py            # an example cloud (a noisy spiral)

``--points`` is a ``.npy`` file holding an array ``[N, 2]`` or a ``.csv`` / ``.txt`` file of
two numeric columns. The points are centred and standardised with one scale for both axes
(so σ means the same in every direction). A checkpoint's normalisation is one ``scale`` and
one ``shift`` for all coordinates, so the per-axis centre goes into the dataset's ``info``,
which the checkpoint stores too; the samples are mapped back to your units with both. ``--tiny`` runs a few seconds' version (used by the tests).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from scoregen import (
    TrainConfig,
    init_noise,
    karras_sigmas,
    load_checkpoint,
    plot,
    probability_flow,
    train,
)
from scoregen.data import Dataset, to_data_space


def example_cloud(n: int = 5000, seed: int = 0) -> np.ndarray:
    """A noisy two-armed spiral in arbitrary units: stands in for your data."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.5, 3.0 * np.pi, n)
    arm = rng.integers(0, 2, n) * np.pi
    points = np.stack([t * np.cos(t + arm), t * np.sin(t + arm)], axis=1)
    return 10.0 * points + rng.normal(scale=3.0, size=(n, 2)) + [50.0, -20.0]


def read_points(path: Path) -> np.ndarray:
    points = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter=None)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"--points: expected an array [N, 2], got shape {points.shape}")
    return points


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=Path, help=".npy [N, 2] or a two-column .csv/.txt")
    parser.add_argument("--out", type=Path, default=Path("out/point_cloud"))
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for the tests")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    # 1. Your points -> a Dataset in model space (centred, standardised), with the way back.
    points = read_points(args.points) if args.points else example_cloud()
    points = torch.as_tensor(points, dtype=torch.float32)
    center = points.mean(0)
    scale = float((points - center).std(0).max())  # one scale: σ is isotropic
    data = Dataset(
        name="my_points",
        shape=(2,),
        train=(points - center) / scale,
        normalization={"scale": scale, "shift": 0.0},
        info={"center": center.tolist()},  # stored in the checkpoint's data record
    )

    # 2. Train a σ-conditioned MLP denoiser over a range of noise levels (model units).
    sigma_min, sigma_max = 0.02, 5.0
    config = TrainConfig(
        model="mlp",
        model_config={"hidden": [32, 32] if args.tiny else [256, 256, 256]},
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        steps=100 if args.tiny else 8000,
        batch_size=256 if args.tiny else 512,
        lr=2e-3,
        device="cpu",
        out_dir=str(args.out / "model"),
        progress=not args.tiny,
    )
    result = train(config, data=data)

    # 3. Load the checkpoint as a later script would, and sample: noise at σ_max carried down
    # to σ_min by the probability-flow ODE (Heun steps on the Karras ladder), then one
    # Tweedie step. On thin structures such as this spiral's arms it lands closer to the
    # data than annealed Langevin with a comparable number of score evaluations.
    checkpoint = load_checkpoint(result.checkpoint)
    n = 200 if args.tiny else 4000
    generator = torch.Generator().manual_seed(1)
    start = init_noise((n, 2), sigma_max, generator=generator)
    sigmas = karras_sigmas(sigma_max, sigma_min, 8 if args.tiny else 60)
    samples = probability_flow(checkpoint.score, start, sigmas, solver="heun")

    # 4. Back to your units, and a picture next to the data.
    samples = to_data_space(samples, checkpoint.data) + torch.tensor(checkpoint.data["center"])
    fig, axes = plot.new_figure(2)
    plot.scatter_samples(points[:n], ax=axes[0, 0], title="your points")
    plot.scatter_samples(samples, ax=axes[0, 1], title="samples", color=plot.COLORS[1])
    figure = plot.save_figure(fig, args.out / "samples.png")
    torch.save(samples, args.out / "samples.pt")
    print(f"wrote {figure} and {args.out / 'samples.pt'} (checkpoint: {result.checkpoint})")
    return {"points": points, "samples": samples, "checkpoint": result.checkpoint}


if __name__ == "__main__":
    main()
