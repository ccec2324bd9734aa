"""Property tests over the command line: whatever options and values a user types, every
command ends with exit status 0, or 1 or 2 with one line on stderr and no traceback, and a
command that fails leaves no file behind.

Each example is a small valid command (tiny sizes) with one to three options replaced by
hostile values: wrong types, signs, zeros, non-finite and absurdly large numbers, unknown
names, missing, corrupt, pickled or truncated files, folders where files are expected. They
run in-process through click's CliRunner (the same ``Group.main``: one-line errors, exit
codes), each in a fresh copy of a folder of such files. Hypothesis is derandomized, so CI
draws the same examples every run.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from scoregen.cli import cli
from tests._property import property_settings

SETTINGS = property_settings(25)

NUMBERS = ["0", "-1", "-0.5", "1e300", "-1e300", "nan", "inf", "-inf", "", " ", "abc", "1e3",
           "0x10", "99999999999999999999999", "1,5", "None", "[]"]  # fmt: skip
COUNTS = ["0", "-1", "abc", "", "2.5", "1e3", "99999999999999999999999", "10000000000000"]
# steps: no count a run could actually take (10¹³ steps is a valid, endless run)
STEPS = ["0", "-1", "abc", "", "2.5", "1e3", "99999999999999999999999"]
CHECKPOINTS = ["missing.safetensors", "junk.safetensors", "truncated.safetensors", "pickled.pt",
               "folder", "empty.safetensors", "builtin:nope", "builtin:", "", "real.resume.pt",
               "digit.png"]  # fmt: skip
OUTPUTS = ["folder", "nowhere/x.npy", "x.txt", "", "folder/", "digit.png"]


def entries(table: dict[str, list[str | None]]) -> list[tuple[str, str | None]]:
    return [(option, value) for option, values in table.items() for value in values]


def edits(table):
    """One to three (option, value) replacements of distinct options."""
    return st.lists(
        st.sampled_from(entries(table)), min_size=1, max_size=3, unique_by=lambda e: e[0]
    )


def apply(base: list[str], changes) -> list[str]:
    """``base`` with each changed option's value replaced (or the option added); a value of
    None is a flag; ``ARG`` replaces the positional arguments, ``EXTRA`` adds its tokens."""
    args = list(base)
    for option, value in changes:
        if option == "ARG":
            args = [a for a in args if not a.endswith(".png")] + [value]
            continue
        if option == "EXTRA":  # several options that go together
            args += value.split()
            continue
        if option in args:
            i = args.index(option)
            del args[i : i + 2]
        args += [option] if value is None else [option, value]
    return args


# ---------------------------------------------------------------------- the folder of files
@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Files a hostile user points the commands at: junk, pickles, truncated checkpoints,
    folders, a real tiny checkpoint with its resume state, images good and bad."""
    from PIL import Image

    from scoregen import TrainConfig, train

    folder = tmp_path_factory.mktemp("template")
    train(TrainConfig(model_config={"hidden": [8], "embed_dim": 4}, batch_size=8, steps=3,
                      device="cpu", progress=False, checkpoint=str(folder / "real.safetensors")))  # fmt: skip
    (folder / "real.metrics.jsonl").unlink(missing_ok=True)
    real = (folder / "real.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(real[: len(real) // 2])
    (folder / "junk.safetensors").write_bytes(os.urandom(300))
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "pickled.pt").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    (folder / "folder").mkdir()
    np.save(folder / "flat.npy", np.zeros(7))
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(folder / "digit.png")
    Image.fromarray(np.zeros((1, 1), dtype=np.uint16)).save(folder / "tiny16.png")
    (folder / "junk.png").write_text("not an image")
    return folder


@contextmanager
def fresh_copy(template: Path) -> Iterator[Path]:
    """A copy of the template as the working folder, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="cli-prop-"))
    work = root / "work"
    shutil.copytree(template, work)
    old, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(old)
        torch.set_num_threads(threads)
        shutil.rmtree(root, ignore_errors=True)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and modification time; folders by name (a lock file made and
    removed again changes a folder's time, not what it holds)."""
    return {
        str(p.relative_to(folder)): (0, 0)
        if p.is_dir()
        else (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def check_outcome(args: list[str], template: Path) -> None:
    with fresh_copy(template) as work:
        before = snapshot(work)
        with warnings.catch_warnings(record=True) as caught:  # each would be stderr lines
            warnings.simplefilter("always")
            result = CliRunner().invoke(cli, args, prog_name="scoregen")
        after = snapshot(work)
    shown = f"scoregen {' '.join(args)} -> exit {result.exit_code}\n{result.stderr}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{shown}\nraised {type(result.exception).__name__}: {result.exception}"
    )
    assert "Traceback" not in result.output and "Traceback" not in result.stderr, shown
    assert result.exit_code in (0, 1, 2), shown
    if result.exit_code == 0:
        return
    lines = result.stderr.strip().splitlines()
    assert not caught, f"{shown}\nwarned: {[str(w.message)[:200] for w in caught]}"
    assert len(lines) == 1 and lines[0].startswith("scoregen"), shown
    assert "error:" in lines[0], shown
    assert after == before, f"{shown}\nchanged files: {sorted(set(after.items()) ^ set(before.items()))}"  # fmt: skip


# ---------------------------------------------------------------------- each command
SAMPLE_BASE = ["sample", "--ckpt", "builtin:ncsn2d-dae", "--steps", "10", "-n", "8", "-q"]
SAMPLE = {
    "--ckpt": CHECKPOINTS + ["builtin:digits-dae", "builtin:ring8", "real.safetensors"],
    "--steps": STEPS,
    "--sampler": ["nope", "", "langevin", "mala", "pc", "ode"],
    "--num-samples": COUNTS,
    "--sigma": NUMBERS,
    "--step-size": NUMBERS,
    "--sigma-max": NUMBERS,
    "--sigma-min": NUMBERS,
    "--levels": COUNTS + ["1", "2"],
    "--step-lr": NUMBERS,
    "--snr": NUMBERS,
    "--temperature": NUMBERS,
    "--init": ["nope", "data", "exact", "uniform"],
    "--init-data": ["missing.npy", "flat.npy", "junk.png", "pickled.pt", "folder"],
    "--classifier": ["missing.safetensors", "junk.png", "real.safetensors", "folder", "",
                     "builtin:digits-classifier", "builtin:nope"],
    "--seed": COUNTS + ["-5", "18446744073709551616"],
    "--device": ["cuda", "tpu", ""],
    "--batch-size": COUNTS,
    "--threads": COUNTS,
    "--out": OUTPUTS + ["s.npz"],
    "--plot": OUTPUTS + ["p.png"],
    "--gif": OUTPUTS,
    "--bogus": [None, "1"],
}


@SETTINGS
@given(changes=edits(SAMPLE))
def test_sample_never_raises_and_fails_cleanly(template, changes):
    check_outcome(apply(SAMPLE_BASE, changes), template)


# values click accepts, so that the library's own checks and the run itself are reached
SAMPLE_DEEP = {
    "--ckpt": ["builtin:digits-dae", "builtin:ring8", "builtin:bimodal1d", "builtin:ncsn2d",
               "real.safetensors"],
    "--sampler": ["langevin", "mala", "pc", "ode", "annealed"],
    "--steps": ["1", "2", "11"],
    "--num-samples": ["1", "2", "10000000000000"],
    "--sigma": ["0", "1e300", "1e-300", "0.5"],
    "--step-size": ["1e300", "1e-300", "0.1"],
    "--sigma-max": ["1e300", "1e-300", "0.05"],
    "--sigma-min": ["1e300", "1e-300", "30"],
    "--levels": ["2", "10000000000000"],
    "--step-lr": ["1e300", "1e-300"],
    "--snr": ["1e300", "1e-300"],
    "--temperature": ["0", "1e300"],
    "--init": ["data", "exact", "uniform"],
    "--init-data": ["flat.npy", "junk.png", "pickled.pt", "real.resume.pt"],
    "--seed": ["9223372036854775807"],
    "--batch-size": ["1", "10000000000000"],
    "--out": ["s.npz", "s.pt"],
    "--plot": ["p.png"],
    "--gif": ["g.gif"],
}  # fmt: skip


@SETTINGS
@given(changes=edits(SAMPLE_DEEP))
def test_sample_with_values_click_accepts_never_raises(template, changes):
    options = [option for option, _ in changes]
    if "--init-data" in options and "--init" not in options:
        changes = [*changes, ("--init", "data")]  # what --init-data goes with
    check_outcome(apply(SAMPLE_BASE, changes), template)


TRAIN_BASE = ["train", "--model-config", "hidden=[8]", "--batch-size", "8", "--steps", "3",
              "--threads", "1", "-q", "--out", "run.safetensors"]  # fmt: skip
TRAIN = {
    # (--download is left out: without a network it waits on connection timeouts)
    "--model": ["nope", "unet", "conv_ae", "dncnn", ""],
    "--data": ["nope", "digits", "moons", "mnist", "image_folder", "cifar10", ""],
    "--model-config": [
        "hidden=[1000000000]",
        "hidden=[0]",
        "hidden=[-4]",
        "hidden=abc",
        "hidden=[[1]]",
        "embed_dim=-3",
        "embed_dim=1e9",
        "shape=[3]",
        "nope=1",
        "hidden",
        "[1,2]",
        "{bad",
        "{}",
        "channels=[8,16]",
    ],
    "--data-options": [
        "size=100000",
        "size=0",
        "n_test=0",
        "n_test=1000000000",
        "noise=-1",
        "seed=-1",
        "nope=1",
        "x",
        "{}",
        "model_range=[1,1]",
    ],
    "--data-dir": ["missing", "folder", "digit.png", ""],
    "--steps": STEPS,
    "--batch-size": COUNTS,
    "--lr": NUMBERS,
    "--sigma": NUMBERS,
    "--sigma-min": NUMBERS,
    "--sigma-max": NUMBERS,
    "--noise": ["nope", "fixed", "geometric", "log_normal"],
    "--objective": ["nope", "esm", "ssm", "n2n"],
    "--seed": COUNTS + ["18446744073709551616", "9223372036854775807"],
    "--device": ["cuda", "tpu"],
    "--threads": COUNTS,
    "--out": OUTPUTS + ["real.safetensors", "m.pt"],
    "--metrics": OUTPUTS + ["real.resume.pt", "run.resume.pt", "m.jsonl"],
    "--log-every": COUNTS,
    "--checkpoint-every": COUNTS + ["1"],
    "--resume": CHECKPOINTS + ["real.safetensors"],
    "--extend": [None],
    "--no-progress": [None],
}


@SETTINGS
@given(changes=edits(TRAIN))
def test_train_never_raises_and_fails_cleanly(template, changes):
    check_outcome(apply(TRAIN_BASE, changes), template)


TRAIN_DEEP = {
    "--model": ["unet", "conv_ae", "dncnn", "patch_transformer"],
    "--data": ["digits", "moons", "mnist", "image_folder", "cifar10", "checkerboard",
               "bimodal1d"],
    "--model-config": TRAIN["--model-config"],
    "--data-options": TRAIN["--data-options"],
    "--data-dir": ["missing", "folder", "digit.png"],
    "--batch-size": ["1", "10000000000000"],
    "--lr": ["1e300", "1e-300"],
    "--sigma": ["1e300", "1e-300", "0.5"],
    "--sigma-min": ["1e300", "1e-300", "20"],
    "--sigma-max": ["1e300", "1e-300", "0.001"],
    "--noise": ["fixed", "geometric", "log_normal"],
    "--objective": ["esm", "ssm", "n2n"],
    "--seed": ["9223372036854775807"],
    "--out": ["real.safetensors", "folder/x.safetensors"],
    "--metrics": ["real.metrics.jsonl", "m.jsonl"],
    "--log-every": ["1", "10000000000000"],
    "--checkpoint-every": ["1", "10000000000000"],
    "--resume": ["real.safetensors", "real.resume.pt", "junk.safetensors", "pickled.pt",
                 "truncated.safetensors", "missing.safetensors", "folder", "digit.png"],
    "--extend": [None],
    "--progress": [None],
    "EXTRA": ["--data digits --data-options size=100000", "--data digits --data-options n_test=0",
              "--data moons --data-options noise=-1", "--data rings --data-options n_rings=1000000000",
              "--data checkerboard --data-options cells=100000", "--data mnist --data-dir folder",
              "--data image_folder --data-dir folder", "--data cifar10 --data-dir folder",
              "--data digits --objective esm", "--sigma 0.5 --noise log_normal",
              "--model unet --data digits --model-config channels=[4,8] --model-config groups=2",
              "--lr 1e300 --checkpoint-every 1", "--data digits --model-config hidden=[100000000]"],
}  # fmt: skip


@SETTINGS
@given(changes=edits(TRAIN_DEEP))
def test_train_with_values_click_accepts_never_raises(template, changes):
    base = TRAIN_BASE
    if any(option == "--resume" for option, _ in changes):  # a resumed run takes no run options
        base = ["train", "--threads", "1", "-q"]
        changes = [(o, v) for o, v in changes if o not in ("--model", "--data", "--model-config",
                   "--data-options", "--data-dir", "--download", "--batch-size", "--lr",
                   "--sigma", "--sigma-min", "--sigma-max", "--noise", "--objective", "--seed")]  # fmt: skip
    args = apply(base, changes)
    if args.count("--model-config") > 1 or ("--model" in args and "--model-config" not in [
        o for o, _ in changes
    ]):  # fmt: skip
        i = args.index("--model-config")  # the base's MLP widths: not for another model
        del args[i : i + 2]
    check_outcome(args, template)


DENOISE_BASE = ["denoise", "--ckpt", "builtin:digits-dae", "--sigma", "0.4", "digit.png",
                "--out", "den"]  # fmt: skip
DENOISE = {
    "--ckpt": CHECKPOINTS + ["builtin:ncsn2d-dae", "real.safetensors"],
    "--sigma": NUMBERS,
    "ARG": ["missing.png", "junk.png", "folder", "tiny16.png", "real.safetensors", ""],
    "--out": ["digit.png", "nowhere/den", "", "folder"],
    "--full-size": [None],
    "--seed": COUNTS,
    "--device": ["cuda", "tpu"],
    "--threads": COUNTS,
}


@property_settings(20)
@given(changes=edits(DENOISE))
def test_denoise_never_raises_and_fails_cleanly(template, changes):
    check_outcome(apply(DENOISE_BASE, changes), template)


DENOISE_DEEP = {
    "--ckpt": ["builtin:ncsn2d-dae", "builtin:ring8", "real.safetensors"],
    "--sigma": ["1e300", "1e-300", "5", "0.02", "9"],
    "ARG": ["missing.png", "junk.png", "folder", "tiny16.png", "real.safetensors"],
    "--out": ["digit.png", "folder", "nowhere/den"],
    "--full-size": [None],
    "--seed": ["9223372036854775807"],
}


@property_settings(20)
@given(changes=edits(DENOISE_DEEP))
def test_denoise_with_values_click_accepts_never_raises(template, changes):
    check_outcome(apply(DENOISE_BASE, changes), template)


@property_settings(15)
@given(
    target=st.sampled_from(CHECKPOINTS + ["real.safetensors", "builtin:ring8"]),
    as_json=st.booleans(),
    extra=st.sampled_from([[], ["extra"], ["--bogus"]]),
)
def test_info_never_raises_and_fails_cleanly(template, target, as_json, extra):
    check_outcome(["info", target, *(["--json"] if as_json else []), *extra], template)


@property_settings(15)
@given(
    name=st.sampled_from(["nope", "", "../x", "bench", "_common", "posterior_mean_vs_mapp"]),
    changes=edits(
        {
            "--out": ["digit.png", "nowhere/x", ""],
            "--seed": COUNTS,
            "--threads": COUNTS,
            "--full": [None],
            "-q": [None],
        }
    ),  # fmt: skip
)
def test_experiment_never_raises_and_fails_cleanly(template, name, changes):
    check_outcome(apply(["experiment", name], changes), template)


@property_settings(8)
@given(extra=st.sampled_from([[], ["extra"], ["--json"], ["-q"], ["--help"], ["--bogus", "1"]]))
def test_builtins_and_the_group_never_raise(template, extra):
    check_outcome(["builtins", *extra], template)
    check_outcome([*extra], template)
