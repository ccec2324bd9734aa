"""The ``scoregen`` command: every command through its entry point, every error as one line.

A few runs go through a real subprocess (``python -m scoregen`` and the installed ``scoregen``
script, with this checkout first on PYTHONPATH); the many small cases run in-process with
click's CliRunner, which calls the same ``Group.main`` (one-line errors, exit codes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from scoregen import __version__
from scoregen.checkpoint import read_record
from scoregen.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README_COMMAND = "scoregen sample --ckpt builtin:ncsn2d-dae --steps 5000 --plot samples.png"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    # the commands set torch's thread count (--threads); give the test process its own back
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_module(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "scoregen", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def invoke(*args, cwd: Path | None = None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(cli, [str(a) for a in args], prog_name="scoregen")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(cli, [str(a) for a in args], prog_name="scoregen")
    finally:
        os.chdir(old)


def assert_one_line_error(code, stderr, exit_code, command, *needles):
    lines = stderr.strip().splitlines()
    assert code == exit_code, (code, stderr)
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith(f"scoregen {command}: error: ".replace("  ", " ")), lines[0]
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def mode_weights_printed(stdout: str) -> list[float]:
    match = re.search(r"mode weights \[([^\]]*)\]", stdout)
    assert match, stdout
    return [float(v) for v in match.group(1).replace("...", "").split(",")]


# ---------------------------------------------------------------------- real subprocesses
def test_readme_command_draws_the_two_modes_with_their_weights(tmp_path):
    readme = (ROOT / "README.md").read_text()
    assert f"pip install -e . && {README_COMMAND}" in readme
    script = Path(sys.executable).parent / "scoregen"
    if not script.exists():
        pytest.skip(f"no installed scoregen script beside {sys.executable}")
    out = subprocess.run(
        [str(script), *README_COMMAND.split()[1:]],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    png = tmp_path / "samples.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights = mode_weights_printed(out.stdout)
    # 1000 samples: the weight of the 0.8 mode has standard error sqrt(0.8·0.2/1000) = 0.013;
    # 0.05 allows about four standard errors (the sampler's own bias is far smaller)
    assert abs(weights[0] - 0.8) < 0.05 and abs(weights[1] - 0.2) < 0.05, out.stdout
    assert "samples.png" in out.stdout


def test_version_help_and_one_error_through_python_m(tmp_path):
    out = run_module("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    out = run_module("sample", "--ckpt", "builtin:nope", "--out", "x.npy", cwd=tmp_path)
    assert_one_line_error(out.returncode, out.stderr, 2, "sample", "--ckpt", "builtin:ncsn2d-dae")
    assert out.stdout == "" and list(tmp_path.iterdir()) == []


def test_info_train_denoise_experiment_through_python_m(tmp_path):
    out = run_module("info", "builtin:ncsn2d-dae")
    assert out.returncode == 0 and "parameters" in out.stdout and "[0.05, 20]" in out.stdout

    args = ["--model-config", "hidden=[8]", "--steps", "20", "--batch-size", "16", "-q"]
    out = run_module("train", *args, "--out", "toy.safetensors", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "toy.safetensors").exists() and (tmp_path / "toy.metrics.jsonl").exists()

    image = tmp_path / "digit.png"
    _write_digit(image)
    out = run_module("denoise", "--ckpt", "builtin:digits-dae", "--sigma", "0.4", image,
                     "--out", tmp_path / "den")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert {p.name for p in (tmp_path / "den").iterdir()} == {
        "digit_compare.png",
        "digit_denoised.png",
    }
    noisy, denoised = map(
        float, re.search(r"noisy ([\d.]+) dB -> denoised ([\d.]+)", out.stdout).groups()
    )
    assert denoised > noisy, out.stdout

    out = run_module("experiment", "--list", cwd=tmp_path)
    assert out.returncode == 0 and "posterior_mean_vs_map" in out.stdout


def _write_digit(path: Path, index: int = 5) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = load_digits().images[index] / 16.0
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path)


# ---------------------------------------------------------------------- sample, in-process
def test_every_command_has_help_with_an_example_and_defaults():
    for command in ("sample", "train", "experiment", "info", "denoise", "builtins"):
        result = invoke(command, "--help")
        assert result.exit_code == 0, result.output
        if command not in ("builtins",):
            assert "Example" in result.stdout, command
    assert "annealed/langevin/mala 2000" in invoke("sample", "--help").stdout
    bare = invoke()
    assert bare.exit_code == 0 and bare.stdout.startswith("Usage: scoregen") and bare.stderr == ""


@pytest.mark.parametrize(
    ("ckpt", "sampler", "suffix", "extra"),
    [
        ("builtin:ring8", "mala", ".npz", ["--sigma", "0"]),
        ("builtin:bimodal1d", "pc", ".npy", ["--plot", "hist.png"]),
        ("builtin:grid25", "ode", ".pt", ["--gif", "path.gif", "--steps", "8"]),
        ("builtin:ncsn2d", "langevin", ".npy", ["--init", "uniform", "--temperature", "0.5"]),
        (
            "builtin:ncsn2d",
            "annealed",
            ".npy",
            ["--levels", "4", "--batch-size", "70", "--init", "data"],
        ),
    ],
)
def test_sample_writes_what_it_prints(tmp_path, ckpt, sampler, suffix, extra):
    result = invoke("sample", "--ckpt", ckpt, "--sampler", sampler, "--steps", "30",
                    "--num-samples", "200", "--out", f"x{suffix}", *extra, cwd=tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    path = tmp_path / f"x{suffix}"
    if suffix == ".pt":
        samples = torch.load(path, weights_only=True)
    elif suffix == ".npz":
        samples = torch.from_numpy(np.load(path)["samples"])
    else:
        samples = torch.from_numpy(np.load(path))
    from scoregen.gmm import preset
    from scoregen.metrics import mode_weights

    mixture = preset(ckpt.removeprefix("builtin:"))
    assert samples.shape == (200, mixture.dim) and torch.isfinite(samples).all()
    printed = mode_weights_printed(result.stdout)
    recomputed = mode_weights(samples.double(), mixture).tolist()
    assert printed == pytest.approx(recomputed[: len(printed)], abs=5e-4)
    for name in extra:
        if name.endswith((".png", ".gif")):
            assert (tmp_path / name).stat().st_size > 1000, name


def test_sample_images_from_the_digits_builtin(tmp_path):
    result = invoke("sample", "--ckpt", "builtin:digits-dae", "--steps", "20", "--levels", "4",
                    "--num-samples", "8", "--out", "d.npy", "--plot", "d.png", cwd=tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    pixels = np.load(tmp_path / "d.npy")
    assert pixels.shape == (8, 1, 8, 8) and pixels.min() >= 0 and pixels.max() <= 1
    assert (tmp_path / "d.png").exists()
    # the summary ends with the image numbers, each beside its real-vs-real band
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Drew 8 samples from builtin:digits-dae")
    assert lines[1].startswith("Compared with 297 held-out digits images")
    text = "\n".join(lines[2:])
    for needle in ("20 sets of 8 real training images", "Fréchet distance in the digits "
                   "classifier's features", "× the real median (band", "KID ×10³", "class shares",
                   "weakest share", "TV to uniform", "memorised: ", "nearest-training distance"):  # fmt: skip
        assert needle in text, (needle, result.stdout)
    assert lines[-1].startswith("Wrote d.npy, d.png")
    quiet = invoke("sample", "--ckpt", "builtin:digits-dae", "--steps", "20", "--levels", "4",
                   "--num-samples", "8", "-q", cwd=tmp_path)  # fmt: skip
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == "", quiet.output


# ---------------------------------------------------------------------- errors, in-process
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    torch.save({"w": torch.zeros(2)}, folder / "pickled.pt")
    (folder / "corrupt.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"
    )
    return folder


def _fixed_sigma_checkpoint(folder: Path) -> Path:
    path = folder / "fixed.safetensors"
    if not path.exists():
        result = invoke("train", "--data", "ncsn2d", "--sigma", "0.5", "--steps", "5",
                        "--batch-size", "8", "--model-config", "hidden=[8]", "--out", path, "-q")  # fmt: skip
        assert result.exit_code == 0, result.output
    return path


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--ckpt", "missing.safetensors"], ["--ckpt", "does not exist"]),
        (["--ckpt", "{bad}/pickled.pt"], ["--ckpt", "pickle"]),
        (["--ckpt", "{bad}/corrupt.safetensors"], ["--ckpt", "corrupt"]),
        (["--ckpt", "builtin:nope"], ["--ckpt", "builtin:ncsn2d", "builtin:digits-dae"]),
        (["--ckpt", "builtin:ncsn2d", "--steps", "0"], ["--steps: must be >= 1, got 0"]),
        (["--ckpt", "builtin:ncsn2d", "--num-samples", "-2"], ["--num-samples", "-2"]),
        (["--ckpt", "builtin:ncsn2d", "--batch-size", "0"], ["--batch-size"]),
        (
            ["--ckpt", "builtin:ncsn2d", "--step-size", "-1", "--sampler", "langevin"],
            ["--step-size"],
        ),
        (["--ckpt", "builtin:ncsn2d", "--plot", "no/such/dir/p.png"], ["--plot", "does not exist"]),
        (["--ckpt", "builtin:ncsn2d", "--out", "x.csv"], ["--out", ".npy"]),
        (["--ckpt", "builtin:ncsn2d-dae", "--sampler", "mala"], ["--sampler", "builtin:ring8"]),
        (["--ckpt", "builtin:ncsn2d-dae", "--sampler", "langevin", "--sigma", "0"], ["--sigma"]),
        (["--ckpt", "builtin:ncsn2d-dae", "--sigma-max", "100"], ["--sigma-max", "[0.05, 20]"]),
        (["--ckpt", "builtin:ncsn2d", "--steps", "5"], ["--steps=5", "levels=10"]),
        (["--ckpt", "builtin:ncsn2d", "--sampler", "pc", "--levels", "4"], ["--levels", "annealed"]),
        (["--ckpt", "builtin:ncsn2d", "--levels", "1"], ["--levels", ">= 2"]),
        (["--ckpt", "builtin:ncsn2d", "--seed", str(10**23)], ["--seed", "<="]),
        (["--ckpt", "builtin:ncsn2d", "--threads", "99999999999"], ["--threads", "<="]),
        (["--ckpt", "ncsn2d"], ["--ckpt", "did you mean builtin:ncsn2d?"]),
        (["--ckpt", "builtin:ncsn2"], ["--ckpt", "did you mean builtin:ncsn2d"]),
        (["--ckpt", "builtin:ncsn2d", "--sigma-max", "1e300"], ["--sigma-max", "<="]),
        (["--ckpt", "builtin:ncsn2d", "--num-samples", "100000000000"], ["--num-samples", "at most"]),
        (["--ckpt", "builtin:ncsn2d", "--sampler", "ode", "--steps", "2000000000"], ["--steps", "at most"]),
        (["--ckpt", "builtin:ncsn2d", "--init-data", "missing.npy"], ["--init-data"]),
        (["--ckpt", "builtin:ncsn2d", "--sampler", "ode", "--temperature", "2"], ["--temperature"]),
        (["--ckpt", "{fixed}", "--sigma", "0.3"], ["--sigma", "0.5"]),
        (["--ckpt", "{fixed}", "--sampler", "annealed"], ["--sampler", "langevin"]),
        (["--steps", "10"], ["--ckpt"]),
        (["--ckpt", "builtin:ncsn2d", "--no-such-option"], ["--no-such-option"]),
    ],
)
def test_sample_usage_errors_are_one_line_and_write_nothing(tmp_path, bad_files, args, needles):
    fixed = _fixed_sigma_checkpoint(bad_files)
    args = [a.format(bad=bad_files, fixed=fixed) for a in args]
    outputs = [] if "--out" in args else ["--out", "s.npy"]
    outputs += [] if "--plot" in args else ["--plot", "s.png"]
    result = invoke("sample", *args, *outputs, cwd=tmp_path)
    assert_one_line_error(result.exit_code, result.stderr, 2, "sample", *needles)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_cuda_without_cuda_is_a_usage_error(tmp_path):
    for command in (["sample", "--ckpt", "builtin:ncsn2d"], ["train", "--steps", "1"]):
        result = invoke(*command, "--device", "cuda", cwd=tmp_path)
        assert_one_line_error(result.exit_code, result.stderr, 2, command[0], "--device", "cuda")
    assert list(tmp_path.iterdir()) == []


def test_a_diverging_sampler_fails_with_one_line_and_leaves_no_file(tmp_path):
    result = invoke("sample", "--ckpt", "builtin:ncsn2d", "--sampler", "langevin",
                    "--step-size", "1e6", "--steps", "200", "--out", "x.npy", "--plot", "x.png",
                    cwd=tmp_path)  # fmt: skip
    assert_one_line_error(result.exit_code, result.stderr, 1, "sample", "diverged", "step_size")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_later_write_removes_the_earlier_outputs(tmp_path, monkeypatch):
    from scoregen import plot

    def broken(fig, path, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plot, "save_figure", broken)
    result = invoke("sample", "--ckpt", "builtin:ncsn2d", "--steps", "10", "--num-samples", "20",
                    "--out", "x.npy", "--plot", "x.png", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(result.exit_code, result.stderr, 1, "sample", "No space left")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- info, train, experiment
def test_info_describes_builtins_and_files(tmp_path):
    result = invoke("info", "builtin:ring8")
    assert result.exit_code == 0 and "8 components" in result.stdout
    result = invoke("info", "builtin:digits-dae", "--json")
    record = json.loads(result.stdout)
    assert record["model"]["family"] == "unet" and record["data"]["shape"] == [1, 8, 8]
    result = invoke("info", "missing.safetensors")
    assert_one_line_error(result.exit_code, result.stderr, 2, "info", "CKPT", "does not exist")
    result = invoke("builtins")
    assert result.exit_code == 0 and "builtin:ncsn2d-dae" in result.stdout


def test_train_resume_and_the_checkpoint_it_writes(tmp_path):
    ckpt = tmp_path / "run.safetensors"
    base = ["--model-config", '{"hidden": [8], "embed_dim": 4}', "--batch-size", "8",
            "--log-every", "5", "-q"]  # fmt: skip
    result = invoke("train", *base, "--steps", "10", "--checkpoint-every", "5", "--out", ckpt)
    assert result.exit_code == 0, result.output
    # another total changes the cosine schedule: refused unless asked for
    result = invoke("train", "--resume", ckpt, "--steps", "15")
    assert_one_line_error(result.exit_code, result.stderr, 2, "train", "--steps", "--extend")
    result = invoke("train", "--resume", ckpt, "--steps", "15", "--extend")
    assert result.exit_code == 0, result.output
    assert "15 steps" in result.stdout
    lines = (tmp_path / "run.metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [5, 10, 15]
    info = invoke("info", ckpt)
    assert "15 steps" in info.stdout and "parameters" in info.stdout
    # resuming to fewer steps than already taken, and changing the run, are usage errors
    result = invoke("train", "--resume", ckpt, "--steps", "12")
    assert_one_line_error(result.exit_code, result.stderr, 2, "train", "--steps", "15")
    result = invoke("train", "--resume", ckpt, "--lr", "0.1")
    assert_one_line_error(result.exit_code, result.stderr, 2, "train", "--lr", "--resume")


@pytest.mark.parametrize(
    ("args", "code", "needles"),
    [
        (["--steps", "0"], 2, ["--steps"]),
        (["--out", "model.pt"], 2, ["--out", ".safetensors"]),
        (["--out", "nowhere/m.safetensors"], 2, ["--out", "does not exist"]),
        (["--model-config", "hidden"], 2, ["--model-config", "key=value"]),
        (["--model-config", "nonsense=1"], 2, ["nonsense"]),
        (["--noise", "fixed"], 2, ["--noise", "--sigma"]),
        (["--noise", "log_normal", "--sigma-max", "5"], 2, ["--sigma-max", "log_uniform"]),
        (["--noise", "log_normal", "--sigma-min", "0.01"], 2, ["--sigma-min", "no range"]),
        (["--resume", "missing.safetensors"], 2, ["--resume", "does not exist"]),
        (["--lr", "1e30", "--log-every", "5"], 1, ["loss became nan"]),
        (["--data", "ring8", "--data-dir", "imgs"], 2, ["--data-dir", "does not read files"]),
        (["--data", "digits", "--download"], 2, ["--download", "never downloaded"]),
        (["--data", "mnist", "--data-dir", "nowhere"], 2, ["files not found", "nowhere"]),
        (
            ["--data", "image_folder", "--data-dir", "a", "--data-options", "data_dir=b"],
            2,
            ["--data-dir", "conflicts"],
        ),
    ],  # fmt: skip
)
def test_train_errors_leave_no_files(tmp_path, args, code, needles):
    base = ["--steps", "10", "-q"]
    if "--resume" not in args:  # (a resumed run takes its configuration from the saved one)
        base += ["--batch-size", "8", "--model-config", "hidden=[8]"]
    result = invoke("train", *base, *args, cwd=tmp_path)
    assert_one_line_error(result.exit_code, result.stderr, code, "train", *needles)
    assert list(tmp_path.iterdir()) == []


def test_train_reads_an_image_folder_from_data_dir(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(20):
        _write_digit(images / f"digit{i}.png", index=i)
    result = invoke("train", "--data", "image_folder", "--data-dir", str(images),
                    "--data-options", "size=8", "--model-config", "hidden=[8]",
                    "--steps", "3", "--batch-size", "4", "--out", "m.safetensors", "-q",
                    cwd=tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = read_record(tmp_path / "m.safetensors")
    assert record["data"]["name"] == "image_folder"
    assert record["training"]["config"]["data_options"]["data_dir"] == str(images)
    # no classifier for these images: the report measures memorisation and says what it cannot
    result = invoke("sample", "--ckpt", "m.safetensors", "--steps", "10", "--levels", "2",
                    "--num-samples", "4", cwd=tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Compared with 2 held-out image_folder images" in result.stdout
    assert "Fréchet distance, KID and class coverage: not measured" in result.stdout
    assert "memorised: " in result.stdout and "KID ×10³:" not in result.stdout


def test_a_model_of_28x28_idx_files_is_trained_sampled_and_scored_with_and_without_a_classifier(tmp_path):
    from tests.test_data import write_mnist_files

    write_mnist_files(tmp_path, "MNIST", 12, 6, compress=True)
    result = invoke("train", "--data", "mnist", "--data-dir", tmp_path, "--model", "unet",
                    "--model-config", "channels=[8]", "--steps", "3", "--batch-size", "4",
                    "--out", "m.safetensors", "-q", cwd=tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    result = invoke("sample", "--ckpt", "m.safetensors", "--sampler", "annealed", "--steps", "4",
                    "--levels", "2", "--num-samples", "5", "--out", "x.npy", cwd=tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "x.npy").shape == (5, 1, 28, 28)
    assert "Compared with 6 held-out mnist images" in result.stdout
    assert "Fréchet distance, KID and class coverage: not measured" in result.stdout
    assert "'mnist'; scoregen ships one for digits only" in result.stdout
    assert "memorised: " in result.stdout and "nearest-training distance" in result.stdout
    # with a classifier trained on the same files, as docs/image_quality.md shows (one epoch on
    # 12 images: the numbers are not the point)
    from experiments import train_classifier

    threads = torch.get_num_threads()  # main() sets its --threads
    try:
        train_classifier.main(["--data", "mnist", "--data-dir", str(tmp_path), "--epochs", "1",
                               "--out", str(tmp_path / "c.safetensors")])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    result = invoke("sample", "--ckpt", "m.safetensors", "--sampler", "annealed", "--steps", "4",
                    "--levels", "2", "--num-samples", "5", "--classifier", "c.safetensors",
                    cwd=tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Fréchet distance in the mnist classifier's features" in result.stdout
    assert "KID ×10³:" in result.stdout and "class shares" in result.stdout
    assert "not measured" not in result.stdout
    # a classifier of other images, a file that is not one, and points: one-line usage errors
    for spec, ckpt, says in [("builtin:digits-classifier", "m.safetensors", "[1, 8, 8]"),
                             ("m.safetensors", "m.safetensors", "not 'scoregen-classifier'"),
                             ("c.safetensors", "builtin:ncsn2d-dae", "points")]:  # fmt: skip
        result = invoke("sample", "--ckpt", ckpt, "--steps", "20", "-n", "5", "--classifier", spec,
                        cwd=tmp_path)  # fmt: skip
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--classifier" in lines[0] and says in lines[0], lines


def test_experiment_runs_lists_and_cleans_up(tmp_path, monkeypatch):
    import types

    import experiments._common as common

    def run(out_dir, full=False, seed=0):
        Path(out_dir).mkdir(exist_ok=True)
        (Path(out_dir) / "tiny.json").write_text("{}")
        if seed == 13:
            raise RuntimeError("boom")
        return {"full": full, "seed": seed}

    fake = types.ModuleType("experiments.tiny")
    fake.run, fake.__doc__ = run, "A tiny experiment."
    monkeypatch.setattr(common, "list_experiments", lambda: ["tiny"])
    monkeypatch.setattr(common, "load_experiment", lambda name, check=True: fake)
    result = invoke("experiment", "--list")
    assert result.stdout.split() == ["tiny", "A", "tiny", "experiment."]
    result = invoke("experiment", "tiny", "--out", tmp_path / "a", "--seed", "3", "--full")
    assert result.exit_code == 0, result.output
    summary = result.stdout.rsplit("\n[", 1)[0]  # the short table, not the JSON
    assert summary.strip() == "full true, seed 3", summary
    result = invoke("experiment", "tiny", "--out", tmp_path / "b", "--seed", "13")
    assert_one_line_error(result.exit_code, result.stderr, 1, "experiment", "boom")
    assert not (tmp_path / "b").exists()
    result = invoke("experiment", "nope")
    assert_one_line_error(result.exit_code, result.stderr, 2, "experiment", "nope", "tiny")


def test_experiment_without_the_experiments_package_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "experiments", None)
    monkeypatch.setitem(sys.modules, "experiments._common", None)
    result = invoke("experiment", "--list")
    assert_one_line_error(result.exit_code, result.stderr, 1, "experiment", "scoregen repository",
                          "pip install -e")  # fmt: skip


def test_the_installed_script_finds_the_experiments_from_any_folder(tmp_path):
    # the console script of an editable install, run from a folder outside the checkout and
    # without PYTHONPATH: what a user types after `pip install -e .`
    script = Path(sys.executable).parent / "scoregen"
    if not script.exists():
        pytest.skip(f"no installed scoregen script beside {sys.executable}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(script), "experiment", "--list"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "posterior_mean_vs_map" in out.stdout and "langevin_vs_annealed" in out.stdout


# ---------------------------------------------------------------------- denoise
def test_denoise_errors(tmp_path):
    image = tmp_path / "d.png"
    _write_digit(image)
    (tmp_path / "junk.png").write_text("not an image")
    fixed = _fixed_sigma_checkpoint(tmp_path)
    cases = [
        (["--ckpt", "builtin:digits-dae", "--sigma", "9", image], ["--sigma", "[0.02, 5]"]),
        (["--ckpt", "builtin:digits-dae", "--sigma", "0", image], ["--sigma"]),
        (["--ckpt", "builtin:ncsn2d", "--sigma", "1", image], ["--ckpt", "not images"]),
        (["--ckpt", fixed, "--sigma", "0.5", image], ["--ckpt", "not images"]),
        (["--ckpt", "builtin:digits-dae", "--sigma", "1", tmp_path / "x.png"], ["IMAGE"]),
        (["--ckpt", "builtin:digits-dae", "--sigma", "1", tmp_path / "junk.png"], ["IMAGE"]),
    ]
    for args, needles in cases:
        result = invoke("denoise", *args, "--out", tmp_path / "out")
        assert_one_line_error(result.exit_code, result.stderr, 2, "denoise", *needles)
    result = invoke("denoise", "--ckpt", "builtin:digits-dae", "--sigma", "1", image,
                    "--out", tmp_path / "no" / "out")  # fmt: skip
    assert_one_line_error(result.exit_code, result.stderr, 2, "denoise", "--out", "does not exist")
    assert not (tmp_path / "out").exists()
