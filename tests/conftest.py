"""Shared fixtures: the device list (CPU always, CUDA when present) and quiet torch threads."""

import pytest
import torch

# One intra-op thread per test process: the suite's tensors are small, so a second thread only
# adds waiting, and with two xdist workers on two cores it oversubscribes them.
torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def random_mixture(generator, n_components, dim, cov_type="full", spread=3.0):
    """A random mixture with well-conditioned covariances (for oracle self-tests)."""
    from scoregen import GaussianMixture

    weights = torch.rand(n_components, generator=generator, dtype=torch.float64) + 0.2
    weights = weights / weights.sum()
    means = spread * torch.randn(n_components, dim, generator=generator, dtype=torch.float64)
    if cov_type == "scalar":
        covs = 0.2 + torch.rand(n_components, generator=generator, dtype=torch.float64)
    elif cov_type == "diag":
        covs = 0.2 + torch.rand(n_components, dim, generator=generator, dtype=torch.float64)
    else:
        a = torch.randn(n_components, dim, dim, generator=generator, dtype=torch.float64)
        covs = a @ a.transpose(-1, -2) / dim + 0.3 * torch.eye(dim, dtype=torch.float64)
    return GaussianMixture(weights, means, covs)
