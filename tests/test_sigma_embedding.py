"""The σ embedding computed once for a batch at one σ gives what the per-example path gave."""

import pytest
import torch

from scoregen.models import Denoiser, build_net
from scoregen.models.mlp import MLP, MLPConfig, embedding_levels, sinusoidal_embedding


def per_example_mlp(net: MLP, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
    """The MLP's forward pass with every example's level embedded and projected on its own."""
    h = x.reshape(x.shape[0], -1)
    emb = sinusoidal_embedding(c_noise.expand(x.shape[0]), net.config.embed_dim)
    for layer, project in zip(net.layers, net.embeds):
        h = net.act(layer(h) + project(emb))
    out = net.out(h)
    return (torch.sigmoid(out) if net.config.output == "sigmoid" else out).reshape(x.shape)


def mlp(seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(shape=(2,), hidden=[64, 64, 64], embed_dim=32)
    return MLP(MLPConfig(**{**config, **overrides})).eval()


def test_one_sigma_batch_matches_the_per_example_path():
    net = mlp()
    x = torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    c_noise = torch.full((512,), -0.3)
    expected = per_example_mlp(net, x, c_noise)
    for given in (c_noise[:1], c_noise):  # [1] as the Denoiser passes it, or [B] of one value
        err = (net(x, given) - expected).abs().max().item()
        assert err <= 1e-6, f"one-σ batch vs per-example embedding: max |Δ| {err:.3g}"


def test_training_batch_of_distinct_sigma_is_bit_identical():
    net = mlp(output="sigmoid", activation="elu")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(256, 2, generator=g)
    c_noise = torch.rand(256, generator=g) - 0.5
    assert torch.equal(net(x, c_noise), per_example_mlp(net, x, c_noise))
    # ten levels, each repeated: also the per-example path
    ladder = torch.linspace(-1, 1, 10)[torch.arange(256) % 10]
    assert torch.equal(net(x, ladder), per_example_mlp(net, x, ladder))


def test_embedding_levels_keeps_per_example_levels_when_they_differ_or_carry_gradients():
    same = torch.full((5,), 0.1)
    assert embedding_levels(same).shape == (1,)
    differ = torch.tensor([0.1, 0.2, 0.1])
    assert embedding_levels(differ) is differ
    with_grad = torch.full((5,), 0.1, requires_grad=True)
    assert embedding_levels(with_grad) is with_grad


def test_denoiser_passes_one_sigma_as_a_single_level():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, c_noise):
            seen.append(tuple(c_noise.shape))
            return x

    denoiser = Denoiser(Recorder(), precond="none")
    x = torch.randn(7, 2)
    denoiser(x, 0.5)
    denoiser(x, torch.tensor(0.5))
    denoiser(x, torch.full((7,), 0.5))
    assert seen == [(1,), (1,), (7,)]


def test_denoiser_output_at_one_sigma_matches_the_per_example_levels():
    net = mlp(seed=3)
    denoiser = Denoiser(net)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(4))
    sigma = torch.full((300,), 0.7, requires_grad=True)  # carries gradients: per example
    with torch.no_grad():
        err = (denoiser(x, 0.7) - denoiser(x, sigma)).abs().max().item()
    assert err <= 1e-6, f"Denoiser at σ=0.7 as [1] vs per example: max |Δ| {err:.3g}"


@pytest.mark.parametrize(
    "family, config",
    [
        ("unet", dict(shape=(1, 12, 12), channels=(8, 16), embed_dim=16, sigma_map=True)),
        ("conv_ae", dict(shape=(1, 12, 12), channels=(8, 16), latent_dim=10, embed_dim=16)),
        ("patch_transformer", dict(shape=(1, 12, 12), patch_size=4, d_model=16, n_heads=2)),
    ],
)
def test_image_families_embed_one_sigma_once_with_the_same_output(family, config):
    torch.manual_seed(5)
    net = build_net(family, **config).eval()
    x = torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(6))
    # a c_noise carrying gradients takes the per-example path, the previous one
    per_example = torch.full((6,), 0.2, requires_grad=True)
    with torch.no_grad():
        expected = net(x, per_example)
        # the embedding differs by float32 rounding (one product of [1, E] rows instead of
        # [B, E]), carried through the net's layers: 1e-6 of the output's size
        bound = 1e-6 * expected.abs().max().item()
        for given in (per_example.detach()[:1], per_example.detach()):
            err = (net(x, given) - expected).abs().max().item()
            assert err <= bound, f"{family}: one σ once vs per example: {err:.3g} > {bound:.3g}"


def test_the_mlp_keeps_a_levels_projections_and_never_serves_stale_ones():
    from scoregen.models import Denoiser, build_net

    torch.manual_seed(0)
    denoiser = Denoiser(build_net("mlp", shape=(2,), hidden=[16, 16], embed_dim=8)).eval()
    x = torch.randn(32, 2)
    with torch.no_grad():
        first = denoiser(x, 0.7)
        assert len(denoiser.net._projection_cache) == 1
        assert torch.equal(denoiser(x, 0.7), first)  # served from the cache
        denoiser.net.embeds[0].weight.mul_(3.0)  # new weights: the cache must not answer
        changed = denoiser(x, 0.7)
        denoiser.net._projection_cache.clear()
        assert torch.equal(changed, denoiser(x, 0.7)) and not torch.equal(changed, first)
    with torch.enable_grad():  # training never uses the cache
        denoiser.net._projection_cache.clear()
        denoiser(x, 0.7).sum().backward()
        assert not denoiser.net._projection_cache
