"""Property tests over edited checkpoints: a real checkpoint's JSON record or safetensors
header with one to three fields changed (types, signs, zeros, huge or non-finite numbers,
missing keys, shapes that do not fit the weights). Loading either gives a model whose
denoiser returns finite values on its trained σ range, or raises CheckpointError naming the
file; never another exception. ``scoregen info`` and ``scoregen sample`` on the edited file
end with exit 0, or 1 or 2 and one line on stderr, and write nothing."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from scoregen import CheckpointError, load_checkpoint, save_checkpoint
from scoregen.cli import cli
from scoregen.data import load_dataset
from scoregen.models import Denoiser, build_net
from tests._property import property_settings

SETTINGS = property_settings(40)
HOSTILE = [None, True, -1, 0, 0.5, 1e308, -1e308, math.nan, math.inf, -math.inf, "x", "", [],
           {}, [1, 2], [10**9] * 4, 2**64, -(2**63), {"a": 1}, [[1]], [0.1, 0.2, 0.3]]  # fmt: skip


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """Two real checkpoints: an MLP on 2-D points (σ range, statistics with a covariance)
    and a small U-Net on 8×8 digits (images: normalisation and value range)."""
    folder = tmp_path_factory.mktemp("originals")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        points = Denoiser(build_net("mlp", shape=(2,), hidden=[8], embed_dim=4), sigma_data=1.5)
        image = Denoiser(build_net("unet", shape=(1, 8, 8), channels=(4, 8), groups=2, embed_dim=8))  # fmt: skip
    from scoregen.data import dataset_stats

    toy = load_dataset("ncsn2d", n_test=1)
    digits = load_dataset("digits")
    sigma = {"min": 0.05, "max": 20.0, "distribution": "log_uniform"}
    training = {"steps": 3, "seed": 0, "config": {"batch_size": 8, "lr": 1e-3}}
    paths = {"points": folder / "points.safetensors", "image": folder / "image.safetensors"}
    save_checkpoint(paths["points"], points, data={**toy.record(), "stats": dataset_stats(toy)},
                    sigma=sigma, training=training)  # fmt: skip
    save_checkpoint(paths["image"], image, data={**digits.record(), "stats": dataset_stats(digits)},
                    sigma=sigma, training=training)  # fmt: skip
    return paths


def split(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's header (parsed) and its tensor bytes."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header, allow_nan=True).encode()
    return struct.pack("<Q", len(text)) + text + body


def paths_of(value, prefix=()) -> list[tuple]:
    """Every path into a JSON value (dict keys and list indices), to depth 5."""
    out = [prefix] if prefix else []
    if len(prefix) >= 5:
        return out
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            out += paths_of(item, (*prefix, index))
    return out


def edit(record: dict, path: tuple, value, delete: bool) -> dict:
    record = copy.deepcopy(record)
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(value)
    return record


def check_loads_or_refuses(path: Path) -> None:
    try:
        model = load_checkpoint(path)
    except CheckpointError as e:
        assert str(path) in str(e), f"the error does not name the file: {e}"
        return
    # a model that loads must denoise its trained σ range to finite values
    shape = model.shape
    x = torch.zeros(2, *shape)
    levels = [model.fixed_sigma] if model.fixed_sigma is not None else list(model.sigma_range)
    for sigma in levels:
        with torch.no_grad():
            out = model.denoiser(x, sigma)
        assert out.shape == x.shape and torch.isfinite(out).all(), (
            f"{path.name} loads but D(0, σ={sigma}) is not finite: record {model.metadata}"
        )


def check_commands(path: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="ckpt-prop-"))
    try:
        target = work / "edited.safetensors"
        shutil.copy(path, target)
        before = sorted(os.listdir(work))
        threads = torch.get_num_threads()
        for args in (["info", str(target)],
                     ["sample", "--ckpt", str(target), "--steps", "10", "-n", "4", "-q"]):  # fmt: skip
            result = CliRunner().invoke(cli, args, prog_name="scoregen")
            shown = f"scoregen {' '.join(args)} -> {result.exit_code}\n{result.stderr}"
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                f"{shown}\nraised {type(result.exception).__name__}: {result.exception}"
            )
            assert result.exit_code in (0, 1, 2), shown
            if result.exit_code:
                assert len(result.stderr.strip().splitlines()) == 1, shown
        torch.set_num_threads(threads)
        assert sorted(os.listdir(work)) == before
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_edited_file(header: dict, body: bytes, prefix: str) -> None:
    """Write the edited checkpoint into a fresh folder, then load it and run every command
    on it (:func:`check_loads_or_refuses`, :func:`check_commands`)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        path = folder / "edited.safetensors"
        path.write_bytes(join(header, body))
        check_loads_or_refuses(path)
        check_commands(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@SETTINGS
@given(
    which=st.sampled_from(["points", "image"]),
    data=st.data(),
)
def test_an_edited_record_loads_to_a_working_model_or_is_refused(originals, which, data):
    header, body = split(originals[which])
    record = json.loads(header["__metadata__"]["scoregen"])
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        path = data.draw(st.sampled_from(paths_of(record)), label="path")
        value = data.draw(st.sampled_from(HOSTILE), label="value")
        record = edit(record, path, value, delete=data.draw(st.booleans(), label="delete"))
    header = {**header, "__metadata__": {**header["__metadata__"],
                                         "scoregen": json.dumps(record, allow_nan=True)}}  # fmt: skip
    check_edited_file(header, body, "ckpt-record-")


TENSOR_FIELDS = {
    "dtype": ["I8", "F64", "XX", "", None, 3, "BOOL"],
    "shape": [[], [10**9, 10**9], [-1], "x", [1, 2, 3, 4, 5, 6], None, [0]],
    "data_offsets": [[0, 10**12], [5, 3], "x", [0], None, [-8, 0], [0, 0]],
}


@property_settings(25)
@given(which=st.sampled_from(["points", "image"]), data=st.data())
def test_an_edited_tensor_header_is_refused_before_reading_weights(originals, which, data):
    header, body = split(originals[which])
    for _ in range(data.draw(st.integers(1, 2), label="edits")):
        names = sorted(k for k in header if k != "__metadata__")
        if not names:
            break
        name = data.draw(st.sampled_from(names), label="tensor")
        field = data.draw(st.sampled_from(sorted(TENSOR_FIELDS)), label="field")
        value = data.draw(st.sampled_from(TENSOR_FIELDS[field]), label="value")
        header = copy.deepcopy(header)
        if data.draw(st.booleans(), label="drop the tensor"):
            header.pop(name, None)
        else:
            header[name][field] = value
    check_edited_file(header, body, "ckpt-header-")
