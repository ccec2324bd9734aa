"""``builtin:NAME``: the oracles are the presets' exact scores, the shipped DAEs load, are small,
ship as package data and match the exact posterior mean they were trained to learn."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import torch

from scoregen.builtins import (
    BUILTIN_DIR,
    TRAINED,
    UnknownBuiltinError,
    list_builtins,
    load_builtin,
    load_score_model,
)
from scoregen.gmm import PRESETS, preset

ROOT = Path(__file__).resolve().parent.parent


def test_every_preset_and_trained_model_is_listed():
    assert set(list_builtins()) == set(PRESETS) | set(TRAINED)
    with pytest.raises(UnknownBuiltinError, match="builtin:ncsn2d-dae"):
        load_builtin("builtin:nope")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_oracle_builtins_are_the_exact_scores(name):
    model = load_score_model(f"builtin:{name}")
    mixture = preset(name)
    x = mixture.sample(64, generator=torch.Generator().manual_seed(0)) + 0.3
    for sigma in (0.0, 0.5, 3.0):
        assert torch.equal(model.score(x, sigma), mixture.score(x, sigma))
        assert torch.equal(model.log_prob(x, sigma), mixture.log_prob(x, sigma))
    low, high = model.sigma_range
    assert 0 < low < high and model.exact and model.fixed_sigma is None


def test_trained_builtins_are_small_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["scoregen"]
    for name in TRAINED:
        path = BUILTIN_DIR / f"{name}.safetensors"
        relative = path.relative_to(ROOT / "scoregen").as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), (relative, globs)
        assert path.stat().st_size < 500_000, path.stat().st_size


@torch.no_grad()
def test_ncsn2d_dae_is_close_to_the_exact_posterior_mean():
    model = load_builtin("ncsn2d-dae")
    assert model.oracle is not None and not model.exact  # compared with, not sampled by MALA
    mixture = preset("ncsn2d")
    generator = torch.Generator().manual_seed(1)
    n = 20_000
    for sigma in (0.1, 1.0, 5.0):
        x = mixture.sample(n, generator=generator).float()
        y = x + sigma * torch.randn(x.shape, generator=generator)
        model_mse = (model.denoiser(y, sigma) - x).square().mean().item()
        exact_mse = (mixture.denoise(y, sigma).float() - x).square().mean().item()
        # the build script measured ratios within 1.012 on 20,000 draws; the ratio's standard
        # error there is below 0.005, so 1.05 fails only a genuinely worse model
        assert model_mse / exact_mse < 1.05, (sigma, model_mse, exact_mse)


def test_digits_dae_denoises_held_out_digits():
    from scoregen.data import load_dataset
    from scoregen.metrics import psnr

    model = load_builtin("digits-dae")
    data = load_dataset("digits")
    clean = data.test[:100]
    noisy = clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        denoised = model.denoiser(noisy, 0.3)
    pixels = [data.to_data_space(t, clip=True) for t in (clean, noisy, denoised)]
    gain = psnr(pixels[2], pixels[0]).mean() - psnr(pixels[1], pixels[0]).mean()
    assert gain > 2.0, gain  # measured 4.0 dB over the whole test set
