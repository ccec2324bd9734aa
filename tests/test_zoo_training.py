"""Every model family through scoregen.train on real digits: learns, checkpoints, resumes.

tests/test_models.py checks the raw networks (shapes, σ handling, record round trip, a few
plain Adam steps) and tests/test_train.py the loop on toys with the MLP. Here each family
goes through the whole path a user takes: ``train(TrainConfig(model=...))`` on 8×8 digits,
the checkpoint it writes, ``load_checkpoint``, and an interrupted run resumed exactly.
"""

import math

import pytest
import torch

from scoregen import TrainConfig, load_checkpoint, train
from scoregen.data import load_dataset
from scoregen.models import MODELS, build_net, count_parameters

# Tiny configurations for [1, 8, 8] digits (a few ms per step on one core). The transformer
# has dropout so that an exact resume also depends on restoring torch's global generator.
TINY = {
    "mlp": dict(hidden=[64, 64], embed_dim=16),
    "conv_ae": dict(channels=(8, 16), latent_dim=32, embed_dim=16),
    "unet": dict(channels=(8, 16), embed_dim=16, groups=4),
    "patch_transformer": dict(
        patch_size=2, d_model=32, depth=1, n_heads=2, embed_dim=16, dropout=0.1
    ),
    "dncnn": dict(depth=4, nf=16),
    "drunet": dict(nc=(8, 8, 16, 16), nb=1),
}
EXPECTED_PRECOND = {family: "edm" for family in TINY} | {"dncnn": "none", "drunet": "none"}
COMMON = dict(
    data="digits",
    noise="log_uniform",
    sigma_min=0.1,
    sigma_max=1.0,
    batch_size=32,
    lr=3e-3,
    warmup=5,
    device="cpu",
    progress=False,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def eval_batch(digits):
    """Held-out digits with one fixed noise draw at model-space σ = 0.5."""
    clean = digits.test[:128]
    noisy = clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    return clean, noisy


def test_every_family_has_a_tiny_configuration():
    assert set(TINY) == set(MODELS)


@torch.no_grad()
def eval_mse(denoiser, batch) -> float:
    clean, noisy = batch
    return (denoiser(noisy, 0.5) - clean).square().mean().item()


@pytest.mark.parametrize("family", sorted(TINY))
def test_training_lowers_the_held_out_loss_and_the_checkpoint_reloads_exactly(
    family, digits, eval_batch, tmp_path
):
    first = {}

    def after_first_update(info):
        if info["step"] == 1:
            first["mse"] = eval_mse(info["denoiser"], eval_batch)

    config = TrainConfig(model=family, model_config=TINY[family], steps=40, log_every=10, **COMMON)
    result = train(config, data=digits, out_dir=str(tmp_path), callback=after_first_update)

    losses = [entry["loss"] for entry in result.history]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses), losses
    final = eval_mse(result.model, eval_batch)
    assert final < 0.9 * first["mse"], (
        f"{family}: held-out MSE at σ=0.5 went {first['mse']:.4g} -> {final:.4g} over 40 steps; "
        "wanted < 0.9 × the value after the first update"
    )
    assert result.denoiser.precond == EXPECTED_PRECOND[family]

    loaded = load_checkpoint(result.checkpoint)
    x = digits.test[:16] + 0.3 * torch.randn(
        16, 1, 8, 8, generator=torch.Generator().manual_seed(1)
    )
    sigma = torch.linspace(0.1, 1.0, 16)
    with torch.no_grad():
        assert torch.equal(loaded.denoiser(x, sigma), result.denoiser(x, sigma)), family
    meta = loaded.metadata
    assert meta["model"]["family"] == family
    assert meta["model"]["precond"] == EXPECTED_PRECOND[family]
    assert meta["data"]["name"] == "digits" and meta["data"]["shape"] == [1, 8, 8]
    assert meta["data"]["normalization"] == digits.normalization
    assert loaded.sigma == {"min": 0.1, "max": 1.0, "distribution": "log_uniform"}
    assert loaded.config["model"] == family and meta["training"]["steps"] == 40
    # the stored configuration rebuilds the same architecture (JSON lists for tuples)
    rebuilt = build_net(family, **meta["model"]["net"])
    assert count_parameters(rebuilt) == count_parameters(loaded.denoiser)
    assert count_parameters(loaded.denoiser) == count_parameters(
        build_net(family, shape=(1, 8, 8), **TINY[family])
    )


class Stop(Exception):
    pass


@pytest.mark.parametrize("family", sorted(TINY))
def test_an_interrupted_run_resumes_to_the_same_weights(family, digits, tmp_path):
    config = TrainConfig(
        model=family,
        model_config=TINY[family],
        steps=8,
        checkpoint_every=4,
        log_every=2,
        **COMMON,
    )
    whole = train(config, data=digits, out_dir=str(tmp_path / "whole"))

    def stop_at_6(info):
        if info["step"] == 6:
            raise Stop

    with pytest.raises(Stop):
        train(config, data=digits, out_dir=str(tmp_path / "cut"), callback=stop_at_6)
    checkpoint = tmp_path / "cut" / "checkpoint.safetensors"
    resumed = train(config, data=digits, out_dir=str(tmp_path / "cut"), resume=str(checkpoint))
    for which in ("model", "denoiser"):
        want, got = getattr(whole, which).state_dict(), getattr(resumed, which).state_dict()
        for name in want:
            assert torch.equal(got[name], want[name]), f"{family}: {which}.{name} differs"
