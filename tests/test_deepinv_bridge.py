"""DeepinvDenoiser: a scoregen model as a deepinv denoiser in pixel space. Checked exactly on a
Gaussian mixture (whose MMSE denoiser in pixel space is known), then by running deepinv's own
DiffPIR, DPS and ULA on the shipped digits model."""

import pytest
import torch

from scoregen import GaussianMixture
from scoregen.builtins import ScoreModel, load_builtin
from scoregen.metrics import psnr

dinv = pytest.importorskip("deepinv")
from scoregen.deepinv_bridge import DeepinvDenoiser  # noqa: E402

F64 = torch.float64


def mixture_model(scale=0.5, shift=0.5):
    g = torch.Generator().manual_seed(0)
    prior = GaussianMixture(
        [0.4, 0.6],
        torch.randn(2, 16, generator=g, dtype=F64),
        0.2 + torch.rand(2, 16, generator=g, dtype=F64),
    )
    model = ScoreModel(
        name="oracle",
        score=prior.score,
        denoiser=prior.denoise,
        metadata={
            "data": {"normalization": {"scale": scale, "shift": shift}, "shape": [1, 4, 4]},
            "sigma": {"min": 0.05, "max": 3.0},
        },
    )
    # the same prior in pixel units: x_pixel = scale x + shift
    pixel = GaussianMixture(prior.weights, scale * prior.means + shift, scale**2 * prior.eigvals)
    return model, pixel


def test_deepinv_denoiser_is_the_mmse_denoiser_in_pixel_space():
    model, pixel = mixture_model()
    denoiser = DeepinvDenoiser(model)
    assert isinstance(denoiser, dinv.models.Denoiser)
    g = torch.Generator().manual_seed(1)
    x = 0.5 + torch.randn(3, 1, 4, 4, generator=g, dtype=F64)
    sigmas = torch.tensor([0.1, 0.4, 1.0], dtype=F64)
    cases = [  # (σ as deepinv may pass it, the same σ for the oracle)
        (0.3, 0.3),
        (torch.tensor(0.3, dtype=F64), 0.3),
        (sigmas, sigmas),
        (sigmas.reshape(3, 1, 1, 1), sigmas),
    ]
    for sigma, oracle_sigma in cases:
        expected = pixel.denoise(x, oracle_sigma)
        assert (denoiser(x, sigma) - expected).abs().max() < 1e-10, sigma
    # σ = 0 is the identity, per example too
    assert torch.equal(denoiser(x, 0.0), x)
    mixed = denoiser(x, torch.tensor([0.0, 0.4, 0.0], dtype=F64))
    assert torch.equal(mixed[0], x[0]) and torch.equal(mixed[2], x[2])
    assert (mixed[1] - pixel.denoise(x[1:2], 0.4)[0]).abs().max() < 1e-10


def test_clamp_sigma_keeps_the_model_in_its_trained_range():
    model, pixel = mixture_model()
    x = torch.zeros(2, 1, 4, 4, dtype=F64)
    clamped = DeepinvDenoiser(model, clamp_sigma=True)(x, 40.0)  # 80 in model units
    # σ_max = 3 in model units = 1.5 pixels
    assert (clamped - pixel.denoise(x, 1.5)).abs().max() < 1e-10
    with pytest.raises(ValueError, match="one value per example"):
        DeepinvDenoiser(model)(x, torch.ones(3))


@pytest.fixture(scope="module")
def digits_problem():
    from scoregen.data import load_dataset

    model = load_builtin("digits-dae")
    x = load_dataset("digits", model_range=(0.0, 1.0)).test[:4]
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 1, 8, 8, generator=g) < 0.5).float()
    physics = dinv.physics.Inpainting(
        img_size=(1, 8, 8), mask=mask, noise_model=dinv.physics.GaussianNoise(0.05)
    )
    y = physics.A(x) + 0.05 * torch.randn(x.shape, generator=g)
    return model, x, physics, y


@pytest.mark.parametrize("solver", ["DiffPIR", "DPS", "ULA"])
def test_deepinv_solvers_run_on_a_scoregen_model(solver, digits_problem):
    model, x, physics, y = digits_problem
    denoiser = DeepinvDenoiser(model).eval()
    torch.manual_seed(0)
    if solver == "DiffPIR":
        method = dinv.sampling.DiffPIR(
            denoiser, dinv.optim.data_fidelity.L2(), sigma=0.05, max_iter=20
        )
        with torch.no_grad():
            out = method(y, physics)
    elif solver == "DPS":
        method = dinv.sampling.DPS(
            denoiser, num_steps=20, guidance="annealed", rng=torch.Generator().manual_seed(0)
        )
        out = method(y, physics).float()
    else:
        method = dinv.sampling.ULA(
            prior=dinv.optim.ScorePrior(denoiser),
            data_fidelity=dinv.optim.data_fidelity.L2(sigma=0.05),
            step_size=0.9 / (1 / 0.05**2 + 1 / 0.05**2),
            sigma=0.05,
            max_iter=100,
            burnin_ratio=0.2,
            verbose=False,
        )
        out = method.sample(y, physics, x_init=physics.A_adjoint(y))[0]
    assert out.shape == x.shape and torch.isfinite(out).all()
    # the zero-filled observation is about 9 dB; a prior must fill the holes
    baseline = psnr(physics.A_dagger(y).clamp(0, 1), x).mean()
    got = psnr(out.clamp(0, 1), x).mean()
    assert got > baseline + 3, f"{solver}: {got:.2f} dB vs zero-filled {baseline:.2f} dB"
