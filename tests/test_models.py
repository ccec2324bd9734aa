"""The model zoo: every family builds, keeps shapes, uses σ as configured, round-trips, trains."""

import dataclasses
import json
import math

import pytest
import torch

from scoregen.models import (
    MODELS,
    Denoiser,
    build_denoiser,
    build_net,
    count_parameters,
    denoiser_record,
)
from scoregen.models.patch_transformer import patchify, sinusoidal_positions_2d, unpatchify

# Tiny configurations (fast on one CPU core), one or more per family. The deepinv families
# are built once per test that needs them; their import is the slow part.
TINY = {  # key -> (family, config)
    "mlp": ("mlp", dict(shape=(2,), hidden=[32, 32], embed_dim=16)),
    "mlp_image": ("mlp", dict(shape=(1, 8, 8), hidden=[32], embed_dim=16)),
    "conv_ae": ("conv_ae", dict(shape=(1, 8, 8), channels=(8, 16), latent_dim=16, embed_dim=16)),
    "conv_ae_map": (
        "conv_ae",
        dict(shape=(2, 8, 8), channels=(4, 8), latent_dim=8, embed_dim=0, sigma_map=True),
    ),
    "unet": ("unet", dict(shape=(1, 8, 8), channels=(8, 16), embed_dim=16, groups=4)),
    "unet_map": (
        "unet",
        dict(shape=(3, 7, 9), channels=(4, 8, 8), embed_dim=0, sigma_map=True, groups=2),
    ),
    "transformer": (
        "patch_transformer",
        dict(shape=(1, 8, 8), patch_size=4, d_model=16, n_heads=2, depth=1, embed_dim=16),
    ),
    "transformer_conv": (
        "patch_transformer",
        dict(
            shape=(3, 6, 10),
            patch_size=4,
            d_model=16,
            n_heads=4,
            depth=2,
            embed_dim=8,
            head="conv",
            head_channels=8,
        ),
    ),
    "dncnn": ("dncnn", dict(shape=(1, 8, 8), depth=3, nf=8)),
    "drunet": ("drunet", dict(shape=(1, 8, 8), nc=(4, 4, 4, 4), nb=1)),
}
CONDITIONED = [k for k in TINY if k != "dncnn"]  # DnCNN is blind: it ignores σ


class NotATensor:  # a weight file holding this must be refused (loading it could run code)
    pass


def make(key, **overrides):
    torch.manual_seed(0)
    family, config = TINY[key]
    return build_net(family, **{**config, **overrides}).eval()


def batch(net, n=3, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *net.config.shape), generator=g, dtype=dtype)


def test_registry_lists_the_six_families():
    assert set(MODELS) == {"mlp", "conv_ae", "unet", "patch_transformer", "dncnn", "drunet"}
    assert {family for family, _ in TINY.values()} == set(MODELS)


@pytest.mark.parametrize("family", sorted(MODELS))
def test_default_config_builds_and_maps_a_batch_to_its_shape(family):
    net = build_net(family).eval()
    n_params = count_parameters(net)
    print(f"{family}: {n_params:,} parameters")
    assert n_params == sum(p.numel() for p in net.state_dict().values() if p.is_floating_point())
    x = torch.randn(2, *net.config.shape)
    with torch.no_grad():
        out = Denoiser(net)(x, 0.5)
    assert out.shape == x.shape and out.isfinite().all()


def test_parameter_counts_match_the_architectures_formulas():
    # DnCNN: in conv C→nf, (depth − 2) convs nf→nf, out conv nf→C, all 3×3 with bias
    c, depth, nf = 1, 20, 64
    dncnn = c * nf * 9 + nf + (depth - 2) * (nf * nf * 9 + nf) + nf * c * 9 + c
    assert count_parameters(build_net("dncnn")) == dncnn == 665_921
    # MLP: Linear layers plus one embedding projection per hidden layer
    net = build_net("mlp", shape=(2,), hidden=[8, 4], embed_dim=6)
    expected = (2 * 8 + 8) + (8 * 4 + 4) + (4 * 2 + 2) + (6 * 8 + 8) + (6 * 4 + 4)
    assert count_parameters(net) == expected
    net.layers[0].weight.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == expected - 16


@pytest.mark.parametrize("key", sorted(TINY))
def test_sigma_as_float_or_per_example_tensor(key, device):
    net = make(key).to(device)
    denoiser = Denoiser(net)
    x = batch(net).to(device)
    sigmas = torch.tensor([0.05, 0.5, 2.0], device=device)
    with torch.no_grad():
        out = denoiser(x, sigmas)
        assert out.shape == x.shape
        # per-example σ: each row is what the denoiser gives that example alone at its σ
        for i in range(3):
            alone = denoiser(x[i : i + 1], float(sigmas[i]))
            assert torch.allclose(out[i : i + 1], alone, atol=1e-5, rtol=1e-5), (
                f"example {i}: max diff {(out[i : i + 1] - alone).abs().max():.2e}"
            )
        assert torch.equal(denoiser(x, 0.5), denoiser(x, torch.full((3,), 0.5, device=device)))


@pytest.mark.parametrize("key", ["mlp", "conv_ae", "unet_map", "transformer", "drunet"])
def test_float64_in_float64_out(key):
    net = make(key).double()
    x = batch(net, dtype=torch.float64)
    with torch.no_grad():
        out = Denoiser(net)(x, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == x.shape


@pytest.mark.parametrize("key", CONDITIONED)
def test_conditioned_raw_net_depends_on_the_noise_level(key):
    net = make(key)
    x = batch(net)
    c_noise = torch.full((3,), -0.5, requires_grad=True)
    out = net(x, c_noise)
    (grad,) = torch.autograd.grad(out.square().sum(), c_noise)
    scale = out.square().sum().item()
    assert grad.abs().min().item() > 1e-6 * scale, (
        f"d|out|²/dc_noise per example {grad.tolist()} (|out|² = {scale:.3g})"
    )


@pytest.mark.parametrize(
    "key, fixed",
    [
        ("mlp", dict(embed_dim=0)),
        ("conv_ae", dict(embed_dim=0)),
        ("unet", dict(embed_dim=0)),
        ("transformer", dict(embed_dim=0)),
        ("dncnn", {}),
    ],
)
def test_fixed_sigma_net_ignores_c_noise_and_the_wrapper_refuses_other_sigmas(key, fixed):
    net = make(key, **fixed)
    x = batch(net)
    with torch.no_grad():
        assert torch.equal(net(x, torch.full((3,), -1.0)), net(x, torch.full((3,), 0.7)))
        assert torch.equal(net(x, torch.full((3,), -1.0)), net(x, None))
        denoiser = Denoiser(net, fixed_sigma=0.3)
        assert torch.equal(denoiser(x), denoiser(x, 0.3))
    with pytest.raises(ValueError, match=r"single noise level sigma=0.3; .* sigma=0.5"):
        denoiser(x, 0.5)


@pytest.mark.parametrize("key", CONDITIONED)
def test_conditioned_net_needs_c_noise(key):
    net = make(key)
    with pytest.raises(ValueError, match="c_noise is required"):
        net(batch(net), None)


@pytest.mark.parametrize("key", sorted(TINY))
def test_record_json_round_trip_rebuilds_identical_outputs(key):
    net = make(key)
    with torch.no_grad():  # move the weights off their initial values
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    deepinv = key in ("dncnn", "drunet")
    denoiser = Denoiser(net) if deepinv else Denoiser(net, sigma_data=0.7)
    record = json.loads(json.dumps(denoiser_record(denoiser)))
    rebuilt = build_denoiser(record)
    rebuilt.load_state_dict(denoiser.state_dict())
    rebuilt.eval()
    assert dataclasses.asdict(rebuilt.net.config) == dataclasses.asdict(net.config)
    assert (rebuilt.precond, rebuilt.sigma_data) == (denoiser.precond, denoiser.sigma_data)
    x, sigma = batch(net), torch.tensor([0.1, 1.0, 3.0])
    with torch.no_grad():
        assert torch.equal(rebuilt(x, sigma), denoiser(x, sigma))


@pytest.mark.parametrize("key", sorted(TINY))
def test_a_few_adam_steps_reduce_the_denoising_loss(key):
    net = make(key).train()
    denoiser = Denoiser(net)
    g = torch.Generator().manual_seed(3)
    clean = batch(net, n=8, seed=2).clamp(-1, 1) * 0.5
    sigma = torch.exp(torch.randn(8, generator=g) * 0.5 - 1.0)
    noisy = clean + sigma.reshape(-1, *[1] * (clean.ndim - 1)) * torch.randn(
        clean.shape, generator=g
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss_value():
        return ((denoiser(noisy, sigma) - clean) ** 2).mean()

    initial = loss_value().item()
    for _ in range(25):
        optimizer.zero_grad()
        loss = loss_value()
        loss.backward()
        optimizer.step()
    final = loss_value().item()
    assert final < 0.9 * initial, f"loss {initial:.4g} -> {final:.4g}, wanted < 0.9 × initial"


def test_deepinv_families_use_no_preconditioning():
    for key in ("dncnn", "drunet"):
        net = make(key)
        assert Denoiser(net).precond == "none"
        assert build_denoiser({"family": key, "net": TINY[key][1]}).precond == "none"
        with pytest.raises(ValueError, match="precond='edm' does not suit"):
            Denoiser(net, precond="edm")
    assert Denoiser(make("unet")).precond == "edm"


def test_drunet_gets_sigma_in_pixel_units():
    net = make("drunet", pixel_scale=0.5, pixel_shift=0.5)
    x = batch(net)
    sigma = torch.tensor([0.1, 0.4, 1.0])
    with torch.no_grad():
        ours = Denoiser(net)(x, sigma)
        # the same model called directly on [0, 1] pixels with σ in pixel units
        direct = (net.model(x * 0.5 + 0.5, sigma * 0.5) - 0.5) / 0.5
    assert torch.allclose(ours, direct, atol=1e-6)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_deepinv_weights_load_from_a_user_file(tmp_path, suffix):
    from safetensors.torch import save_file

    source = make("dncnn")
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1)
    path = tmp_path / f"dncnn{suffix}"
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded = make("dncnn", weights=str(path))
    x = batch(source)
    with torch.no_grad():
        assert torch.equal(loaded(x, None), source(x, None))
    # a checkpoint record does not point at the file: the state dict carries the weights
    assert denoiser_record(Denoiser(loaded))["net"]["weights"] is None


def test_weight_files_that_do_not_fit_or_run_code_are_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        make("dncnn", weights=str(tmp_path / "missing.pt"))
    other = tmp_path / "other.pt"
    torch.save(make("dncnn", nf=4).model.state_dict(), other)
    with pytest.raises(ValueError, match="does not fit DnCNNNet"):
        make("dncnn", weights=str(other))
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": NotATensor()}, evil)
    with pytest.raises(ValueError, match="could not read weights file"):
        make("dncnn", weights=str(evil))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="unknown model family 'vit'"):
        build_net("vit")
    with pytest.raises(ValueError, match=r"unknown config fields for 'unet': \['depth'\]"):
        build_net("unet", depth=3)
    with pytest.raises(ValueError, match="d_model must be a multiple of 4 and of n_heads=3"):
        build_net("patch_transformer", d_model=64, n_heads=3)
    with pytest.raises(ValueError, match="head must be one of"):
        build_net("patch_transformer", head="linear")
    with pytest.raises(ValueError, match="shape must be"):
        build_net("unet", shape=(28, 28))
    with pytest.raises(ValueError, match="nc must hold 4 positive widths"):
        build_net("drunet", nc=(8, 8, 8))
    for family in ("unet", "conv_ae"):
        for channels in ((), (8, 0)):
            with pytest.raises(ValueError, match="channels must list positive widths"):
                build_net(family, shape=(1, 8, 8), channels=channels)
    from scoregen.models.classifier import ClassifierConfig, ImageClassifier

    with pytest.raises(ValueError, match="channels must list positive widths"):
        ImageClassifier(ClassifierConfig(channels=(4, -1)))
    with pytest.raises(
        ValueError, match=r"ConvAE expects input \[B, 1, 8, 8\], got \(2, 1, 9, 8\)"
    ):
        make("conv_ae")(torch.zeros(2, 1, 9, 8), torch.zeros(2))
    with pytest.raises(ValueError, match=r"UNet expects input \[B, 1, H, W\]"):
        make("unet")(torch.zeros(2, 3, 8, 8), torch.zeros(2))


def test_unet_and_transformer_take_any_image_size():
    for key in ("unet", "transformer"):
        net = make(key)
        for h, w in ((5, 11), (16, 12)):
            x = torch.randn(2, 1, h, w)
            with torch.no_grad():
                assert net(x, torch.zeros(2)).shape == x.shape


def test_patchify_inverts_and_positions_are_distinct():
    x = torch.randn(2, 3, 8, 12)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 6, 48)
    assert torch.equal(tokens[0, 1], x[0, :, 0:4, 4:8].reshape(-1))  # row 0, column 1
    assert torch.equal(unpatchify(tokens, 3, 8, 12, 4), x)
    codes = sinusoidal_positions_2d(5, 7, 16)
    distances = torch.cdist(codes, codes) + torch.eye(35)
    assert codes.shape == (35, 16) and distances.min() > 0.1


def test_conv_ae_bottleneck_limits_what_passes():
    # the latent is the only path from input to output: its size sets the parameter count
    small = make("conv_ae", latent_dim=8)
    large = make("conv_ae", latent_dim=64)
    flat = 16 * 4 * 4  # last width × (8 / 2)²
    assert count_parameters(large) - count_parameters(small) == (64 - 8) * (2 * flat + 2 + 16)
    assert small.sizes == [(8, 8), (4, 4)]
    assert make("conv_ae", shape=(1, 7, 7)).sizes == [(7, 7), (4, 4)]


def test_deepinv_is_imported_lazily():
    import subprocess
    import sys

    code = "import sys, scoregen.models; print('deepinv' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("key", ["unet", "transformer"])
def test_models_work_with_per_example_sigma_on_a_large_range(key):
    net = make(key)
    sigma = torch.logspace(math.log10(0.002), math.log10(80), 3)
    with torch.no_grad():
        out = Denoiser(net)(batch(net), sigma)
    assert out.isfinite().all()
