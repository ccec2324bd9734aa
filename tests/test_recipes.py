"""The recipes of docs/recipes.md run as written, at a tiny size (``--tiny``)."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "docs" / "recipes"


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_recipe_script_is_on_the_recipes_page():
    page = (ROOT / "docs" / "recipes.md").read_text()
    scripts = sorted(p.name for p in RECIPES.glob("*.py"))
    linked = sorted(set(re.findall(r"\(recipes/(\w+\.py)\)", page)))
    assert scripts and linked == scripts, (scripts, linked)


def test_point_cloud_recipe_trains_samples_and_maps_back_to_the_users_units(tmp_path):
    recipe = load_recipe("point_cloud")
    points = recipe.example_cloud(n=2000, seed=3)
    np.save(tmp_path / "points.npy", points)
    out = recipe.main(["--points", str(tmp_path / "points.npy"), "--out", str(tmp_path), "--tiny"])
    samples = out["samples"]
    assert samples.shape == (200, 2) and torch.isfinite(samples).all()
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert torch.equal(torch.load(tmp_path / "samples.pt"), samples)
    # In the user's units (the cloud sits near (50, -20), spread about 30 per axis), not in the
    # standardised ones (near 0, spread 1): the mean of 200 samples is within a few standard
    # errors of the data's, far from the origin.
    spread = float(torch.as_tensor(points).std(0).max())
    offset = (samples.mean(0) - torch.as_tensor(points, dtype=torch.float32).mean(0)).abs().max()
    assert offset < spread, (offset, spread)
    assert samples.std(0).min() > spread / 10


def test_point_cloud_recipe_reads_a_text_file_and_refuses_a_wrong_shape(tmp_path):
    recipe = load_recipe("point_cloud")
    np.savetxt(tmp_path / "p.csv", np.ones((5, 2)), delimiter=" ")
    assert recipe.read_points(tmp_path / "p.csv").shape == (5, 2)
    np.save(tmp_path / "bad.npy", np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"expected an array \[N, 2\]"):
        recipe.read_points(tmp_path / "bad.npy")


def write_png_folder(folder: Path, n: int = 12) -> None:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:20, :24]
    for i in range(n):
        centre, radius = rng.uniform(6, 14, 2), rng.uniform(3, 7)
        disc = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2) * 200 + 30
        rgb = np.stack([disc, disc[::-1], np.full_like(disc, 90)], -1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"img{i:02d}.png")


def test_image_folder_recipe_trains_on_a_folder_of_pngs_and_writes_pixels(tmp_path):
    write_png_folder(tmp_path / "images")
    recipe = load_recipe("image_folder")
    out = recipe.main(
        ["--data-dir", str(tmp_path / "images"), "--size", "16", "--out", str(tmp_path), "--tiny"]
    )
    assert out["data"].shape == (3, 16, 16) and out["data"].info["n_images"] == 12
    pixels = out["pixels"]
    assert pixels.shape == (4, 3, 16, 16) and pixels.min() >= 0 and pixels.max() <= 1
    from scoregen import load_checkpoint

    record = load_checkpoint(out["checkpoint"]).data
    assert record["name"] == "image_folder" and record["normalization"] == {
        "scale": 0.5,
        "shift": 0.5,
    }
    assert (tmp_path / "samples.png").stat().st_size > 0


def test_deepinv_recipe_wires_a_deepinv_denoiser_into_prior_and_posterior_sampling(tmp_path):
    pytest.importorskip("deepinv")
    numbers = load_recipe("deepinv_prior").main(["--out", str(tmp_path), "--tiny"])
    assert numbers["prior_samples"].shape == (4, 1, 16, 16)
    assert numbers["restored"].shape == (4, 1, 16, 16)
    assert (
        torch.isfinite(numbers["prior_samples"]).all() and torch.isfinite(numbers["restored"]).all()
    )
    # The physics is the one the page describes: half of the 256 pixels observed (binomial
    # standard error 0.031) with noise σ_n = 0.05 (rms of ~128 draws: standard error 0.0031);
    # five standard errors each.
    assert abs(numbers["observed_fraction"] - 0.5) < 5 * 0.031, numbers
    assert abs(numbers["observation_noise_rms"] - 0.05) < 5 * 0.0031, numbers
    assert (tmp_path / "deepinv_prior.png").stat().st_size > 0


def test_k_diffusion_recipe_runs_the_native_heun_sampler_and_matches_k_diffusion_if_present():
    numbers = load_recipe("k_diffusion_samplers").main(["--tiny"])
    ours = numbers["scoregen"]
    assert ours.shape == (200, 2) and torch.isfinite(ours).all()
    try:
        import k_diffusion  # noqa: F401
    except ImportError:
        assert numbers["k_diffusion"] is None
        return
    # The same Heun steps in float32 from the same start: rounding apart only.
    assert numbers["max_abs_difference"] < 1e-3, numbers["max_abs_difference"]
