"""Data-parallel training: two CPU processes (gloo) train one model, each on its own batches.

One launch of two processes runs every multi-process scenario (starting processes and the
process group is most of the cost); the tests then read what each rank wrote.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from click.testing import CliRunner

from scoregen import TrainConfig, load_checkpoint, train
from scoregen.checkpoint import load_resume_state, resume_path
from scoregen.cli import cli
from scoregen.data import load_dataset
from scoregen.train import _build_denoiser, _Parallel, _step_loss, estimate_sigma_data

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
STEPS = 20
CONFIG = dict(
    model="mlp",
    data="ncsn2d",
    model_config={"hidden": [16], "embed_dim": 8},
    batch_size=16,
    lr=3e-3,
    lr_schedule="constant",  # so a run of STEPS/2 steps resumed to STEPS equals one of STEPS
    warmup=5,
    log_every=5,
    device="cpu",
    progress=False,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recording_data(draws: list):
    """ncsn2d whose training batches (draws of batch_size examples) are kept in ``draws``."""
    data = load_dataset("ncsn2d")

    def sampler(n, generator=None):
        x = data.sampler(n, generator)
        if n == CONFIG["batch_size"]:
            draws.append(x.clone())
        return x

    return dataclasses.replace(data, sampler=sampler)


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD)}
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))

    # 1. launched like torchrun: train() initialises the process group and destroys it
    draws, losses, first_grads = [], [], {}

    def record(info):
        losses.append(info["loss"].item())
        if info["step"] == 1:  # the update's gradient: DDP's average, then clipped
            first_grads.update((n, p.grad.clone()) for n, p in info["denoiser"].named_parameters())

    full = train(
        TrainConfig(out_dir=f"{out}/full", steps=STEPS, **CONFIG),
        data=recording_data(draws),
        callback=record,
    )
    assert not dist.is_initialized(), "train() left the process group it created"

    # 2. the caller's own process group (left alone by train): a half run, then resumed.
    # A file rendezvous: a second TCP one on the port of the first can hang.
    dist.init_process_group(
        "gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=WORLD
    )
    half = TrainConfig(out_dir=f"{out}/cut", steps=STEPS // 2, **CONFIG)
    train(half)
    assert dist.is_initialized(), "train() destroyed the caller's process group"
    checkpoint = f"{out}/cut/checkpoint.safetensors"
    resumed = train(dataclasses.replace(half, steps=STEPS, resume=checkpoint))
    dist.destroy_process_group()

    torch.save(
        {
            "model": full.model.state_dict(),
            "ema": full.denoiser.state_dict(),
            "history": full.history,
            "summary_steps": full.summary["steps"],
            "draws": draws,
            "losses": losses,
            "first_grads": first_grads,
            "resumed_model": resumed.model.state_dict(),
            "resumed_ema": resumed.denoiser.state_dict(),
        },
        f"{out}/rank{rank}.pt",
    )


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    processes = mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 180  # a hung collective fails the test instead of the suite
    while not processes.join(timeout=1):
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            pytest.fail("the two training processes did not finish within 180 s")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return out, ranks


def assert_same_weights(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{what}: {name} differs"


def test_ranks_end_with_identical_weights_and_rank_0_writes_once(ddp):
    out, ranks = ddp
    assert_same_weights(ranks[0]["model"], ranks[1]["model"], "model across ranks")
    assert_same_weights(ranks[0]["ema"], ranks[1]["ema"], "EMA across ranks")
    # the model moved from its (shared) initial weights, so equality is not trivial
    initial = train(TrainConfig(steps=1, **{**CONFIG, "lr": 1e-12})).model.state_dict()
    assert any(not torch.allclose(initial[k], ranks[0]["model"][k]) for k in initial)

    checkpoint = load_checkpoint(out / "full" / "checkpoint.safetensors")
    assert_same_weights(checkpoint.denoiser.state_dict(), ranks[0]["ema"], "checkpoint vs EMA")
    training = checkpoint.metadata["training"]
    assert training["steps"] == STEPS
    assert training["world_size"] == WORLD and training["global_batch_size"] == WORLD * 16
    lines = (out / "full" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [5, 10, 15, 20]
    assert sorted(p.name for p in (out / "full").iterdir()) == [
        "checkpoint.resume.pt",
        "checkpoint.safetensors",
        "metrics.jsonl",
    ]


def test_ranks_draw_different_batches_and_rank_0_draws_the_single_process_ones(ddp):
    _, ranks = ddp
    first = [r["draws"][0] for r in ranks]
    assert len(ranks[0]["draws"]) == len(ranks[1]["draws"]) == STEPS
    assert not torch.allclose(first[0], first[1]), "both ranks drew the same first batch"
    single = []
    train(TrainConfig(steps=1, **CONFIG), data=recording_data(single))
    assert torch.equal(single[0], first[0])
    assert ranks[0]["summary_steps"] == STEPS


def test_the_update_uses_the_gradient_averaged_over_both_ranks_batches(ddp):
    # Rebuild step 1 by hand: the shared initial weights, each rank's own batch and noise
    # (its generators seeded as train seeds them), the mean of the two gradients, clipped.
    _, ranks = ddp
    config = TrainConfig(**CONFIG)
    data = load_dataset("ncsn2d")
    sigma_data = estimate_sigma_data(data, seed=config.seed)
    noise = config.noise_levels()
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        denoiser = _build_denoiser(config, data, sigma_data, None)
    grads = []
    for rank in range(WORLD):
        parallel = _Parallel(rank=rank, world_size=WORLD)
        generators = {
            "data": torch.Generator().manual_seed(parallel.seed(config.seed, "data")),
            "noise": torch.Generator().manual_seed(parallel.seed(config.seed + 1, "noise")),
        }
        denoiser.zero_grad()
        per, _, _ = _step_loss(config, denoiser, data, noise, sigma_data, generators, "cpu")
        per.mean().backward()
        grads.append([p.grad.clone() for p in denoiser.parameters()])
    for p, *per_rank in zip(denoiser.parameters(), *grads):
        p.grad = sum(per_rank) / WORLD
    torch.nn.utils.clip_grad_norm_(list(denoiser.parameters()), config.grad_clip)
    for rank in ranks:
        for name, p in denoiser.named_parameters():
            torch.testing.assert_close(rank["first_grads"][name], p.grad, rtol=1e-5, atol=1e-7)
    # and it is not simply either rank's own gradient
    assert not torch.allclose(grads[0][0], grads[1][0], rtol=0.05)


def test_logged_losses_average_the_ranks(ddp):
    _, ranks = ddp
    # each log line is the mean over its 5 steps and both ranks of the per-step batch loss
    per_step = torch.tensor([r["losses"] for r in ranks], dtype=torch.float64)  # [rank, step]
    assert not torch.allclose(per_step[0], per_step[1])
    for rank in ranks:
        logged = [row["loss"] for row in rank["history"]]
        want = per_step.view(WORLD, STEPS // 5, 5).mean(dim=(0, 2)).tolist()
        assert logged == pytest.approx(want, rel=1e-6)


def test_a_stopped_and_resumed_ddp_run_equals_the_uninterrupted_one(ddp):
    out, ranks = ddp
    for rank in ranks:
        assert_same_weights(rank["resumed_model"], ranks[0]["model"], "resumed model")
        assert_same_weights(rank["resumed_ema"], ranks[0]["ema"], "resumed EMA")
    state = load_resume_state(resume_path(out / "cut" / "checkpoint.safetensors"))
    assert state["world_size"] == WORLD and len(state["ranks"]) == WORLD
    lines = (out / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [5, 10, 15, 20]


def test_resuming_on_another_world_size_is_refused(ddp):
    out, _ = ddp
    with pytest.raises(ValueError, match=r"world_size=2 processes, but this run has world_size=1"):
        train(
            TrainConfig(
                steps=STEPS + 5, resume=str(out / "full" / "checkpoint.safetensors"), **CONFIG
            )
        )


def test_scoregen_train_under_torchrun_prints_one_summary(tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "scoregen", "train", "--data", "ncsn2d", "--model-config", "hidden=[16]",
        "--steps", "6", "--batch-size", "16", "--log-every", "3", "--device", "cpu",
        "--out", str(checkpoint),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Trained mlp") == 1, done.stdout
    assert "on 2 processes (cpu on rank 0)" in done.stdout
    info = CliRunner().invoke(cli, ["info", str(checkpoint)])
    assert "batch 16 per process × 2 = 32" in info.output, info.output
    training = load_checkpoint(checkpoint).metadata["training"]
    assert training["world_size"] == 2 and training["global_batch_size"] == 32
    lines = checkpoint.with_name("model.metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [3, 6]
