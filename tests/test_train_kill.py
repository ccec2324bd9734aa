"""``scoregen train`` killed at random moments (SIGKILL, SIGINT) in a real subprocess: the last
checkpoint always loads, and resuming reaches the uninterrupted run's weights bit for bit;
a second run on the same ``--out`` is refused while the first runs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from scoregen import load_checkpoint
from scoregen.checkpoint import load_resume_state, resume_path
from scoregen.cli import cli

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}  # fmt: skip
# about 1 ms a step on one core: a run of a few seconds, a checkpoint every few dozen ms
RUN = ["--model-config", "hidden=[32,32]", "--batch-size", "64", "--checkpoint-every", "40",
       "--log-every", "20", "--threads", "1", "-q"]  # fmt: skip


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def start(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scoregen", "train", *map(str, args)],
        cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended before it was killed: {process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run did not get going in time")
        time.sleep(0.01)


def saved_step(checkpoint: Path) -> int:
    try:
        return load_resume_state(resume_path(checkpoint))["step"]
    except (ValueError, FileNotFoundError):
        return -1


def kill_after_progress(process, checkpoint: Path, sig: int, rng: random.Random) -> str:
    """Wait for the run to save a checkpoint beyond the one it started from, then send
    ``sig`` after a random delay (anywhere in a step, a log line or a save); its stderr."""
    first = saved_step(checkpoint)
    wait_for(lambda: saved_step(checkpoint) > first, process)
    time.sleep(rng.uniform(0.0, 0.4))
    process.send_signal(sig)
    return process.communicate(timeout=120)[1]


def weights(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    state = load_resume_state(resume_path(checkpoint))
    ema = load_checkpoint(checkpoint).denoiser.state_dict()
    return {"model": state["model"], "ema": ema, "optimizer": state["optimizer"]["state"]}


def assert_bitwise_equal(got, want, what: str) -> None:
    for part in ("model", "ema"):
        for name, tensor in want[part].items():
            assert torch.equal(got[part][name], tensor), f"{what}: {part}.{name} differs"


def test_killed_and_resumed_runs_reach_the_uninterrupted_weights(tmp_path):
    steps = 1500
    rng = random.Random(20240607)
    reference = tmp_path / "ref" / "run.safetensors"
    reference.parent.mkdir()
    done = CliRunner().invoke(cli, ["train", *RUN, "--steps", str(steps), "--out", str(reference)])
    assert done.exit_code == 0, done.output
    want = weights(reference)

    work = tmp_path / "cut"
    work.mkdir()
    checkpoint = work / "run.safetensors"
    # SIGKILL: no chance to clean up; the files hold the last checkpoint, whole
    process = start(*RUN, "--steps", steps, "--out", checkpoint.name, cwd=work)
    kill_after_progress(process, checkpoint, signal.SIGKILL, rng)
    assert process.returncode == -signal.SIGKILL
    killed_at = saved_step(checkpoint)
    assert 0 < killed_at < steps
    assert load_checkpoint(checkpoint).metadata["training"]["steps"] == killed_at
    # SIGINT during the resumed run (which keeps the cadence of the saved one)
    process = start("--resume", checkpoint.name, cwd=work)
    stderr = kill_after_progress(process, checkpoint, signal.SIGINT, rng)
    assert process.returncode == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert "interrupted after step" in stderr and "--resume run.safetensors" in stderr, stderr
    interrupted_at = saved_step(checkpoint)
    assert killed_at < interrupted_at <= steps
    load_checkpoint(checkpoint)
    # what is left: the run's three files (no temporary, partial or lock file)
    assert sorted(p.name for p in work.iterdir()) == [
        "run.metrics.jsonl", "run.resume.pt", "run.safetensors"
    ]  # fmt: skip
    if interrupted_at < steps:
        done = CliRunner().invoke(cli, ["train", "--resume", str(checkpoint), "-q"])
        assert done.exit_code == 0, done.output
    assert_bitwise_equal(weights(checkpoint), want, f"killed at {killed_at}, {interrupted_at}")
    # the metrics lines are the uninterrupted run's (but for the clock)
    assert metric_rows(work / "run.metrics.jsonl") == metric_rows(
        reference.with_name("run.metrics.jsonl")
    )


def metric_rows(path: Path) -> list[dict]:
    clock = ("examples_per_s", "wall_time_s")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in clock} for row in rows]


def test_a_second_run_on_the_same_out_is_refused_while_the_first_runs(tmp_path):
    checkpoint = tmp_path / "run.safetensors"
    first = start(*RUN, "--steps", 100_000, "--out", checkpoint.name, cwd=tmp_path)
    lock = tmp_path / "run.safetensors.lock"
    try:
        wait_for(lambda: checkpoint.exists(), first)
        before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p != lock}
        second = CliRunner().invoke(
            cli, ["train", *RUN, "--steps", "10", "--seed", "3", "--out", str(checkpoint)]
        )
        lines = second.stderr.strip().splitlines()
        assert second.exit_code == 1 and len(lines) == 1, second.stderr
        assert f"process {first.pid} holds" in lines[0], lines[0]
        assert first.poll() is None, "the first run stopped"
        assert load_resume_state(resume_path(checkpoint))["config"]["seed"] == 0
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 1
    assert not lock.exists()
    assert saved_step(checkpoint) > 0 and before  # the first run saved where it stopped


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_many_random_kills_then_resume_reach_the_uninterrupted_weights(tmp_path, seed):
    steps = 1500
    rng = random.Random(seed)
    reference = tmp_path / "ref.safetensors"
    done = CliRunner().invoke(cli, ["train", *RUN, "--steps", str(steps), "--out", str(reference)])
    assert done.exit_code == 0, done.output
    work = tmp_path / "cut"
    work.mkdir()
    checkpoint = work / "run.safetensors"
    kills = []
    for attempt in range(3):
        args = ["--resume", checkpoint.name] if attempt else [*RUN, "--steps", steps, "--out", checkpoint.name]  # fmt: skip
        sig = rng.choice([signal.SIGKILL, signal.SIGINT])
        kill_after_progress(start(*args, cwd=work), checkpoint, sig, rng)
        load_checkpoint(checkpoint)
        kills.append((sig.name, saved_step(checkpoint)))
    if saved_step(checkpoint) < steps:
        done = CliRunner().invoke(cli, ["train", "--resume", str(checkpoint), "-q"])
        assert done.exit_code == 0, done.output
    assert_bitwise_equal(weights(checkpoint), weights(reference), f"seed {seed}, kills {kills}")
