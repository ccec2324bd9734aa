"""GaussianLikelihood against explicit matrices: every operator (a matrix, deepinv's Inpainting,
Blur, Downsampling, a generic LinearPhysics) is written out as its matrix on a small image, and
the gradient, ‖AᵀA‖, the data-consistency solve and the map into model coordinates are checked
against dense linear algebra."""

import pytest
import torch

from scoregen.samplers import GaussianLikelihood
from scoregen.samplers.likelihood import conjugate_gradient

dinv = pytest.importorskip("deepinv")
F64 = torch.float64
SHAPE = (1, 6, 6)


def dense(physics, shape=SHAPE) -> torch.Tensor:
    """The matrix [m, d] of a linear physics, column j = A e_j."""
    d = int(torch.tensor(shape).prod())
    basis = torch.eye(d, dtype=F64).reshape((d,) + shape)
    return physics.A(basis).reshape(d, -1).T


def physics_cases():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand((1,) + SHAPE, generator=g) < 0.5).to(F64)
    kernel = dinv.physics.functional.gaussian_blur(sigma=(1.0, 1.0)).to(F64)
    matrix = torch.randn(10, 36, generator=g, dtype=F64)
    return {
        "inpainting": dinv.physics.Inpainting(img_size=SHAPE, mask=mask),
        "blur": dinv.physics.Blur(filter=kernel, padding="circular"),
        "downsampling": dinv.physics.Downsampling(
            img_size=SHAPE, filter="bicubic", factor=2, padding="circular"
        ).to(F64),
        "linear_physics": dinv.physics.LinearPhysics(
            A=lambda v: v.reshape(v.shape[0], -1) @ matrix.T,
            A_adjoint=lambda r: (r @ matrix).reshape((-1,) + SHAPE),
        ),
    }


@pytest.mark.parametrize("name", ["inpainting", "blur", "downsampling", "linear_physics"])
def test_likelihood_of_deepinv_physics_matches_its_dense_matrix(name):
    physics = physics_cases()[name]
    a = dense(physics)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((5,) + SHAPE, generator=g, dtype=F64)
    y = physics.A(torch.randn((1,) + SHAPE, generator=g, dtype=F64))
    likelihood = GaussianLikelihood(y, physics, 0.3)
    flat = x.reshape(5, -1)
    expected = (y.reshape(1, -1) - flat @ a.T) @ a / 0.09
    assert (likelihood.grad(x).reshape(5, -1) - expected).abs().max() < 1e-8
    widened = likelihood.grad(x, extra_variance=torch.full((5,), 0.16, dtype=F64))
    assert (widened.reshape(5, -1) - expected * 0.09 / 0.25).abs().max() < 1e-8
    top = torch.linalg.eigvalsh(a.T @ a).max().item()
    assert likelihood.sqnorm(x) == pytest.approx(top, rel=1e-4)
    assert likelihood.example_shape() == SHAPE
    # data consistency: (I + c AᵀA)⁻¹ (x0 + c Aᵀy), c = v/σ_n², per chain
    variance = torch.tensor([0.01, 0.1, 1.0, 4.0, 25.0], dtype=F64)
    c = (variance / 0.09)[:, None]
    rhs = flat + c * (y.reshape(1, -1) @ a)
    eye = torch.eye(36, dtype=F64)
    exact = torch.stack([torch.linalg.solve(eye + c[i] * a.T @ a, rhs[i]) for i in range(5)])
    got = likelihood.data_consistency(x, variance).reshape(5, -1)
    # closed forms are exact; conjugate gradients stop at a relative residual of 1e-5
    tol = 1e-9 if likelihood.operator.kind == "matrix" or likelihood.operator.closed_form else 1e-3
    assert (got - exact).abs().max() < tol * exact.abs().max(), name


def test_which_deepinv_physics_use_a_closed_form_solve():
    cases = physics_cases()
    closed = {
        name: GaussianLikelihood(
            p.A(torch.zeros((1,) + SHAPE, dtype=F64)), p, 0.1
        ).operator.closed_form
        for name, p in cases.items()
    }
    assert closed == {
        "inpainting": True,
        "blur": False,
        "downsampling": False,
        "linear_physics": False,
    }


@pytest.mark.parametrize("size, filt", [(8, "bicubic"), (16, "bilinear")])
def test_deepinv_fourier_prox_of_downsampling_is_not_exact_so_it_is_not_used(size, filt):
    # Why Downsampling goes through conjugate gradients: deepinv 0.5's closed form for its
    # prox is off against the dense matrix (here by > 5 % of the solution's scale).
    shape = (1, size, size)
    physics = dinv.physics.Downsampling(img_size=shape, filter=filt, factor=2, padding="circular")
    physics = physics.to(F64)
    a = dense(physics, shape)
    g = torch.Generator().manual_seed(5)
    z = torch.randn((1,) + shape, generator=g, dtype=F64)
    y = physics.A(torch.randn((1,) + shape, generator=g, dtype=F64))
    rhs = z.reshape(-1) + 10.0 * (y.reshape(1, -1) @ a)[0]
    exact = torch.linalg.solve(torch.eye(size * size, dtype=F64) + 10.0 * a.T @ a, rhs)
    theirs = physics.prox_l2(z, y, 10.0).reshape(-1)
    ours = GaussianLikelihood(y, physics, 1.0).solve(rhs.reshape((1,) + shape), 10.0)
    assert (theirs - exact).abs().max() > 0.05 * exact.abs().max()
    assert (ours.reshape(-1) - exact).abs().max() < 1e-3 * exact.abs().max()


def test_matrix_likelihood_solve_and_norm_are_exact():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 5, generator=g, dtype=F64)
    y = torch.randn(3, generator=g, dtype=F64)
    likelihood = GaussianLikelihood(y, a, 0.5)
    assert likelihood.y.shape == (1, 3)
    x0 = torch.randn(4, 5, generator=g, dtype=F64)
    got = likelihood.data_consistency(x0, 0.7)
    c = 0.7 / 0.25
    exact = torch.linalg.solve(torch.eye(5, dtype=F64) + c * a.T @ a, (x0 + c * y @ a).T).T
    assert (got - exact).abs().max() < 1e-12
    assert likelihood.sqnorm(x0) == pytest.approx(torch.linalg.matrix_norm(a, 2).item() ** 2)


def test_in_model_space_is_the_chain_rule_of_the_data_space_likelihood():
    # x_data = scale · x + shift: the model-space log-likelihood is log p(y | scale x + shift),
    # whose gradient is scale · (data-space gradient at scale x + shift).
    g = torch.Generator().manual_seed(3)
    physics = physics_cases()["blur"]
    y = physics.A(torch.rand((1,) + SHAPE, generator=g, dtype=F64))
    data = GaussianLikelihood(y, physics, 0.05)
    model = data.in_model_space(scale=0.5, shift=0.5)
    assert model.noise_sigma == pytest.approx(0.1)
    x = torch.randn((3,) + SHAPE, generator=g, dtype=F64)
    assert (model.grad(x) - 0.5 * data.grad(0.5 * x + 0.5)).abs().max() < 1e-9
    # a matrix physics too (y − A(shift·1) = y − shift · row sums)
    a = torch.randn(4, 6, generator=g, dtype=F64)
    matrix_data = GaussianLikelihood(torch.randn(4, generator=g, dtype=F64), a, 0.2)
    matrix_model = matrix_data.in_model_space(2.0, -1.0)
    x = torch.randn(5, 6, generator=g, dtype=F64)
    assert (matrix_model.grad(x) - 2.0 * matrix_data.grad(2.0 * x - 1.0)).abs().max() < 1e-9


def test_conjugate_gradient_solves_each_example_of_a_batch():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3, 8, 8, generator=g, dtype=F64)
    spd = a @ a.transpose(-1, -2) + 0.5 * torch.eye(8, dtype=F64)
    b = torch.randn(3, 8, generator=g, dtype=F64)
    x = conjugate_gradient(lambda v: (spd @ v[..., None])[..., 0], b, max_iter=50, tol=1e-12)
    assert (x - torch.linalg.solve(spd, b)).abs().max() < 1e-9
    zero = conjugate_gradient(lambda v: 2 * v, torch.zeros(2, 3, dtype=F64))
    assert torch.equal(zero, torch.zeros(2, 3, dtype=F64))


def test_likelihood_argument_errors():
    with pytest.raises(TypeError, match="y must be a tensor"):
        GaussianLikelihood([1.0], torch.eye(2), 0.1)
    with pytest.raises(ValueError, match="noise_sigma is required"):
        GaussianLikelihood(torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match=r"a matrix physics must be a float \[m, d\]"):
        GaussianLikelihood(torch.zeros(2), torch.ones(2, 2, 2), 0.1)
    with pytest.raises(TypeError, match="physics must be"):
        GaussianLikelihood(torch.zeros(2), "blur", 0.1)
    with pytest.raises(ValueError, match="scale must be > 0"):
        GaussianLikelihood(torch.zeros(2), torch.eye(2), 0.1).in_model_space(0.0, 0.0)
