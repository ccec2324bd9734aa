"""The training run's promises, each by a test that fails when it breaks (docs/reliability.md).

Exact resume (also across an explicit extension), the data a run was trained on checked at
resume, files of another run kept until this run's first checkpoint, one run per output
(a lock), Ctrl-C that saves the step in flight, memory checked before allocating, data
passed as tensors or arrays, the progress bar only on a terminal, and the fused optimizer
path giving the plain loop's numbers.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from scoregen import TrainConfig, load_checkpoint, train
from scoregen.checkpoint import load_resume_state, resume_path
from scoregen.cli import cli
from scoregen.data import Dataset, dataset_from_array, fingerprint, load_dataset
from scoregen.train import (
    OutputLockedError,
    TrainingInterrupted,
    ema_update,
    learning_rate,
    schedule_total,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    model_config={"hidden": [16], "embed_dim": 8},
    batch_size=16,
    lr=3e-3,
    warmup=3,
    device="cpu",
    progress=False,
    log_every=2,
)


class Stop(Exception):
    pass


def stop_at(step):
    def callback(info):
        if info["step"] == step:
            raise Stop

    return callback


def assert_same_weights(a, b, what):
    for which in ("model", "denoiser"):
        got, want = getattr(a, which).state_dict(), getattr(b, which).state_dict()
        for name in want:
            assert torch.equal(got[name], want[name]), f"{what}: {which}.{name} differs"


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def one_line_error(result, code: int, *needles):
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1 and lines[0].startswith("scoregen train: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="scoregen")


# ---------------------------------------------------------------------- schedule, extension
def test_schedule_segments_pick_the_total_of_the_segment_an_update_is_in():
    segments = [[0, 10], [6, 20], [15, 40]]
    assert [schedule_total(s, segments) for s in (1, 6, 7, 15, 16, 40)] == [10, 10, 20, 20, 40, 40]


def test_another_total_under_cosine_is_refused_unless_extended(tmp_path):
    checkpoint = tmp_path / "run.safetensors"
    train(TrainConfig(steps=6, checkpoint=str(checkpoint), **TINY))
    before = files_of(tmp_path)
    with pytest.raises(ValueError, match=r"planned for 6 steps.*extend=True"):
        train(TrainConfig(steps=10, resume=str(checkpoint), **TINY))
    assert files_of(tmp_path) == before, "a refused resume touched the run's files"
    with pytest.raises(ValueError, match="already taken 6 steps"):
        train(TrainConfig(steps=4, resume=str(checkpoint), extend=True, **TINY))


def test_an_extended_run_follows_the_longer_schedule_and_resumes_exactly(tmp_path):
    # one run: 6 steps, then extended to 14 in one go
    first = tmp_path / "a" / "run.safetensors"
    train(TrainConfig(steps=6, checkpoint=str(first), **TINY))
    whole = train(TrainConfig(steps=14, resume=str(first), extend=True, **TINY))
    state = load_resume_state(resume_path(first))
    assert state["lr_segments"] == [[0, 6], [6, 14]]
    assert load_checkpoint(first).metadata["training"]["lr_segments"] == [[0, 6], [6, 14]]
    for row in whole.history:  # the lr of every logged step: the 6-step, then the 14-step plan
        total = 6 if row["step"] <= 6 else 14
        want = learning_rate(row["step"], lr=TINY["lr"], steps=total, warmup=3, schedule="cosine")
        assert row["lr"] == pytest.approx(want), row
    # the same, stopped during the extension and resumed without asking again
    second = tmp_path / "b" / "run.safetensors"
    train(TrainConfig(steps=6, checkpoint=str(second), **TINY))
    with pytest.raises(Stop):
        train(
            TrainConfig(steps=14, resume=str(second), extend=True, checkpoint_every=4, **TINY),
            callback=stop_at(11),
        )
    assert load_resume_state(resume_path(second))["step"] == 8
    resumed = train(TrainConfig(steps=14, resume=str(second), **TINY))
    assert_same_weights(resumed, whole, "extended run resumed")


# ---------------------------------------------------------------------- data identity
def test_resume_refuses_other_data_and_accepts_the_same(tmp_path):
    gen = torch.Generator().manual_seed(0)
    mine = torch.randn(200, 2, generator=gen) * 0.3 + 2.0
    checkpoint = tmp_path / "run.safetensors"
    config = dict(TINY, checkpoint=str(checkpoint), checkpoint_every=3)
    full = train(TrainConfig(steps=8, **{**config, "checkpoint": str(tmp_path / "f.safetensors")}), data=mine)  # fmt: skip
    with pytest.raises(Stop):
        train(TrainConfig(steps=8, **config), data=mine, callback=stop_at(5))
    other = mine.clone()
    other[0, 0] += 1e-3
    with pytest.raises(ValueError, match="other data"):
        train(TrainConfig(steps=8, resume=str(checkpoint), **config), data=other)
    with pytest.raises(ValueError, match="passed from Python"):
        train(TrainConfig(steps=8, resume=str(checkpoint), **config))  # would load ncsn2d
    resumed = train(TrainConfig(steps=8, resume=str(checkpoint), **config), data=mine.numpy())
    assert_same_weights(resumed, full, "resumed on the same data given as an array")


def test_cli_refuses_to_resume_a_run_trained_on_python_data(tmp_path):
    checkpoint = tmp_path / "run.safetensors"
    data = Dataset(name="mine", shape=(2,), train=torch.randn(100, 2) + 5)
    train(TrainConfig(steps=6, checkpoint=str(checkpoint), checkpoint_every=3, **TINY), data=data)
    with pytest.raises(Stop):  # leave a run to resume
        train(
            TrainConfig(steps=9, checkpoint=str(checkpoint), checkpoint_every=3, **TINY),
            data=data,
            callback=stop_at(5),
        )
    before = files_of(tmp_path)
    result = invoke("train", "--resume", checkpoint)
    one_line_error(result, 2, "--resume", "passed from Python", "train(config, data=")
    assert files_of(tmp_path) == before


def test_fingerprint_follows_the_values_not_the_name():
    x = torch.arange(12.0).reshape(6, 2)
    a, b = dataset_from_array(x, "a"), dataset_from_array(x.clone(), "b")
    assert fingerprint(a) == fingerprint(b)
    y = x.clone()
    y[3, 1] = -1.0
    assert fingerprint(dataset_from_array(y)) != fingerprint(a)
    toy = load_dataset("moons")
    assert fingerprint(toy) == fingerprint(load_dataset("moons"))
    assert fingerprint(toy) != fingerprint(load_dataset("moons", noise=0.2))


# ---------------------------------------------------------------------- data as users hold it
def test_train_takes_tensors_and_arrays_with_their_normalisation(tmp_path):
    points = train(TrainConfig(steps=2, **TINY), data=torch.randn(64, 3))
    assert points.summary["data"]["source"] == "python"
    images = (np.random.default_rng(0).random((20, 1, 8, 8)) * 255).astype(np.uint8)
    config = TrainConfig(
        model="unet", model_config={"channels": [8, 16], "groups": 4, "embed_dim": 8},
        batch_size=4, steps=2, device="cpu", progress=False, checkpoint=str(tmp_path / "u.safetensors"),
    )  # fmt: skip
    train(config, data=images)
    record = load_checkpoint(tmp_path / "u.safetensors").data
    # uint8 pixels: pixel/255 in [0, 1], model space (pixel − 0.5)/0.5, clipped on the way back
    assert record["normalization"] == {"scale": 0.5, "shift": 0.5}
    assert record["value_range"] == [0.0, 1.0] and record["shape"] == [1, 8, 8]
    data = dataset_from_array(images)
    torch.testing.assert_close(data.train, torch.from_numpy(images).float() / 127.5 - 1)
    floats = dataset_from_array(np.ones((5, 2), dtype=np.float64))
    assert floats.normalization == {"scale": 1.0, "shift": 0.0} and floats.value_range is None


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (torch.randn(5, 3, 3), ValueError, r"add the channel axis"),
        (torch.tensor([[0.0, float("nan")]]), ValueError, "finite"),
        (torch.zeros(0, 2), ValueError, "N >= 1"),
        (np.array([["a", "b"]]), TypeError, "numbers"),
        (torch.ones(4, 2, dtype=torch.int64), TypeError, "floating-point"),
        ("digits", TypeError, r"TrainConfig\(data=\.\.\.\)"),
        ([[1.0, 2.0]], TypeError, "got list"),
    ],
)
def test_unusable_data_is_a_clear_error(data, error, match):
    with pytest.raises(error, match=match):
        train(TrainConfig(steps=1, **TINY), data=data)


# ---------------------------------------------------------------------- files and the lock
def test_a_failed_run_over_old_files_keeps_them_and_leaves_nothing(tmp_path):
    train(TrainConfig(steps=6, out_dir=str(tmp_path), **TINY))
    old = files_of(tmp_path)
    with pytest.raises(Stop):  # before its first checkpoint (step 5)
        train(TrainConfig(steps=9, seed=1, checkpoint_every=5, out_dir=str(tmp_path), **TINY),
              callback=stop_at(4))  # fmt: skip
    assert files_of(tmp_path) == old, "an interrupted run replaced the old run's files"
    with pytest.raises(FloatingPointError):  # a NaN loss, the first log line
        train(TrainConfig(steps=9, out_dir=str(tmp_path), **dict(TINY, lr=1e30)))
    assert files_of(tmp_path) == old
    # after its first checkpoint the files are the new run's, metrics included
    with pytest.raises(Stop):
        train(TrainConfig(steps=9, seed=1, checkpoint_every=5, out_dir=str(tmp_path), **TINY),
              callback=stop_at(7))  # fmt: skip
    assert sorted(files_of(tmp_path)) == sorted(old)
    state = load_resume_state(tmp_path / "checkpoint.resume.pt")
    assert state["step"] == 5 and state["config"]["seed"] == 1
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 4, 6]  # the checkpoint's history, then a live line of step 6


def test_diverged_weights_are_never_saved(tmp_path):
    # lr 1e30 turns the weights inf within two steps; the first log line (step 100) is too late
    with pytest.raises(FloatingPointError, match="weights became non-finite by step"):
        train(
            TrainConfig(steps=5, checkpoint_every=1, out_dir=str(tmp_path),
                        **dict(TINY, lr=1e30, log_every=100, grad_clip=None))
        )  # fmt: skip
    # what is on disk is the last step whose weights were finite
    model = load_checkpoint(tmp_path / "checkpoint.safetensors")
    state = load_resume_state(tmp_path / "checkpoint.resume.pt")
    assert model.metadata["training"]["steps"] == state["step"] >= 1
    assert all(torch.isfinite(t).all() for t in model.denoiser.state_dict().values())
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_a_second_run_on_the_same_checkpoint_is_refused(tmp_path):
    from scoregen._run_files import _acquire_lock, _release_lock

    checkpoint = tmp_path / "run.safetensors"
    lock = tmp_path / "run.safetensors.lock"
    handle = _acquire_lock(lock)  # a run holding it (the same process: flock still conflicts)
    try:
        with pytest.raises(OutputLockedError, match=rf"process {os.getpid()} holds"):
            train(TrainConfig(steps=2, checkpoint=str(checkpoint), **TINY))
    finally:
        _release_lock(lock, handle)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    train(TrainConfig(steps=2, checkpoint=str(checkpoint), **TINY))
    assert not lock.exists(), "the lock outlived the run"


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    lock = tmp_path / "run.safetensors.lock"
    lock.write_text(dead + "\n")
    train(TrainConfig(steps=2, checkpoint=str(tmp_path / "run.safetensors"), **TINY))
    assert not lock.exists()
    lock.write_text(f"{os.getpid()}\n")  # a live PID nobody holds the lock for: PID reuse
    old = time.time() - 60
    os.utime(lock, (old, old))
    train(TrainConfig(steps=2, checkpoint=str(tmp_path / "run.safetensors"), **TINY))
    assert not lock.exists()


def test_ctrl_c_saves_the_step_in_flight_and_the_run_resumes_exactly(tmp_path):
    config = dict(TINY, steps=12, checkpoint_every=5)
    full = train(TrainConfig(out_dir=str(tmp_path / "full"), **config))

    def interrupt_at_7(info):
        if info["step"] == 7:
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C arriving during step 7

    cut = tmp_path / "cut" / "checkpoint.safetensors"
    with pytest.raises(TrainingInterrupted) as stopped:
        train(TrainConfig(out_dir=str(cut.parent), **config), callback=interrupt_at_7)
    assert stopped.value.step == 7 and stopped.value.checkpoint == cut
    assert load_resume_state(resume_path(cut))["step"] == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = train(TrainConfig(out_dir=str(cut.parent), resume=str(cut), **config))
    assert_same_weights(resumed, full, "resumed after Ctrl-C")


# ---------------------------------------------------------------------- memory
def test_a_batch_or_a_model_that_cannot_fit_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"batch_size=1000000000000 needs about .* use batch_size <= [\d,]+"):  # fmt: skip
        train(TrainConfig(steps=1, **dict(TINY, batch_size=10**12)))
    with pytest.raises(ValueError, match=r"network of [\d,]+ parameters.*available"):
        train(TrainConfig(steps=1, **dict(TINY, model_config={"hidden": [10**6] * 3})))
    with pytest.raises(ValueError, match="every width must be >= 1"):
        train(TrainConfig(steps=1, **dict(TINY, model_config={"hidden": [0]})))
    with pytest.raises(ValueError, match=r"shape must be \(channels, height, width\)"):
        train(TrainConfig(steps=1, **dict(TINY, model="unet", model_config={})))


# ---------------------------------------------------------------------- speed paths, same numbers
def test_foreach_ema_equals_the_per_tensor_update():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model(torch.randn(5, 3))  # running statistics: buffers the EMA copies
    ema = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    start = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, model, 0.9)
    for got, before, current in zip(ema.parameters(), start, model.parameters()):
        assert torch.equal(got, before.lerp(current.detach(), 0.1))
    assert torch.equal(ema[1].running_mean, model[1].running_mean)


def test_train_gives_the_plain_loops_weights():
    # fused AdamW, foreach clipping and EMA against torch's defaults written out by hand
    from experiments.bench.train_loop import run

    results = run(steps=6, repeats=1, workloads=["mlp on ncsn2d"])["mlp on ncsn2d"]
    assert results["max |Δ weights|"] < 1e-5 and results["max |Δ EMA|"] < 1e-5, results


# ---------------------------------------------------------------------- progress and the CLI
def test_the_progress_bar_shows_only_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        train(TrainConfig(steps=3, **dict(TINY, progress=None)))
        assert ("train" in stream.getvalue()) == shown, stream.getvalue()


def test_cli_resume_keeps_the_saved_cadence(tmp_path):
    # without it a resumed run checkpointed only at its end: a second crash lost everything
    ckpt = tmp_path / "run.safetensors"
    base = ["--model-config", "hidden=[8]", "--batch-size", "8", "-q"]
    result = invoke("train", *base, "--steps", "8", "--checkpoint-every", "4", "--log-every", "3", "--out", ckpt)  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke("train", "--resume", ckpt, "--steps", "16", "--extend", "-q")
    assert result.exit_code == 0, result.output
    saved = load_resume_state(resume_path(ckpt))["config"]
    assert (saved["checkpoint_every"], saved["log_every"]) == (4, 3)
    lines = (tmp_path / "run.metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [3, 6, 8, 9, 12, 15, 16]
    result = invoke("train", "--resume", ckpt, "--steps", "20", "--extend", "--checkpoint-every", "5", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_resume_state(resume_path(ckpt))["config"]["checkpoint_every"] == 5


def test_cli_refuses_a_locked_output_with_one_line(tmp_path):
    from scoregen._run_files import _acquire_lock, _release_lock

    ckpt = tmp_path / "run.safetensors"
    handle = _acquire_lock(tmp_path / "run.safetensors.lock")
    try:
        result = invoke("train", "--model-config", "hidden=[8]", "--steps", "3", "--out", ckpt, "-q")  # fmt: skip
    finally:
        _release_lock(tmp_path / "run.safetensors.lock", handle)
    one_line_error(result, 1, "another training run", str(os.getpid()))
    assert list(tmp_path.iterdir()) == []
