"""The checkpoint format: round trips, the trained toy's score against the oracle, and every way
a file can be wrong (pickles refused unread, truncation, corruption, wrong architecture),
plus atomic writes that survive a kill mid-write."""

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scoregen
from scoregen import CheckpointError, TrainConfig, load_checkpoint, save_checkpoint, train
from scoregen.checkpoint import (
    CheckpointNotFoundError,
    load_resume_state,
    read_record,
    resume_path,
    save_resume_state,
)
from scoregen.data import load_dataset
from scoregen.models import Denoiser, build_net

SIGMA_RANGE = {"min": 0.1, "max": 10.0, "distribution": "log_uniform"}


def small_denoiser(**kwargs):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_net("mlp", shape=(2,), hidden=[8, 8], embed_dim=4)
    return Denoiser(net, sigma_data=1.5, **kwargs)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(
        path,
        small_denoiser(),
        data=load_dataset("ncsn2d", n_test=1),
        sigma=SIGMA_RANGE,
        training={"steps": 3},
    )
    return path


class Marker:
    """Unpickling this creates a file: proof that a loader ran code from the checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---------------------------------------------------------------------- round trips
def test_round_trip_rebuilds_the_same_denoiser(saved, device):
    loaded = load_checkpoint(saved, device=device)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    sigma = torch.linspace(0.1, 5.0, 7)
    expected = small_denoiser()(x, sigma)
    torch.testing.assert_close(loaded.denoiser(x.to(device), sigma.to(device)).cpu(), expected)
    assert not loaded.denoiser.training
    assert not any(p.requires_grad for p in loaded.denoiser.parameters())
    # the score is Tweedie's (D − x)/σ²
    torch.testing.assert_close(
        loaded.score(x.to(device), 0.5).cpu(), (small_denoiser()(x, 0.5) - x) / 0.25
    )
    meta = loaded.metadata
    assert meta["format"] == "scoregen-checkpoint" and meta["format_version"] == 1
    assert meta["scoregen_version"] == scoregen.__version__
    assert meta["model"]["family"] == "mlp" and meta["model"]["sigma_data"] == 1.5
    assert meta["data"]["name"] == "ncsn2d" and meta["data"]["shape"] == [2]
    assert meta["data"]["normalization"] == {"scale": 1.0, "shift": 0.0}
    assert loaded.sigma == SIGMA_RANGE and meta["training"] == {"steps": 3}
    assert loaded.config == {} and loaded.fixed_sigma is None


def test_checkpoint_is_a_plain_safetensors_file(saved):
    from safetensors import safe_open

    with safe_open(str(saved), "pt") as f:
        record = json.loads(f.metadata()["scoregen"])
        assert set(f.keys()) == set(small_denoiser().state_dict())
    assert record == read_record(saved)


def test_fixed_sigma_checkpoint_refuses_other_levels(tmp_path):
    path = save_checkpoint(tmp_path / "dae.safetensors", small_denoiser(fixed_sigma=0.5))
    loaded = load_checkpoint(path)
    assert loaded.sigma == {"fixed": 0.5} and loaded.fixed_sigma == 0.5
    x = torch.zeros(3, 2)
    loaded.denoiser(x, 0.5)
    loaded.denoiser(x)  # sigma omitted means the training level
    with pytest.raises(ValueError, match="single noise level sigma=0.5"):
        loaded.denoiser(x, 0.7)
    with pytest.raises(ValueError, match="single noise level sigma=0.5"):
        loaded.score(x, 0.7)


@pytest.fixture(scope="module")
def trained_toy(tmp_path_factory):
    """A σ-conditioned MLP trained on the 1-D two-mode prior, written and loaded back."""
    data = load_dataset("bimodal1d")
    config = TrainConfig(
        data="bimodal1d",
        model_config={"hidden": [64, 64], "embed_dim": 16},
        noise="log_uniform",
        sigma_min=0.3,
        sigma_max=3.0,
        weighting="edm",
        steps=1000,
        lr=3e-3,
        warmup=50,
        device="cpu",
        progress=False,
        out_dir=str(tmp_path_factory.mktemp("toy")),
    )
    result = train(config, data=data)
    return result, load_checkpoint(result.checkpoint), data.oracle


def test_trained_toy_checkpoint_gives_the_oracle_score(trained_toy):
    # the whole chain: train on a mixture, write, load, Tweedie score vs the exact score
    result, loaded, oracle = trained_toy
    assert loaded.config["steps"] == 1000 and loaded.config["objective"] == "dae"
    assert loaded.metadata["training"]["steps"] == 1000
    assert loaded.sigma == {"min": 0.3, "max": 3.0, "distribution": "log_uniform"}
    gen = torch.Generator().manual_seed(0)
    for sigma in (0.3, 1.0, 3.0):
        y = oracle.blurred(sigma).sample(5000, generator=gen).float()
        with torch.no_grad():
            learned = loaded.score(y, sigma)
            torch.testing.assert_close(learned, result.score(y, sigma))
        exact = oracle.score(y, sigma)
        error = (learned - exact).square().mean().item()
        # ‖s − s*‖² = ‖D − D*‖²/σ⁴: the 10 % excess-MSE tolerance of test_train's MMSE tests,
        # in score units, is 0.1·MMSE/σ⁴ per number (measured: 5–12 % of that bound)
        x = oracle.sample(5000, generator=gen).float()
        noisy = x + sigma * torch.randn(x.shape, generator=gen)
        exact_mmse = (oracle.denoise(noisy, sigma) - x).square().mean().item()
        bound = 0.1 * exact_mmse / sigma**4
        assert error < bound, f"σ = {sigma}: ‖s − s*‖² = {error:.4f}, bound {bound:.4f}"


def test_langevin_on_the_loaded_score_keeps_p_sigma_invariant(trained_toy):
    # ULA x ← x + ε s(x, σ) + sqrt(2ε) z from exact draws of p_σ: with a correct score the
    # chains stay distributed as p_σ, up to the O(ε) discretisation bias (variance inflated by
    # ≈ ε/(2·var) = 0.4 % here, well inside the KS bound). 400 steps span ≈ 4 relaxation
    # times of a mode (variance 0.5), so a wrong score (scale, sign, σ vs σ²) shows.
    _, loaded, oracle = trained_toy
    sigma, step_size, n = 0.5, 0.005, 4000
    gen = torch.Generator().manual_seed(1)
    x = oracle.blurred(sigma).sample(n, generator=gen).float()
    with torch.no_grad():
        for _ in range(400):
            noise = torch.randn(x.shape, generator=gen)
            x = x + step_size * loaded.score(x, sigma) + (2 * step_size) ** 0.5 * noise
    assert torch.isfinite(x).all()
    weights, means = oracle.weights, oracle.means[:, 0]
    stds = (oracle.covs.reshape(-1) + sigma**2).sqrt()

    def cdf(t):
        z = (t[:, None] - means) / stds
        return (weights * 0.5 * (1 + torch.erf(z / 2**0.5))).sum(1)

    samples, _ = x[:, 0].double().sort()
    f = cdf(samples)
    ranks = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = max((ranks - f).max().item(), (f - ranks + 1 / n).max().item())
    crit = 1.628 / n**0.5  # α = 0.01
    assert ks < crit, f"KS distance to p_σ {ks:.4f}, bound {crit:.4f}"


# ---------------------------------------------------------------------- refused files
def test_missing_file_is_a_checkpoint_error_and_a_file_not_found_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist") as info:
        load_checkpoint(tmp_path / "nope.safetensors")
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_torch_save_file_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pt"
    torch.save({"weights": Marker(marker)}, path)
    with pytest.raises(CheckpointError, match="zip archive, the format of torch.save") as info:
        load_checkpoint(path)
    assert "arbitrary code" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists(), "loading ran code from the file"


def test_raw_pickle_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Marker(marker)))
    with pytest.raises(CheckpointError, match="is a Python pickle"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 5, 12, "header", "data"])
def test_truncated_file_is_refused(saved, keep):
    payload = saved.read_bytes()
    n_header = struct.unpack("<Q", payload[:8])[0]
    cut = {"header": 8 + n_header // 2, "data": len(payload) - 10}.get(keep, keep)
    saved.write_bytes(payload[:cut])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(saved)


def test_corrupt_header_is_refused(saved):
    payload = bytearray(saved.read_bytes())
    payload[9:16] = b"\xff\xfe garb"  # keeps the "{" at byte 8
    saved.write_bytes(bytes(payload))
    with pytest.raises(CheckpointError, match="header is not JSON"):
        load_checkpoint(saved)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.safetensors"
    noise = torch.randint(0, 256, (64,), generator=torch.Generator().manual_seed(0))
    path.write_bytes(bytes(noise.tolist()) + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)


@pytest.mark.parametrize("first_bytes", [b"\x80", b"PK"])
def test_header_length_that_starts_like_a_pickle_or_zip_still_loads(tmp_path, first_bytes):
    # the 8-byte little-endian header length can begin with 0x80 or "PK": pad the record
    # until it does, and check the file is read as the safetensors it is
    path = tmp_path / "model.safetensors"

    def header_length(pad):
        save_checkpoint(path, small_denoiser(fixed_sigma=0.5), training={"pad": "x" * pad})
        return struct.unpack("<Q", path.read_bytes()[:8])[0]

    # each "x" lengthens the header by one byte (before its padding to a multiple of 8)
    base, low = header_length(0), int.from_bytes(first_bytes, "little")
    modulus = 256 ** len(first_bytes)
    target = base + (low - base) % modulus
    for pad in range(target - base - 8, target - base + 8):
        if header_length(pad) % modulus == low:
            break
    else:
        pytest.fail(f"no padding gives a header length starting with {first_bytes!r}")
    assert path.read_bytes()[: len(first_bytes)] == first_bytes
    assert load_checkpoint(path).metadata["training"]["pad"] == "x" * pad


def _rewrite(path, tensors=None, record=None, metadata=None):
    """Write a safetensors file with chosen tensors and record (for the failure cases)."""
    from safetensors.torch import save_file

    if metadata is None:
        metadata = {"scoregen": json.dumps(record)}
    save_file(
        tensors if tensors is not None else small_denoiser().state_dict(),
        str(path),
        metadata=metadata,
    )


def test_safetensors_without_a_record_is_refused(tmp_path):
    path = tmp_path / "bare.safetensors"
    _rewrite(path, metadata={})
    with pytest.raises(CheckpointError, match="without a scoregen record"):
        load_checkpoint(path)


def test_unknown_model_family_is_refused(saved):
    record = read_record(saved)
    record["model"]["family"] = "hypernet"
    _rewrite(saved, record=record)
    with pytest.raises(
        CheckpointError, match="cannot rebuild its model: unknown model family 'hypernet'"
    ):
        load_checkpoint(saved)


def test_weights_of_another_architecture_are_refused(saved):
    record = read_record(saved)
    record["model"]["net"]["hidden"] = [8, 16]
    _rewrite(saved, record=record)
    with pytest.raises(
        CheckpointError,
        match=r"do not fit the 'mlp' architecture.*shape mismatch net.layers.1.weight: file \(8, 8\), model \(16, 8\)",
    ):
        load_checkpoint(saved)


def test_missing_tensors_are_refused(saved):
    record = read_record(saved)
    tensors = small_denoiser().state_dict()
    del tensors["net.out.bias"]
    _rewrite(saved, tensors=tensors, record=record)
    with pytest.raises(CheckpointError, match=r"missing \['net.out.bias'\]"):
        load_checkpoint(saved)


def test_record_of_a_newer_format_is_refused(saved):
    record = read_record(saved)
    record["format_version"] = 2
    _rewrite(saved, record=record)
    with pytest.raises(CheckpointError, match="format_version 2, written by a newer scoregen"):
        load_checkpoint(saved)


def test_save_requires_the_sigma_range_of_a_conditioned_denoiser(tmp_path):
    with pytest.raises(ValueError, match="sigma: pass the noise levels"):
        save_checkpoint(tmp_path / "a.safetensors", small_denoiser())
    with pytest.raises(ValueError, match="fixed_sigma=None"):
        save_checkpoint(tmp_path / "a.safetensors", small_denoiser(), sigma={"fixed": 0.3})
    with pytest.raises(ValueError, match="0 < min <= max"):
        save_checkpoint(
            tmp_path / "a.safetensors", small_denoiser(), sigma={"min": 2.0, "max": 1.0}
        )
    assert not list(tmp_path.iterdir()), "a refused save left a file behind"


# ---------------------------------------------------------------------- atomic writes
def test_failed_write_leaves_the_previous_checkpoint_intact(saved, monkeypatch):
    before = saved.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(saved, small_denoiser(fixed_sigma=0.2))
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.safetensors"]


def test_process_killed_mid_write_leaves_the_previous_file_intact(tmp_path):
    # A child process starts overwriting the file and is SIGKILLed halfway through.
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old complete file")
    io_module = Path(scoregen.__file__).parent / "_io.py"
    child = f"""
import importlib.util, os, signal
spec = importlib.util.spec_from_file_location("scoregen_io", {str(io_module)!r})
io = importlib.util.module_from_spec(spec); spec.loader.exec_module(io)
def write(f):
    f.write(b"half of the new")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
io.atomic_write({str(target)!r}, write)
"""
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert target.read_bytes() == b"old complete file"


# ---------------------------------------------------------------------- resume state
def test_resume_state_round_trips_tensors_and_plain_values(tmp_path):
    path = resume_path(tmp_path / "run" / "model.safetensors")
    assert path.name == "model.resume.pt"
    state = {
        "step": 7,
        "rng": torch.Generator().manual_seed(1).get_state(),
        "history": [{"loss": 0.5, "x": None}],
    }
    save_resume_state(path, state)
    loaded = load_resume_state(path)
    assert loaded["step"] == 7 and loaded["history"] == state["history"]
    assert torch.equal(loaded["rng"], state["rng"])


def test_resume_state_with_objects_is_refused_without_running_them(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.resume.pt"
    torch.save({"format": "scoregen-resume", "evil": Marker(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only loading refuses"):
        load_resume_state(path)
    assert not marker.exists()


def test_truncated_resume_state_is_refused(tmp_path):
    path = save_resume_state(tmp_path / "m.resume.pt", {"step": 1, "w": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_resume_state(path)
