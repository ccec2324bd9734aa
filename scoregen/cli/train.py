"""``scoregen train``: parse → :func:`scoregen.train` → print; the run's files and resume."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from scoregen.cli._common import (
    CONTEXT,
    MAX_SEED,
    MAX_THREADS,
    THREADS_HELP,
    Count,
    Failure,
    Level,
    OutputFile,
    fmt,
    key_values,
    set_up_torch,
)
from scoregen.config import (
    DATASET_NAMES,
    MAX_STEPS,
    MODEL_FAMILIES,
    NOISE_DISTRIBUTIONS,
    OBJECTIVES,
    TrainConfig,
)

TRAIN_EPILOG = """\b
Examples:
  scoregen train --model mlp --data ncsn2d --steps 4000 --out toy.safetensors
  scoregen train --model unet --data digits --model-config channels=[16,32] \\
      --sigma-min 0.02 --sigma-max 5 --out digits.safetensors
  scoregen train --data digits --model conv_ae --sigma 0.3 --out dae.safetensors   (fixed σ)
  scoregen train --resume toy.safetensors                                         (continue)
  scoregen train --resume toy.safetensors --steps 8000 --extend            (train further)

\b
--model-config and --data-options take key=value (value read as JSON when it parses:
hidden=[64,64]) or a JSON object, and may be repeated. The resume state goes beside the
checkpoint as NAME.resume.pt; a lock file NAME.safetensors.lock refuses a second run on the
same --out while one runs. Files of an earlier run at --out stay until this run's first
checkpoint. Ctrl-C stops after the current step and saves it (when the files are this run's).
"""
# options that define the run: with --resume they come from the saved run
_RUN_OPTIONS = ("model", "data", "model_config", "data_options", "data_dir", "download",
                "batch_size", "lr", "sigma", "sigma_min", "sigma_max", "noise", "objective",
                "seed")  # fmt: skip


def _data_options(o: dict[str, Any]) -> dict[str, Any]:
    """``--data-options`` plus ``--data-dir`` / ``--download``, checked against the data set."""
    from scoregen.data import dataset_options

    options = key_values(o["data_options"], "--data-options")
    accepted = dataset_options(o["data"])
    for flag, key, value in (("--data-dir", "data_dir", o["data_dir"]),
                             ("--download", "download", o["download"] or None)):  # fmt: skip
        if value is None:
            continue
        if key not in accepted:
            raise click.BadParameter(
                f"data set {o['data']!r} does not read files (it is generated or shipped with "
                "an installed package)" if key == "data_dir"
                else f"data set {o['data']!r} is never downloaded",
                param_hint=flag,
            )  # fmt: skip
        if key in options and options[key] != value:
            raise click.BadParameter(
                f"{value!r} conflicts with --data-options {key}={options[key]!r}", param_hint=flag
            )
        options[key] = value
    return options


def _train_options(f):
    # the dataclass's field defaults, read without building a TrainConfig (that imports torch)
    d = SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(TrainConfig)})
    options = [
        click.option("--model", type=click.Choice(sorted(MODEL_FAMILIES)), default=d.model, help="Model family."),
        click.option("--data", type=click.Choice(sorted(DATASET_NAMES)), default=d.data, help="Data set."),
        click.option("--model-config", multiple=True, metavar="KEY=VALUE|JSON", help="Model fields (shape comes from the data)."),
        click.option("--data-options", multiple=True, metavar="KEY=VALUE|JSON", help="Data set options, e.g. size=16 or data_dir=/path."),
        click.option("--data-dir", metavar="DIR", default=None, help="Folder of mnist, fashion_mnist, cifar10 or image_folder files (same as --data-options data_dir=DIR)."),
        click.option("--download", is_flag=True, help="mnist, fashion_mnist, cifar10: let torchvision download into --data-dir when the files are absent (never by default)."),
        click.option("--steps", type=Count(1, MAX_STEPS), default=d.steps, help="Optimizer steps. [with --resume: the saved run's total; another total needs --extend under the cosine schedule]"),
        click.option("--batch-size", type=Count(), default=d.batch_size, help="Examples per step."),
        click.option("--lr", type=Level(), default=d.lr, help="Peak learning rate (warmup, then cosine)."),
        click.option("--sigma", type=Level(), default=None, help="Train at this single σ (a fixed-σ DAE); implies --noise fixed."),
        click.option("--sigma-min", type=Level(), default=d.sigma_min, help="Smallest training σ."),
        click.option("--sigma-max", type=Level(), default=d.sigma_max, help="Largest training σ."),
        click.option("--noise", type=click.Choice(NOISE_DISTRIBUTIONS), default=None, help=f"How σ is drawn. [default: {d.noise}, or fixed with --sigma]"),
        click.option("--objective", type=click.Choice(OBJECTIVES), default=d.objective, help="dae (MSE denoising), n2n (Noise2Noise), esm/ssm (score matching, toys)."),
        click.option("--seed", type=Count(0, MAX_SEED), default=d.seed, help="Random seed."),
        click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", help="Where to train."),
        click.option("--threads", type=Count(1, MAX_THREADS), default=1, help=THREADS_HELP),
        click.option("--out", type=OutputFile((".safetensors",)), default=None, help="Checkpoint to write. [default: checkpoint.safetensors; with --resume, the resumed file]"),
        click.option("--metrics", type=OutputFile((".jsonl",)), default=None, help="JSONL metrics, one line per log step. [default: beside the checkpoint, NAME.metrics.jsonl]"),
        click.option("--log-every", type=Count(), default=None, help=f"Steps between metrics lines. [default: {d.log_every}; with --resume, the saved run's]"),
        click.option("--checkpoint-every", type=Count(minimum=0), default=None, help=f"Steps between checkpoints (0: only at the end). [default: {d.checkpoint_every}; with --resume, the saved run's]"),
        click.option("--resume", metavar="CKPT", default=None, help="Continue the run saved in CKPT exactly (needs CKPT's .resume.pt beside it)."),
        click.option("--extend", is_flag=True, help="With --resume: train to another --steps total; the updates after the saved step follow the cosine schedule of a run of the new total (recorded)."),
        click.option("--progress/--no-progress", default=None, help="Show a progress bar. [default: only on a terminal]"),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


@click.command(epilog=TRAIN_EPILOG, context_settings=CONTEXT)
@_train_options
@click.pass_context
def train(ctx: click.Context, **o) -> None:
    """Train a denoiser (MMSE / denoising score matching) and write a checkpoint."""
    from scoregen.checkpoint import resume_path
    from scoregen.models import count_parameters
    from scoregen.train import OutputLockedError, TrainingInterrupted
    from scoregen.train import train as run_training

    device = set_up_torch(o["device"], o["threads"])
    if o["resume"] is not None:
        base, checkpoint, metrics = _resumed_run(ctx, o)
    else:
        if o["extend"]:
            raise click.BadParameter("continues a saved run: give it with --resume", param_hint="--extend")  # fmt: skip
        base, checkpoint, metrics = _new_run(o)
    base.update(
        device=device,
        out_dir=None,
        checkpoint=str(checkpoint),
        metrics_file=str(metrics),
        extend=o["extend"],
        progress=False if o["quiet"] else o["progress"],
    )
    for name in ("log_every", "checkpoint_every"):  # given, else the saved run's or the default
        if o[name] is not None:
            base[name] = o[name]
    try:
        config = TrainConfig(**base)
    except (ValueError, TypeError) as e:
        raise _usage_error(e) from None

    # under torchrun every process runs this command; rank 0 owns the files and the summary
    rank_0 = int(os.environ.get("RANK", "0")) == 0
    try:
        result = run_training(config)
    except (ValueError, TypeError) as e:
        raise _usage_error(e) from None
    except OutputLockedError as e:
        raise Failure(str(e)) from None
    except TrainingInterrupted as e:
        if e.checkpoint is not None:
            raise Failure(
                f"interrupted after step {e.step}; the run is saved at that step in "
                f"{e.checkpoint}: continue it with scoregen train --resume {e.checkpoint}"
            ) from None
        raise Failure(
            f"interrupted after step {e.step}, before this run's first checkpoint; "
            f"the files at {checkpoint} are as they were"
        ) from None
    except RuntimeError as e:  # torch failing mid-run (an allocation, a kernel)
        raise Failure(" ".join(str(e).split())[:400]) from None
    if o["quiet"] or not rank_0:
        return
    summary = result.summary
    loss = summary.get("final_loss")
    where = summary["device"]
    if summary["world_size"] > 1:
        where = f"{summary['world_size']} processes ({where} on rank 0)"
    click.echo(
        f"Trained {config.model} ({count_parameters(result.denoiser):,} parameters) on "
        f"{config.data} for {summary['steps']} steps in {summary['wall_time_s']:.1f} s on "
        f"{where}, σ {_describe_sigma(summary['sigma'])}, final loss "
        f"{fmt(loss) if loss is not None else '?'}. Wrote {checkpoint} (resume state "
        f"{resume_path(checkpoint)}) and {metrics}."
    )


def _new_run(o: dict[str, Any]) -> tuple[dict[str, Any], Path, Path]:
    """The configuration of a new run from the options, and where it writes."""
    checkpoint = o["out"] or Path("checkpoint.safetensors")
    noise = o["noise"] or ("fixed" if o["sigma"] is not None else TrainConfig.noise)
    if o["sigma"] is not None and noise != "fixed":
        raise click.BadParameter(
            f"trains at one σ, which needs --noise fixed, not {noise}", param_hint="--sigma"
        )
    if noise == "fixed" and o["sigma"] is None:
        raise click.BadParameter("fixed needs --sigma (the training σ)", param_hint="--noise")
    if noise == "log_normal":
        given = [
            flag
            for name, flag in (("sigma_min", "--sigma-min"), ("sigma_max", "--sigma-max"))
            if click.get_current_context().get_parameter_source(name)
            is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            lo, hi = TrainConfig(noise="log_normal").noise_levels().range()
            raise click.BadParameter(
                f"log_normal draws log σ ~ N({TrainConfig.p_mean:g}, {TrainConfig.p_std:g}²) "
                f"(99.7 % of σ in {lo:.2g}–{hi:.2g}) and takes no range; for σ between "
                "--sigma-min and --sigma-max use --noise log_uniform or geometric",
                param_hint=given[0],
            )
    base = {
        "model": o["model"],
        "data": o["data"],
        "model_config": key_values(o["model_config"], "--model-config"),
        "data_options": _data_options(o),
        "steps": o["steps"],
        "batch_size": o["batch_size"],
        "lr": o["lr"],
        "sigma": o["sigma"],
        "sigma_min": o["sigma_min"],
        "sigma_max": o["sigma_max"],
        "noise": noise,
        "objective": o["objective"],
        "seed": o["seed"],
    }
    metrics = o["metrics"] or checkpoint.with_name(checkpoint.stem + ".metrics.jsonl")
    _check_distinct(checkpoint, metrics)
    return base, checkpoint, metrics


def _resumed_run(ctx: click.Context, o: dict[str, Any]) -> tuple[dict[str, Any], Path, Path]:
    """The saved run's configuration (cadence included) with the options that may change,
    and where it writes: back into the resumed files unless --out says otherwise."""
    from scoregen.checkpoint import CheckpointError, load_resume_state, resume_path

    given = [
        name
        for name in _RUN_OPTIONS
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        raise click.BadParameter(
            "cannot be combined with --resume: a resumed run keeps its saved configuration "
            "(only --steps (another total needs --extend), --device, --out, --metrics, "
            "--log-every, --checkpoint-every and --progress may change)",
            param_hint="--" + given[0].replace("_", "-"),
        )
    source = Path(o["resume"])
    state_path = source if source.suffix == ".pt" else resume_path(source)
    try:
        state = load_resume_state(state_path)
        saved, done = state["config"], state["step"]
        if not isinstance(saved, dict) or isinstance(done, bool) or not isinstance(done, int):
            raise CheckpointError(f"{str(state_path)!r} is not a usable resume state")
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        base = {k: v for k, v in saved.items() if k in fields and k != "extend"}
        TrainConfig(**base)
    except (CheckpointError, KeyError, TypeError, ValueError) as e:
        message = str(e) if isinstance(e, CheckpointError) else (
            f"{str(state_path)!r} is not a usable resume state ({type(e).__name__}: {e})"
        )  # fmt: skip
        raise click.BadParameter(message, param_hint="--resume") from None
    base["resume"] = str(state_path)
    checkpoint = o["out"] or state_path.with_name(
        state_path.name.removesuffix(".resume.pt") + ".safetensors"
    )
    if o["metrics"] is not None:
        metrics = o["metrics"]
    elif o["out"] is not None:  # a new place: its own metrics file, as for a new run
        metrics = checkpoint.with_name(checkpoint.stem + ".metrics.jsonl")
    else:
        metrics = _resumed_metrics(base, checkpoint)
    _check_distinct(checkpoint, metrics)
    if ctx.get_parameter_source("steps") == click.core.ParameterSource.COMMANDLINE:
        base["steps"] = o["steps"]
    elif done >= base["steps"]:
        raise click.BadParameter(
            f"the saved run has taken all its {done} steps; pass a larger total with --steps N "
            "--extend to train it further",
            param_hint="--steps",
        )
    if base["steps"] < done:
        raise click.BadParameter(
            f"the saved run has already taken {done} steps; pass a total >= {done}",
            param_hint="--steps",
        )
    return base, checkpoint, metrics


def _resumed_metrics(saved: dict[str, Any], checkpoint: Path) -> Path:
    """The metrics file of a resumed run: the saved run's file name beside the checkpoint
    when it was beside it (out_dir's metrics.jsonl), else NAME.metrics.jsonl."""
    from scoregen._run_files import run_paths

    saved_checkpoint, saved_metrics = run_paths(TrainConfig(**saved))
    if (
        saved_checkpoint is not None
        and saved_metrics is not None
        and saved_metrics.parent == saved_checkpoint.parent
    ):
        return checkpoint.with_name(saved_metrics.name)
    return checkpoint.with_name(checkpoint.stem + ".metrics.jsonl")


def _check_distinct(checkpoint: Path, metrics: Path) -> None:
    from scoregen.checkpoint import resume_path

    if metrics.resolve() == resume_path(checkpoint).resolve():
        raise click.BadParameter("is the checkpoint's resume state", param_hint="--metrics")


# the library's parameter names in its messages -> the options the user typed
_OPTION_OF = {"batch_size": "--batch-size", "steps": "--steps", "model_config": "--model-config",
              "resume": "--resume", "lr": "--lr", "sigma": "--sigma", "sigma_min": "--sigma-min",
              "sigma_max": "--sigma-max", "seed": "--seed", "log_every": "--log-every",
              "checkpoint_every": "--checkpoint-every"}  # fmt: skip


def _usage_error(error: Exception) -> click.ClickException:
    """A library ValueError as a usage error naming the option it is about."""
    from scoregen.checkpoint import CheckpointError

    message = str(error)
    if isinstance(error, CheckpointError):
        return click.BadParameter(message, param_hint="--resume")
    for name, option in sorted(_OPTION_OF.items(), key=lambda kv: -len(kv[0])):
        if message.startswith((f"{name} ", f"{name}=")):
            return click.BadParameter(message[len(name) :].lstrip(" ="), param_hint=option)
    return click.UsageError(message)


def _describe_sigma(sigma: dict[str, Any]) -> str:
    if "fixed" in sigma:
        return f"fixed at {fmt(sigma['fixed'])}"
    return f"{sigma.get('distribution', '')} on [{fmt(sigma['min'])}, {fmt(sigma['max'])}]"
