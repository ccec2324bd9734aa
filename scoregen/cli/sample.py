"""``scoregen sample``: parse → :func:`scoregen.sampling.plan_sampling` → run → print and save."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import click

from scoregen.cli._common import (
    CONTEXT,
    Count,
    Failure,
    Level,
    OutputFile,
    Outputs,
    device_option,
    fmt,
    load,
    note,
    seed_option,
    set_up_torch,
    threads_option,
)
from scoregen.config import MAX_STEPS, SAMPLERS

GIF_FRAMES = 30

SAMPLE_EPILOG = """\b
Examples:
  scoregen sample --ckpt builtin:ncsn2d-dae --steps 5000 --plot samples.png
  scoregen sample --ckpt builtin:ncsn2d --sampler langevin --sigma 0.5 --steps 2000
  scoregen sample --ckpt builtin:ring8 --sampler mala --sigma 0 --steps 500 --out x.npz
  scoregen sample --ckpt run/checkpoint.safetensors --sampler ode --steps 40 --gif path.gif

\b
Every default (sampler, steps, ladder, step sizes, start) is chosen by the library's
scoregen.sampling.plan_sampling; the summary prints the plan. In Python,
scoregen.sample(model, n, ...) draws exactly these samples.
"""


@click.command(epilog=SAMPLE_EPILOG, context_settings=CONTEXT)
@click.option("--ckpt", required=True, metavar="FILE|builtin:NAME", help="A checkpoint file or a builtin (scoregen builtins lists them).")  # fmt: skip
@click.option("--steps", type=Count(1, MAX_STEPS), default=None, help="Total sampler steps. annealed: split evenly across the --levels; pc: steps // 2 predictor+corrector pairs; ode: that many Heun steps. [default: annealed/langevin/mala 2000, pc 1000, ode 100]")  # fmt: skip
@click.option("--sampler", type=click.Choice(SAMPLERS), default=None, help="[default: annealed; langevin for a fixed-σ checkpoint] mala needs an exact log-density: builtin oracles only.")  # fmt: skip
@click.option("--num-samples", "-n", type=Count(), default=None, help="Number of samples. [default: 1000 for points, 64 for images]")  # fmt: skip
@click.option("--sigma", type=Level(allow_zero=True), default=None, help="langevin/mala: the level σ of p_σ to sample. [default: see docs/cli.md]")  # fmt: skip
@click.option("--step-size", type=Level(), default=None, help="langevin/mala: the step ε. [default: see docs/cli.md]")  # fmt: skip
@click.option("--sigma-max", type=Level(), default=None, help="annealed/pc/ode: top of the σ ladder. [default: the model's σ max]")  # fmt: skip
@click.option("--sigma-min", type=Level(), default=None, help="annealed/pc/ode: bottom of the σ ladder. [default: the model's σ min; pc and ode on a learned model: max(σ min, 0.05 σ_data)]")  # fmt: skip
@click.option("--levels", type=Count(minimum=2), default=None, help="annealed: number of geometric σ levels. [default: 10]")  # fmt: skip
@click.option("--step-lr", type=Level(), default=None, help="annealed: NCSN's rule α_i = step_lr·σ_i²/σ_min². [default: each level's step adapts to the curvature of p_σ]")  # fmt: skip
@click.option("--snr", type=Level(), default=None, help="pc: the corrector's signal-to-noise ratio. [default: 0.16; learned point models 0.075]")  # fmt: skip
@click.option("--temperature", type=Level(allow_zero=True), default=1.0, help="langevin/annealed: T in x + ε s + sqrt(2εT) z; 1 samples p_σ, 0.5 samples p_σ² (normalised).")  # fmt: skip
@click.option("--init", type=click.Choice(("noise", "uniform", "data", "exact")), default="noise", help="Start: noise = N(data mean, data covariance + σ_start² I); exact = draws of p_σ (mixture presets); uniform = a box of ±3 data std (images: the pixel range); data = held-out examples + noise.")  # fmt: skip
@click.option("--init-data", type=click.Path(exists=True, dir_okay=False), default=None, help="With --init data: the examples to start from (.pt, .npy or .npz with key 'samples'), in data space. [default: the checkpoint's held-out data]")  # fmt: skip
@click.option("--classifier", default=None, metavar="FILE|builtin:NAME", help="Images: the classifier whose features the Fréchet distance, KID and class coverage are measured in (a file written by python -m experiments.train_classifier). [default: the shipped one for the checkpoint's data (digits); for other data those numbers are not measured]")  # fmt: skip
@seed_option()
@device_option()
@click.option("--batch-size", type=Count(), default=None, help="Chains run at once. [default: all that fit in memory]")  # fmt: skip
@threads_option()
@click.option("--out", type=OutputFile((".pt", ".npy", ".npz")), default=None, help="Save the samples (data space) as .pt, .npy or .npz (key 'samples').")  # fmt: skip
@click.option("--plot", type=OutputFile((".png", ".pdf", ".svg")), default=None, help="Scatter over the density (2-D), histogram (1-D) or image grid.")  # fmt: skip
@click.option("--gif", type=OutputFile((".gif",)), default=None, help="Animated trajectory of the first chains (2-D points or images).")  # fmt: skip
@click.option("--compile", "compile_score", is_flag=True, help="Compile the score with torch.compile (σ a tensor input: one graph for the whole ladder; the first call compiles, eager if compiling fails). Pays off on long runs of large batches.")  # fmt: skip
@click.option("--progress/--no-progress", default=None, help="Show a progress bar. [default: on a terminal, for runs over 2 s]")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no notes and no summary.")
def sample(**options) -> None:
    """Draw samples from a checkpoint's score (or a builtin's) and compare them with the truth."""
    run_sample(**options)


_OPTION_OF = {
    "n": "--num-samples", "steps": "--steps", "sampler": "--sampler", "seed": "--seed",
    "sigma": "--sigma", "step_size": "--step-size", "sigma_max": "--sigma-max",
    "sigma_min": "--sigma-min", "levels": "--levels", "step_lr": "--step-lr", "snr": "--snr",
    "temperature": "--temperature", "init": "--init", "batch_size": "--batch-size",
}  # fmt: skip


def _plan(model, o):
    """The library's plan for these options; its ValueErrors become usage errors naming the
    option they are about."""
    from scoregen.sampling import plan_sampling

    library = {
        "sampler": o["sampler"], "steps": o["steps"], "seed": o["seed"], "sigma": o["sigma"],
        "step_size": o["step_size"], "sigma_max": o["sigma_max"], "sigma_min": o["sigma_min"],
        "levels": o["levels"], "step_lr": o["step_lr"], "snr": o["snr"],
        "temperature": o["temperature"], "init": o["init"], "batch_size": o["batch_size"],
    }  # fmt: skip
    try:
        return plan_sampling(model, o["num_samples"], **library)
    except ValueError as e:
        # the library names its parameters (steps=5 ...); the user typed options (--steps)
        message = str(e)
        for name, option in sorted(_OPTION_OF.items(), key=lambda kv: -len(kv[0])):
            if message.startswith((f"{name} ", f"{name}=")):
                message = option + message[len(name) :]
                break
        raise click.UsageError(message) from None


def _read_examples(path: str):
    """Examples from a .pt (a tensor), .npy or .npz (key 'samples') file, loaded safely."""
    import numpy as np
    import torch

    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".pt":
            with warnings.catch_warnings():  # torch warns about pickle protocols, then refuses
                warnings.simplefilter("ignore")
                value = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".npy":
            value = torch.from_numpy(np.load(path, allow_pickle=False))
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if "samples" not in archive:
                    raise ValueError(f"it has no array 'samples' (it has {sorted(archive)})")
                value = torch.from_numpy(archive["samples"])
        else:
            raise ValueError("it must be a .pt, .npy or .npz file")
    except (ValueError, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        reason = " ".join(str(e).split())
        if isinstance(e, pickle.UnpicklingError):  # torch's long weights_only explanation
            reason = "it holds objects other than tensors, which are never unpickled"
        raise click.BadParameter(
            f"cannot read {path!r}: {reason}", param_hint="--init-data"
        ) from None
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() and value.dtype not in (torch.uint8, torch.int64, torch.int32):  # fmt: skip
        raise click.BadParameter(f"{path!r} must hold one numeric array", param_hint="--init-data")
    return value.float()


def _read_classifier(spec: str, plan):
    """The ``--classifier`` for ``plan``, loaded (safetensors only) and checked by the
    library; its errors become usage errors naming the option."""
    from scoregen.sampling.report import check_classifier

    try:
        return check_classifier(spec, plan)
    except (ValueError, OSError) as e:
        message = " ".join(str(e).split()).removeprefix("classifier ")
        raise click.BadParameter(message[:300], param_hint="--classifier") from None


def run_sample(**o) -> None:
    import torch

    from scoregen import plot
    from scoregen.samplers import TrajectoryRecorder
    from scoregen.sampling import report_samples, run_plan

    device = set_up_torch(o["device"], o["threads"])
    model = load(o["ckpt"], device)
    plan = _plan(model, o)
    shape = plan.shape
    if o["plot"] is not None and not (plan.is_image or shape in ((1,), (2,))):
        raise click.BadParameter(
            f"plots 1-D points, 2-D points or images; the data has shape {list(shape)}",
            param_hint="--plot",
        )
    if o["gif"] is not None and not (plan.is_image or shape == (2,)):
        raise click.BadParameter(
            f"animates 2-D points or images; the data has shape {list(shape)}", param_hint="--gif"
        )
    classifier = _read_classifier(o["classifier"], plan) if o["classifier"] is not None else None
    examples = None
    if o["init_data"] is not None:
        if plan.init != "data":
            raise click.BadParameter("needs --init data", param_hint="--init-data")
        examples = _read_examples(o["init_data"])
        if tuple(examples.shape[1:]) != shape:
            raise click.BadParameter(
                f"holds examples of shape {list(examples.shape[1:])}, the model's are {list(shape)}",
                param_hint="--init-data",
            )
        examples = model.from_data_space(examples)
    elif plan.init == "data":
        from scoregen.sampling import held_out_examples

        try:
            examples = held_out_examples(model)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--init") from None
    if not o["quiet"]:
        for remark in plan.notes:
            note(remark)

    recorder = None
    callback = None
    if o["gif"] is not None:
        keep = 16 if plan.is_image else 500
        recorder = TrajectoryRecorder(every=max(1, plan.total_steps // GIF_FRAMES), max_chains=keep)

        def callback(info):
            if info["batch"] == 0:  # the first batch's chains only
                recorder(info)

    progress = False if o["quiet"] else o["progress"]
    try:
        run = run_plan(model, plan, examples=examples, callback=callback, progress=progress,
                       compile=o["compile_score"])  # fmt: skip
    except (ValueError, RuntimeError) as e:  # RuntimeError: torch refusing a value mid-run
        raise Failure(" ".join(str(e).split())[:400]) from None
    data_space = model.to_data_space(run.samples).cpu()
    target = None
    if model.oracle is not None:
        oracle = model.oracle.to(device="cpu")
        target = oracle.blurred(plan.target_sigma) if plan.target_sigma > 0 else oracle

    outputs = Outputs()
    try:
        if o["out"] is not None:
            outputs.write(o["out"], lambda path: _save_array(data_space, path))
        if o["plot"] is not None:
            title = f"{model.name}: {plan.sampler}, {plan.n} samples"
            if plan.is_image:
                fig = plot.image_grid(data_space[:64], nrow=8, title=title)
            elif shape == (2,):
                fig = plot.scatter_samples(data_space, target, title=title)
            else:
                name = "exact density" if plan.target_sigma == 0 else f"exact p_σ, σ={plan.target_sigma:.3g}"  # fmt: skip
                densities = {name: target} if target is not None else None
                fig = plot.histogram_1d(data_space, densities, title=title)
            outputs.write(o["plot"], lambda path: plot.save_figure(fig, path))
        if recorder is not None:
            outputs.write(o["gif"], lambda path: _write_gif(model, plan, recorder, target, path))
    except BaseException:
        outputs.rollback()
        raise
    if o["quiet"]:
        return
    threads = torch.get_num_threads()
    where = device + (f", {threads} thread{'s' if threads > 1 else ''}" if device == "cpu" else "")
    lines = [
        f"Drew {plan.n} samples from {model.name} with {plan.describe()} in {run.seconds:.1f} s "
        f"on {where} (seed {plan.seed}; start: {plan.describe_start()})."
    ]
    if run.acceptance_rate is not None:
        lines[0] = lines[0][:-1] + f"; MALA acceptance rate {run.acceptance_rate:.2f}."
    if run.compile_seconds is not None:
        lines[0] = lines[0][:-1] + f"; compiling the score took {run.compile_seconds:.1f} s of it."
    elif run.compile_fallback is not None:
        lines[0] = lines[0][:-1] + f"; torch.compile failed, ran eagerly ({run.compile_fallback})."
    report = report_samples(data_space, model, plan, seed=plan.seed, classifier=classifier)
    if report is not None:
        lines.append(str(report))
    written = [str(p) for p in outputs.written]
    lines.append(
        f"Wrote {', '.join(written)}." if written else "Wrote no files (see --out, --plot, --gif)."
    )
    click.echo("\n".join(lines))


def _write_gif(model, plan, recorder, target, path: Path) -> None:
    from scoregen import plot

    frames = [model.to_data_space(x) for x in recorder.xs]
    labels = [
        f"step {step + 1}, σ={fmt(_as_float(sigma))}"
        for step, sigma in zip(recorder.steps, recorder.sigmas)
    ]
    # frame the samples, not the wide starting cloud (early frames run off the edges)
    bounds = None if plan.is_image else 1.2 * float(frames[-1].abs().max())
    plot.trajectory_gif(
        frames,
        path,
        labels=labels,
        bounds=bounds,
        mixture=target if not plan.is_image else None,
    )


def _as_float(value) -> float:
    if value is None:
        return float("nan")
    if hasattr(value, "numel"):
        return float(value.flatten()[0]) if value.numel() else float("nan")
    return float(value)


def _save_array(samples, path: Path) -> None:
    import numpy as np
    import torch

    from scoregen._io import atomic_write

    suffix = path.suffix.lower()
    if suffix == ".pt":
        atomic_write(path, lambda f: torch.save(samples.clone(), f))
    elif suffix == ".npy":
        atomic_write(path, lambda f: np.save(f, samples.numpy()))
    else:
        atomic_write(path, lambda f: np.savez(f, samples=samples.numpy()))
