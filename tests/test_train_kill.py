"""``scoregen train`` killed at random moments (SIGKILL, then SIGINT) in real subprocesses: the
last checkpoint always loads, resuming reaches the uninterrupted run's weights bit for bit,
and a second run on the same ``--out`` is refused while the first runs.

One scenario (two subprocesses: starting Python and torch is most of the cost) runs once
for the module; the tests read what it left.
"""

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
# about a millisecond a step on one core: a run of a second or two, a checkpoint every 40
# steps; the kills fall at random moments measured against the run's own pace
RUN = ["--model-config", "hidden=[32,32]", "--batch-size", "64", "--checkpoint-every", "40",
       "--log-every", "20", "--threads", "1", "-q"]  # fmt: skip
STEPS = 1200


def start(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scoregen", "train", *map(str, args)],
        cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def saved_step(checkpoint: Path) -> int:
    try:
        return load_resume_state(resume_path(checkpoint))["step"]
    except (ValueError, FileNotFoundError):
        return -1


def wait_for_a_new_checkpoint(process: subprocess.Popen, checkpoint: Path) -> int:
    """Wait until the run saves a checkpoint beyond the one on disk; its step."""
    first, deadline = saved_step(checkpoint), time.monotonic() + 180
    while (step := saved_step(checkpoint)) <= first:
        if process.poll() is not None:
            pytest.fail(f"the run ended before it was killed: {process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run saved no checkpoint in 180 s")
        time.sleep(0.005)
    return step


def random_moment(process: subprocess.Popen, checkpoint: Path, rng: random.Random) -> None:
    """Return at a random moment in the first half of what is left of the run (anywhere in
    a step, a log line or a save), whatever this machine's speed: the pace is measured
    between two checkpoints."""
    first = wait_for_a_new_checkpoint(process, checkpoint)
    begin = time.monotonic()
    second = wait_for_a_new_checkpoint(process, checkpoint)
    per_step = (time.monotonic() - begin) / max(second - first, 1)
    time.sleep(rng.uniform(0.0, 0.5 * (STEPS - second) * per_step))


def weights(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    state = load_resume_state(resume_path(checkpoint))
    return {"model": state["model"], "ema": load_checkpoint(checkpoint).denoiser.state_dict()}


def metric_rows(path: Path) -> list[dict]:
    clock = ("examples_per_s", "wall_time_s")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in clock} for row in rows]


def invoke(*args) -> object:
    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(cli, ["train", *map(str, args)], prog_name="scoregen")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """The uninterrupted run (in-process), then the same run SIGKILLed at a random moment,
    resumed and SIGINTed at a random moment (a second run tried on its files meanwhile),
    then resumed to the end."""
    rng = random.Random(20240607)
    root = tmp_path_factory.mktemp("kill")
    reference = root / "ref" / "run.safetensors"
    reference.parent.mkdir()
    done = invoke(*RUN, "--steps", STEPS, "--out", reference)
    assert done.exit_code == 0, done.output

    work = root / "cut"
    work.mkdir()
    checkpoint = work / "run.safetensors"
    out = {"root": root, "reference": reference, "checkpoint": checkpoint}
    process = start(*RUN, "--steps", STEPS, "--out", checkpoint.name, cwd=work)
    random_moment(process, checkpoint, rng)
    process.kill()
    process.communicate(timeout=60)
    out["sigkill"] = {"returncode": process.returncode, "step": saved_step(checkpoint)}
    out["sigkill"]["loads"] = load_checkpoint(checkpoint).metadata["training"]["steps"]

    process = start("--resume", checkpoint.name, cwd=work)  # the saved cadence, no options
    wait_for_a_new_checkpoint(process, checkpoint)
    second = invoke(*RUN, "--steps", 10, "--seed", 3, "--out", checkpoint)
    out["second"] = {"result": second, "first_alive": process.poll() is None, "pid": process.pid}
    random_moment(process, checkpoint, rng)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=60)[1]
    out["sigint"] = {"returncode": process.returncode, "stderr": stderr,
                     "step": saved_step(checkpoint), "files": sorted(os.listdir(work))}  # fmt: skip
    load_checkpoint(checkpoint)
    if out["sigint"]["step"] < STEPS:
        done = invoke("--resume", checkpoint)
        assert done.exit_code == 0, done.output
    return out


def test_sigkill_leaves_the_last_checkpoint_whole(scenario):
    killed = scenario["sigkill"]
    assert killed["returncode"] == -signal.SIGKILL
    assert 0 < killed["step"] < STEPS and killed["loads"] == killed["step"]


def test_sigint_saves_the_step_in_flight_and_says_how_to_continue(scenario):
    interrupted = scenario["sigint"]
    lines = interrupted["stderr"].strip().splitlines()
    assert interrupted["returncode"] == 1 and len(lines) == 1, interrupted["stderr"]
    assert "interrupted after step" in lines[0] and "--resume run.safetensors" in lines[0]
    step = int(lines[0].split("interrupted after step ")[1].split(";")[0])
    assert step == interrupted["step"] > scenario["sigkill"]["step"]
    # only the run's three files: no temporary, partial or lock file
    assert interrupted["files"] == ["run.metrics.jsonl", "run.resume.pt", "run.safetensors"]


def test_a_second_run_on_the_same_out_is_refused_while_the_first_runs(scenario):
    second = scenario["second"]
    lines = second["result"].stderr.strip().splitlines()
    assert second["result"].exit_code == 1 and len(lines) == 1, second["result"].stderr
    assert f"process {second['pid']} holds" in lines[0], lines[0]
    assert second["first_alive"], "the first run stopped"


def test_resumed_runs_reach_the_uninterrupted_weights_bit_for_bit(scenario):
    got, want = weights(scenario["checkpoint"]), weights(scenario["reference"])
    for part in ("model", "ema"):
        for name, tensor in want[part].items():
            assert torch.equal(got[part][name], tensor), (
                f"{part}.{name} differs after kills at steps {scenario['sigkill']['step']} "
                f"and {scenario['sigint']['step']}"
            )
    # and the metrics are the uninterrupted run's (but for the clock)
    cut = scenario["checkpoint"].with_name("run.metrics.jsonl")
    assert metric_rows(cut) == metric_rows(scenario["reference"].with_name("run.metrics.jsonl"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_random_kill_sequences_reach_the_uninterrupted_weights(tmp_path, seed):
    rng = random.Random(seed)
    reference = tmp_path / "ref.safetensors"
    assert invoke(*RUN, "--steps", STEPS, "--out", reference).exit_code == 0
    work = tmp_path / "cut"
    work.mkdir()
    checkpoint = work / "run.safetensors"
    kills = []
    for attempt in range(3):
        if saved_step(checkpoint) > STEPS - 200:  # too little left to kill it mid-way
            break
        args = ["--resume", checkpoint.name] if attempt else [*RUN, "--steps", STEPS, "--out", checkpoint.name]  # fmt: skip
        process = start(*args, cwd=work)
        random_moment(process, checkpoint, rng)
        sig = rng.choice([signal.SIGKILL, signal.SIGINT])
        process.send_signal(sig)
        process.communicate(timeout=60)
        load_checkpoint(checkpoint)
        kills.append((sig.name, saved_step(checkpoint)))
    if saved_step(checkpoint) < STEPS:
        assert invoke("--resume", checkpoint).exit_code == 0
    got, want = weights(checkpoint), weights(reference)
    for part in ("model", "ema"):
        for name, tensor in want[part].items():
            assert torch.equal(got[part][name], tensor), f"{part}.{name}: kills {kills}"
