"""The ``scoregen`` command: a thin layer over the library (parse, check, call, print).

Every error ends as one line on stderr, ``scoregen CMD: error: WHAT``, with exit status 2
for a usage error (a bad option value, a missing or unreadable input, an unusable
combination) and 1 for a failure while running (a diverging sampler, a write that failed).
Outputs are written only once everything they depend on has been computed, each atomically;
when a later write fails, the files this run already wrote are removed again.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from scoregen import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100}
SAMPLERS = ("langevin", "annealed", "mala", "pc", "ode")
# annealed: every level steps α_i = step_lr σ_i²/σ_min²; this default makes α_i = 0.1 σ_i², a
# tenth of the smallest variance of p_σ at that level (σ²), stable for any data.
RELATIVE_STEP = 0.1
TOY_SAMPLES, IMAGE_SAMPLES = 1000, 64
GIF_FRAMES = 30
THREADS_HELP = "torch CPU threads (toy-sized models run fastest on one)."


# ---------------------------------------------------------------------- errors: one line
def _hint(error: click.ClickException) -> str | None:
    """The option or argument an error is about, as the user typed it (``--steps``)."""
    hint = getattr(error, "param_hint", None)
    if isinstance(hint, (list, tuple)):
        hint = hint[0] if hint else None
    if hint:
        return str(hint).strip("'\"")
    param = getattr(error, "param", None)
    if param is None:
        return None
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.human_readable_name


def error_line(error: click.ClickException) -> str:
    """``scoregen CMD: error: [--option: ]message`` on one line."""
    ctx = getattr(error, "ctx", None) or getattr(error, "command_ctx", None)
    where = ctx.command_path if ctx is not None else "scoregen"
    if isinstance(error, click.MissingParameter):
        message = f"{_hint(error)}: required, not given"
    elif isinstance(error, click.BadParameter) and _hint(error):
        message = f"{_hint(error)}: {error.message}"
    else:
        message = error.format_message()
    return f"{where}: error: {' '.join(str(message).split())}"


class Failure(click.ClickException):
    """Something went wrong while running (exit status 1), as opposed to a usage error."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.command_ctx = click.get_current_context(silent=True)


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class Group(click.Group):
    """A click group whose errors are one line on stderr (no usage block, no traceback)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        import torch

        from scoregen.samplers import SamplerDivergence

        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:  # bare `scoregen`: the help, as click < 8.2 showed it
            click.echo(e.format_message())
            sys.exit(0)
        except click.ClickException as e:
            click.echo(error_line(e), err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("scoregen: interrupted", err=True)
            sys.exit(1)
        except (
            SamplerDivergence,
            OSError,
            FloatingPointError,
            MemoryError,
            torch.cuda.OutOfMemoryError,
        ) as e:
            argv = sys.argv[1:] if args is None else list(args)
            command = next((a for a in argv if a in self.commands), None)
            where = " ".join(filter(None, [prog_name or self.name, command]))
            click.echo(f"{where}: error: {' '.join(str(e).split())}", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# ---------------------------------------------------------------------- parameter types
class Count(click.ParamType):
    """An integer >= ``minimum``."""

    name = "integer"

    def __init__(self, minimum: int = 1):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"must be an integer >= {self.minimum}, got {value!r}", param, ctx)
        if number < self.minimum:
            self.fail(f"must be >= {self.minimum}, got {number}", param, ctx)
        return number


class Level(click.ParamType):
    """A finite float > 0 (or >= 0 with ``allow_zero``)."""

    name = "float"

    def __init__(self, allow_zero: bool = False):
        self.allow_zero = allow_zero

    def convert(self, value, param, ctx):
        allowed = ">= 0" if self.allow_zero else "> 0"
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"must be a number {allowed}, got {value!r}", param, ctx)
        if not math.isfinite(number) or number < 0 or (number == 0 and not self.allow_zero):
            self.fail(f"must be finite and {allowed}, got {value}", param, ctx)
        return number


class OutputFile(click.ParamType):
    """A file to write: its folder must exist and its suffix be one of ``suffixes``."""

    name = "file"

    def __init__(self, suffixes: tuple[str, ...]):
        self.suffixes = suffixes

    def convert(self, value, param, ctx):
        path = Path(value)
        if path.suffix.lower() not in self.suffixes:
            self.fail(f"must end in {' or '.join(self.suffixes)}, got {str(path)!r}", param, ctx)
        if path.is_dir():
            self.fail(f"{str(path)!r} is a folder, not a file", param, ctx)
        folder = path.parent
        if not folder.is_dir():
            self.fail(f"the folder {str(folder)!r} does not exist", param, ctx)
        return path


def _output_dir(value: str | None, option: str) -> Path | None:
    """An output folder: created if missing, but its parent must exist."""
    if value is None:
        return None
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{str(path)!r} exists and is not a folder", param_hint=option)
    if not path.exists() and not path.resolve().parent.is_dir():
        raise click.BadParameter(
            f"the folder {str(path.resolve().parent)!r} does not exist", param_hint=option
        )
    return path


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter(
            "cuda, but CUDA is not available here (torch sees no GPU); use cpu or auto",
            param_hint="--device",
        )
    return choice


def _key_values(values: tuple[str, ...], option: str) -> dict[str, Any]:
    """``key=value`` pairs (values read as JSON when they parse, else strings) or JSON objects."""
    out: dict[str, Any] = {}
    for text in values:
        if text.lstrip().startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as e:
                raise click.BadParameter(
                    f"not valid JSON ({e}): {text!r}", param_hint=option
                ) from None
            if not isinstance(parsed, dict):
                raise click.BadParameter(f"must be a JSON object, got {text!r}", param_hint=option)
            out.update(parsed)
            continue
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"expected key=value or a JSON object, got {text!r}", param_hint=option
            )
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _load(spec: str, device: str, option: str = "--ckpt"):
    """The :class:`scoregen.builtins.ScoreModel` behind ``--ckpt``; usage error if unusable."""
    from scoregen.builtins import PREFIX, UnknownBuiltinError, load_score_model
    from scoregen.checkpoint import CheckpointError

    if not spec.startswith(PREFIX):
        path = Path(spec)
        if not path.exists():
            raise click.BadParameter(f"file {spec!r} does not exist", param_hint=option)
        if path.is_dir():
            raise click.BadParameter(f"{spec!r} is a folder, not a file", param_hint=option)
    try:
        return load_score_model(spec, device)
    except (UnknownBuiltinError, CheckpointError) as e:
        raise click.BadParameter(str(e), param_hint=option) from None
    except PermissionError as e:
        raise click.BadParameter(f"cannot read {spec!r}: {e.strerror}", param_hint=option) from None


class Outputs:
    """Files written by one command; :meth:`rollback` removes them when a later step fails."""

    def __init__(self):
        self.written: list[Path] = []

    def write(self, path: Path, write: Callable[[Path], Any]) -> None:
        write(path)
        self.written.append(path)

    def rollback(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written.clear()


def _fmt(value: float) -> str:
    return f"{value:.4g}"


# ---------------------------------------------------------------------- the group
@click.group(name="scoregen", cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="scoregen")
def cli() -> None:
    """Score-based generative sampling: denoisers, Tweedie scores, Langevin samplers.

    \b
    Start with an exact mixture or a small trained denoiser shipped with the package:
      scoregen sample --ckpt builtin:ncsn2d-dae --steps 5000 --plot samples.png
      scoregen info builtin:digits-dae
    Run `scoregen COMMAND --help` for the options of a command.
    """


# ---------------------------------------------------------------------- sample
SAMPLE_EPILOG = """\b
Examples:
  scoregen sample --ckpt builtin:ncsn2d-dae --steps 5000 --plot samples.png
  scoregen sample --ckpt builtin:ncsn2d --sampler langevin --sigma 0.5 --steps 2000
  scoregen sample --ckpt builtin:ring8 --sampler mala --sigma 0 --steps 500 --out x.npz
  scoregen sample --ckpt run/checkpoint.safetensors --sampler ode --steps 40 --gif path.gif

\b
Builtins: builtin:ncsn2d, builtin:ring8, builtin:bimodal1d, builtin:grid25 (exact
scores of mixtures), builtin:ncsn2d-dae, builtin:digits-dae (trained denoisers).
"""


@cli.command(epilog=SAMPLE_EPILOG, context_settings=CONTEXT)
@click.option(
    "--ckpt", required=True, metavar="FILE|builtin:NAME", help="A checkpoint file or a builtin."
)
@click.option(
    "--steps",
    type=Count(),
    default=2000,
    help="Total sampler steps. annealed: split evenly across the --levels (steps // levels "
    "each); pc: steps // 2 predictor+corrector pairs; ode: that many Heun steps. "
    "annealed, pc and ode end with one extra Tweedie denoising step.",
)
@click.option(
    "--sampler",
    type=click.Choice(SAMPLERS),
    default=None,
    help="Default: annealed for a σ-conditioned model or a builtin oracle, langevin for a "
    "fixed-σ checkpoint. mala needs an exact log-density: builtin oracles only.",
)
@click.option(
    "--num-samples",
    type=Count(),
    default=None,
    help=f"Number of samples. [default: {TOY_SAMPLES} for points, {IMAGE_SAMPLES} for images]",
)
@click.option(
    "--sigma",
    type=Level(allow_zero=True),
    default=None,
    help="langevin/mala: the noise level σ of p_σ to sample. [default: the checkpoint's "
    "fixed σ, else the low end of its σ range; 0 is allowed for builtin oracles]",
)
@click.option(
    "--step-size",
    type=Level(),
    default=None,
    help="langevin/mala: the step ε. [default: 0.1·(σ² + smallest component variance) for "
    "oracles, 0.1·σ² otherwise]",
)
@click.option("--sigma-max", type=Level(), default=None, help="annealed/pc/ode: top of the σ ladder. [default: the checkpoint's σ max]")  # fmt: skip
@click.option("--sigma-min", type=Level(), default=None, help="annealed/pc/ode: bottom of the σ ladder. [default: the checkpoint's σ min]")  # fmt: skip
@click.option("--levels", type=Count(), default=10, help="annealed: number of geometric σ levels.")
@click.option(
    "--step-lr",
    type=Level(),
    default=None,
    help="annealed: level i steps α_i = step_lr·σ_i²/σ_min². [default: 0.1·σ_min², so "
    "α_i = 0.1·σ_i²]",
)
@click.option(
    "--temperature",
    type=Level(allow_zero=True),
    default=1.0,
    help="langevin/annealed: T in x + ε s + sqrt(2εT) z; 1 samples p_σ, 0.5 samples p_σ² (normalised).",
)
@click.option(
    "--init",
    type=click.Choice(("noise", "uniform", "data")),
    default="noise",
    help="Start: N(0, s²) with s = σ_max (annealed/pc/ode) or sqrt(σ_data² + σ²) "
    "(langevin/mala); a uniform box of ±3 σ_data (images: the pixel range); or test data + "
    "that noise.",
)
@click.option("--seed", type=Count(minimum=0), default=0, help="Random seed.")
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", help="Where to run.")  # fmt: skip
@click.option("--batch-size", type=Count(), default=None, help="Chains run at once. [default: all]")
@click.option("--threads", type=Count(), default=1, help=THREADS_HELP)
@click.option("--out", type=OutputFile((".pt", ".npy", ".npz")), default=None, help="Save the samples (data space) as .pt, .npy or .npz (key 'samples').")  # fmt: skip
@click.option("--plot", type=OutputFile((".png", ".pdf", ".svg")), default=None, help="Scatter over the density (2-D), histogram (1-D) or image grid.")  # fmt: skip
@click.option("--gif", type=OutputFile((".gif",)), default=None, help="Animated trajectory of the first chains (2-D points or images).")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def sample(**options) -> None:
    """Draw samples from a checkpoint's score (or a builtin's) and summarise them."""
    run_sample(**options)


def _check_sample_options(model, o: dict[str, Any]) -> dict[str, Any]:
    """Resolve defaults and reject combinations that cannot work; returns the plan."""
    from scoregen.builtins import PREFIX, list_builtins

    fixed, trained_range = model.fixed_sigma, model.sigma_range
    sampler = o["sampler"] or ("langevin" if fixed is not None else "annealed")
    shape = model.shape
    is_image = len(shape) == 3
    plan: dict[str, Any] = {"sampler": sampler, "shape": shape, "is_image": is_image}

    if sampler == "mala" and not model.exact:
        oracles = ", ".join(PREFIX + n for n in list_builtins() if not n.endswith("-dae"))
        raise click.BadParameter(
            f"mala needs an exact log-density, which {model.name} does not have; it is "
            f"available for the builtin oracles ({oracles}); use langevin or annealed",
            param_hint="--sampler",
        )
    if fixed is not None and sampler != "langevin":
        raise click.BadParameter(
            f"{sampler} walks down a σ ladder, but {model.name} was trained at the single "
            f"level σ={fixed:g}; use langevin",
            param_hint="--sampler",
        )
    if o["temperature"] != 1.0 and sampler not in ("langevin", "annealed"):
        raise click.BadParameter(
            f"applies to langevin and annealed only, not {sampler}", param_hint="--temperature"
        )
    if o["plot"] is not None and not (is_image or shape in ((1,), (2,))):
        raise click.BadParameter(
            f"plots 1-D points, 2-D points or images; the data has shape {list(shape)}",
            param_hint="--plot",
        )
    if o["gif"] is not None and not (is_image or shape == (2,)):
        raise click.BadParameter(
            f"animates 2-D points or images; the data has shape {list(shape)}",
            param_hint="--gif",
        )

    def in_range(value: float, option: str) -> float:
        if trained_range is not None and not model.exact:
            low, high = trained_range
            if not low * (1 - 1e-6) <= value <= high * (1 + 1e-6):
                raise click.BadParameter(
                    f"{value:g} is outside the σ range {model.name} was trained on "
                    f"[{low:g}, {high:g}]",
                    param_hint=option,
                )
        return value

    if sampler in ("langevin", "mala"):
        sigma = o["sigma"]
        if fixed is not None:
            if sigma is not None and abs(sigma - fixed) > 1e-4 * fixed:
                raise click.BadParameter(
                    f"{model.name} was trained at the single level σ={fixed:g}; got {sigma:g}",
                    param_hint="--sigma",
                )
            sigma = fixed
        elif sigma is None:
            sigma = trained_range[0]
        if sigma == 0 and not model.exact:
            raise click.BadParameter(
                "must be > 0 for a learned denoiser (its score (D − x)/σ² needs σ > 0)",
                param_hint="--sigma",
            )
        plan["sigma"] = in_range(sigma, "--sigma")
        step = o["step_size"]
        if step is None:
            floor = model.oracle.eigvals.min().item() if model.exact else 0.0
            step = RELATIVE_STEP * (sigma**2 + floor)
        plan["step_size"] = step
        plan["init_scale"] = math.sqrt(model.sigma_data**2 + sigma**2)
        plan["n_steps"] = o["steps"]
    else:
        for name in ("sigma", "step_size"):
            if o[name] is not None:
                option = "--" + name.replace("_", "-")
                raise click.BadParameter(
                    f"applies to langevin and mala; {sampler} uses --sigma-max/--sigma-min",
                    param_hint=option,
                )
        low, high = trained_range
        sigma_max = in_range(o["sigma_max"] if o["sigma_max"] is not None else high, "--sigma-max")
        sigma_min = in_range(o["sigma_min"] if o["sigma_min"] is not None else low, "--sigma-min")
        if sigma_min >= sigma_max:
            raise click.BadParameter(
                f"must be below --sigma-max={sigma_max:g}, got {sigma_min:g}",
                param_hint="--sigma-min",
            )
        plan.update(sigma_max=sigma_max, sigma_min=sigma_min, init_scale=sigma_max)
        steps = o["steps"]
        if sampler == "annealed":
            if steps < o["levels"]:
                raise click.BadParameter(
                    f"annealed splits the steps across --levels={o['levels']} levels, so it "
                    f"needs at least {o['levels']}, got {steps}",
                    param_hint="--steps",
                )
            plan["levels"] = o["levels"]
            plan["n_steps_each"] = steps // o["levels"]
            plan["step_lr"] = o["step_lr"] or RELATIVE_STEP * sigma_min**2
        elif sampler == "pc":
            if steps < 2:
                raise click.BadParameter(
                    f"pc needs at least 2 (one predictor and one corrector step), got {steps}",
                    param_hint="--steps",
                )
            plan["levels"] = steps // 2 + 1
        else:
            if steps < 2:
                raise click.BadParameter(
                    f"ode needs at least 2 (a ladder of 3 levels), got {steps}",
                    param_hint="--steps",
                )
            plan["levels"] = steps + 1
    if o["step_lr"] is not None and sampler != "annealed":
        raise click.BadParameter(f"applies to annealed only, not {sampler}", param_hint="--step-lr")
    plan["n"] = o["num_samples"] or (IMAGE_SAMPLES if is_image else TOY_SAMPLES)
    return plan


def _initial_batch(model, plan, init: str, n: int, generator, device):
    import torch

    from scoregen.samplers import init_from_data, init_noise, init_uniform

    shape = (n, *plan["shape"])
    scale = plan["init_scale"]
    if init == "noise":
        return init_noise(shape, scale, generator=generator, device=device)
    if init == "uniform":
        data = model.data
        if data.get("value_range") is not None:
            norm = data.get("normalization") or {}
            low, high = (
                (v - norm.get("shift", 0.0)) / norm.get("scale", 1.0) for v in data["value_range"]
            )
        else:
            low, high = -3.0 * model.sigma_data, 3.0 * model.sigma_data
        return init_uniform(shape, low, high, generator=generator, device=device)
    examples = plan["test_data"].to(device)
    return init_from_data(examples, scale, n=n, generator=generator).to(torch.float32)


def _test_data(model):
    """The held-out examples of the checkpoint's data set (model space), for ``--init data``."""
    from scoregen.data import DATASETS, dataset_options, load_dataset

    record = model.data
    name = record.get("name")
    if name not in DATASETS:
        raise Failure(f"--init data: the checkpoint's data {name!r} is not a known data set")
    allowed = dataset_options(name)
    options = {k: v for k, v in record.items() if k in allowed and k not in ("n_test",)}
    try:
        dataset = load_dataset(name, **options)
    except (ValueError, OSError) as e:
        raise Failure(f"--init data: cannot load the data set {name!r}: {e}") from None
    examples = dataset.test if dataset.test is not None else dataset.train
    if examples is None:
        raise Failure(f"--init data: the data set {name!r} has no examples to start from")
    return examples.float()


def _run_chains(model, plan, x0, generator, callback, progress):
    from scoregen.samplers import (
        annealed_langevin,
        geometric_sigmas,
        karras_sigmas,
        langevin,
        mala,
        predictor_corrector,
        probability_flow,
    )

    sampler = plan["sampler"]
    common = {"callback": callback, "progress": progress}
    if sampler == "langevin":
        return langevin(model.score, x0, sigma=plan["sigma"], step_size=plan["step_size"],
                        n_steps=plan["n_steps"], temperature=plan["temperature"],
                        generator=generator, **common)  # fmt: skip
    if sampler == "mala":
        x, stats = mala(model.log_prob, x0, sigma=plan["sigma"], step_size=plan["step_size"],
                        n_steps=plan["n_steps"], score=model.score, return_stats=True,
                        generator=generator, **common)  # fmt: skip
        plan.setdefault("accepted", []).append(stats.acceptance_rate * x0.shape[0])
        return x
    if sampler == "annealed":
        sigmas = geometric_sigmas(plan["sigma_max"], plan["sigma_min"], plan["levels"])
        return annealed_langevin(model.score, x0, sigmas, n_steps_each=plan["n_steps_each"],
                                 step_lr=plan["step_lr"], temperature=plan["temperature"],
                                 generator=generator, **common)  # fmt: skip
    if sampler == "pc":
        sigmas = geometric_sigmas(plan["sigma_max"], plan["sigma_min"], plan["levels"])
        return predictor_corrector(model.score, x0, sigmas, generator=generator, **common)
    sigmas = karras_sigmas(plan["sigma_max"], plan["sigma_min"], plan["levels"])
    return probability_flow(model.score, x0, sigmas, **common)


def _describe_run(plan) -> str:
    sampler = plan["sampler"]
    if sampler in ("langevin", "mala"):
        name = "Langevin (ULA)" if sampler == "langevin" else "MALA"
        text = (
            f"{name} at σ={_fmt(plan['sigma'])}, step {_fmt(plan['step_size'])}, "
            f"{plan['n_steps']} steps"
        )
        if sampler == "langevin" and plan["temperature"] != 1.0:
            text += f", temperature {_fmt(plan['temperature'])}"
        if "accepted" in plan:
            text += f", acceptance rate {sum(plan['accepted']) / plan['n']:.2f}"
        return text
    ladder = f"σ {_fmt(plan['sigma_max'])} → {_fmt(plan['sigma_min'])}"
    if sampler == "annealed":
        text = (
            f"annealed Langevin over {plan['levels']} geometric levels ({ladder}), "
            f"{plan['n_steps_each']} steps each, step_lr {_fmt(plan['step_lr'])}"
        )
        if plan["temperature"] != 1.0:
            text += f", temperature {_fmt(plan['temperature'])}"
        return text + ", then one Tweedie denoising step"
    if sampler == "pc":
        return (
            f"predictor–corrector over {plan['levels']} geometric levels ({ladder}), "
            f"{plan['levels'] - 1} predictor + corrector pairs, then one Tweedie denoising step"
        )
    return (
        f"probability-flow ODE (Heun) over {plan['levels']} Karras levels ({ladder}), "
        f"{plan['levels'] - 1} steps, then one Tweedie denoising step"
    )


def _oracle_report(samples, oracle, seed: int) -> str:
    """Mode weights against the true ones, and the sliced Wasserstein distance to a large exact
    sample, next to the mean distance of exact sample sets of the same size (its noise level)."""
    import torch

    from scoregen.metrics import mode_weights, sliced_wasserstein

    n = samples.shape[0]
    flat = samples.reshape(n, -1).double().cpu()
    oracle = oracle.to(device="cpu")
    weights = mode_weights(flat, oracle)
    true = oracle.weights
    stderr = math.sqrt(max(w * (1 - w) for w in true.tolist()) / n)
    generator = torch.Generator().manual_seed(seed + 1)
    n_reference = max(10 * n, 10_000)
    reference = oracle.sample(n_reference, generator=generator)

    def distance(x):  # the same projections for every set
        projections = torch.Generator().manual_seed(seed + 2)
        return sliced_wasserstein(x, reference, generator=projections).item()

    floor = sum(distance(oracle.sample(n, generator=generator)) for _ in range(5)) / 5
    shown = 8
    listed = ", ".join(f"{w:.3f}" for w in weights.tolist()[:shown])
    listed_true = ", ".join(f"{w:.3f}" for w in true.tolist()[:shown])
    more = " ..." if oracle.n_components > shown else ""
    return (
        f"Mode weights [{listed}{more}] vs true [{listed_true}{more}] (standard error about "
        f"{stderr:.3f} with {n} samples); sliced Wasserstein distance to {n_reference} exact "
        f"samples {distance(flat):.3f} (exact sets of {n} samples: {floor:.3f} on average)."
    )


def run_sample(**o) -> None:
    import torch

    from scoregen import plot
    from scoregen.data import to_data_space
    from scoregen.samplers import TrajectoryRecorder

    device = _device(o["device"])
    torch.set_num_threads(o["threads"])
    model = _load(o["ckpt"], device)
    plan = _check_sample_options(model, o)
    plan["temperature"] = o["temperature"]
    n = plan["n"]
    if o["init"] == "data":
        plan["test_data"] = _test_data(model)
    batch = o["batch_size"] or n
    progress = False if o["quiet"] else None
    generator = torch.Generator(device).manual_seed(o["seed"])
    recorder = None
    chunks = []
    start = time.perf_counter()
    for first in range(0, n, batch):
        x0 = _initial_batch(model, plan, o["init"], min(batch, n - first), generator, device)
        callback = None
        if o["gif"] is not None and first == 0:
            total = plan.get("n_steps") or plan.get("n_steps_each", 1) * plan.get("levels", 1)
            keep = 16 if plan["is_image"] else 500
            recorder = TrajectoryRecorder(every=max(1, total // GIF_FRAMES), max_chains=keep, x0=x0)
            callback = recorder
        chunks.append(_run_chains(model, plan, x0, generator, callback, progress))
    samples = torch.cat(chunks)
    seconds = time.perf_counter() - start

    record = model.data
    clip = record.get("value_range") is not None
    data_space = to_data_space(samples, record, clip=clip).cpu()
    oracle = model.oracle
    outputs = Outputs()
    try:
        if o["out"] is not None:
            outputs.write(o["out"], lambda path: _save_array(data_space, path))
        if o["plot"] is not None:
            title = f"{model.name}: {plan['sampler']}, {n} samples"
            if plan["is_image"]:
                fig = plot.image_grid(data_space[:64], nrow=8, title=title)
            elif plan["shape"] == (2,):
                fig = plot.scatter_samples(data_space, oracle, title=title)
            else:
                densities = {"exact density": oracle} if oracle is not None else None
                fig = plot.histogram_1d(data_space, densities, title=title)
            outputs.write(o["plot"], lambda path: plot.save_figure(fig, path))
        if recorder is not None:
            frames = [to_data_space(x, record, clip=clip) for x in recorder.xs]
            labels = [
                "start" if step < 0 else f"step {step + 1}, σ={_fmt(_as_float(sigma))}"
                for step, sigma in zip(recorder.steps, recorder.sigmas)
            ]
            # frame the samples, not the wide starting cloud (early frames run off the edges)
            bounds = None if plan["is_image"] else 1.2 * float(frames[-1].abs().max())
            outputs.write(
                o["gif"],
                lambda path: plot.trajectory_gif(
                    frames,
                    path,
                    labels=labels,
                    bounds=bounds,
                    mixture=oracle if not plan["is_image"] else None,
                ),
            )
    except BaseException:
        outputs.rollback()
        raise
    if o["quiet"]:
        return
    parts = [
        f"Drew {n} samples from {model.name} with {_describe_run(plan)} in {seconds:.1f} s on "
        f"{device} (seed {o['seed']}, init {o['init']})."
    ]
    if oracle is not None:
        parts.append(_oracle_report(data_space, oracle, o["seed"]))
    written = [str(p) for p in outputs.written]
    parts.append(
        f"Wrote {', '.join(written)}." if written else "Wrote no files (see --out, --plot, --gif)."
    )
    click.echo(" ".join(parts))


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


# ---------------------------------------------------------------------- info
@cli.command(
    context_settings=CONTEXT,
    epilog="\b\nExamples:\n  scoregen info builtin:ncsn2d-dae\n  scoregen info run/checkpoint.safetensors --json",
)
@click.argument("ckpt", metavar="CKPT")
@click.option("--json", "as_json", is_flag=True, help="Print the whole JSON record instead.")
def info(ckpt: str, as_json: bool) -> None:
    """What a checkpoint (or builtin:NAME) holds: model, parameters, data, σ, training."""
    from scoregen.models import count_parameters

    model = _load(ckpt, "cpu", option="CKPT")
    record = model.metadata
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    lines = [f"{model.name}" + (f": {model.description}" if model.description else "")]
    if model.path is not None:
        lines.append(f"  file        {model.path} ({model.path.stat().st_size / 1024:.0f} KB)")
    spec = record.get("model", {})
    if model.exact:
        mixture = model.oracle
        lines.append(
            f"  model       exact Gaussian mixture, {mixture.n_components} components in "
            f"d={mixture.dim} (weights {', '.join(f'{w:.3g}' for w in mixture.weights.tolist()[:8])}"
            f"{' ...' if mixture.n_components > 8 else ''})"
        )
    else:
        n_params = count_parameters(model.denoiser)
        net = spec.get("net", {})
        config = ", ".join(f"{k}={v}" for k, v in net.items() if k != "shape")
        lines.append(f"  model       {spec.get('family')} ({config})")
        lines.append(f"  parameters  {n_params:,}")
        lines.append(
            f"  precond     {spec.get('precond')}, σ_data={_fmt(spec.get('sigma_data', float('nan')))}"
        )
    data = model.data
    norm = data.get("normalization") or {}
    lines.append(
        f"  data        {data.get('name')} ({data.get('kind', '?')}), example shape "
        f"{data.get('shape')}, data = x·{_fmt(norm.get('scale', 1.0))} + "
        f"{_fmt(norm.get('shift', 0.0))}"
        + (f", values in {data['value_range']}" if data.get("value_range") else "")
    )
    if model.fixed_sigma is not None:
        lines.append(f"  σ           fixed at {_fmt(model.fixed_sigma)} (sample with langevin)")
    else:
        low, high = model.sigma_range
        kind = "exact at every σ; default ladder" if model.exact else "trained on"
        dist = model.sigma.get("distribution")
        lines.append(
            f"  σ           {kind} [{_fmt(low)}, {_fmt(high)}]" + (f" ({dist})" if dist else "")
        )
    training = record.get("training") or {}
    if training:
        loss = training.get("final_loss")
        world = training.get("world_size", 1)  # data-parallel processes
        where = training.get("device")
        if world > 1:
            where = f"{world} processes ({where} on rank 0)"
        lines.append(
            f"  training    {training.get('steps')} steps, objective {training.get('objective')}, "
            f"seed {training.get('seed')}, final loss {_fmt(loss) if loss is not None else '?'}, "
            f"{training.get('wall_time_s', 0):.0f} s on {where}"
        )
        config = training.get("config") or {}
        if config:
            batch = config.get("batch_size")
            if world > 1:
                batch = f"{batch} per process × {world} = {training.get('global_batch_size')}"
            lines.append(
                f"  config      batch {batch}, lr {config.get('lr')}, "
                f"noise {config.get('noise')}, weighting {config.get('weighting')}, "
                f"EMA {config.get('ema_decay')}"
            )
    if record.get("scoregen_version"):
        lines.append(f"  written by  scoregen {record['scoregen_version']}")
    click.echo("\n".join(lines))


# ---------------------------------------------------------------------- train
TRAIN_EPILOG = """\b
Examples:
  scoregen train --model mlp --data ncsn2d --steps 4000 --out toy.safetensors
  scoregen train --model unet --data digits --model-config channels=[16,32] \\
      --sigma-min 0.02 --sigma-max 5 --out digits.safetensors
  scoregen train --data digits --model conv_ae --sigma 0.3 --out dae.safetensors   (fixed σ)
  scoregen train --resume toy.safetensors --steps 8000                             (continue)

\b
--model-config and --data-options take key=value (value read as JSON when it parses:
hidden=[64,64]) or a JSON object, and may be repeated. The resume state goes beside the
checkpoint as NAME.resume.pt.
"""
# options that define the run: with --resume they come from the saved run
_RUN_OPTIONS = ("model", "data", "model_config", "data_options", "data_dir", "download",
                "batch_size", "lr", "sigma", "sigma_min", "sigma_max", "noise", "objective",
                "seed")  # fmt: skip


def _data_options(o: dict[str, Any]) -> dict[str, Any]:
    """``--data-options`` plus ``--data-dir`` / ``--download``, checked against the data set."""
    from scoregen.data import dataset_options

    options = _key_values(o["data_options"], "--data-options")
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
    from scoregen.data import DATASETS
    from scoregen.models import MODELS
    from scoregen.noise_levels import NOISE_DISTRIBUTIONS
    from scoregen.train import OBJECTIVES, TrainConfig

    d = TrainConfig()
    options = [
        click.option("--model", type=click.Choice(sorted(MODELS)), default=d.model, help="Model family."),
        click.option("--data", type=click.Choice(sorted(DATASETS)), default=d.data, help="Data set."),
        click.option("--model-config", multiple=True, metavar="KEY=VALUE|JSON", help="Model fields (shape comes from the data)."),
        click.option("--data-options", multiple=True, metavar="KEY=VALUE|JSON", help="Data set options, e.g. size=16 or data_dir=/path."),
        click.option("--data-dir", metavar="DIR", default=None, help="Folder of mnist, fashion_mnist, cifar10 or image_folder files (same as --data-options data_dir=DIR)."),
        click.option("--download", is_flag=True, help="mnist, fashion_mnist, cifar10: let torchvision download into --data-dir when the files are absent (never by default)."),
        click.option("--steps", type=Count(), default=d.steps, help="Optimizer steps (with --resume: the new total)."),
        click.option("--batch-size", type=Count(), default=d.batch_size, help="Examples per step."),
        click.option("--lr", type=Level(), default=d.lr, help="Peak learning rate (warmup, then cosine)."),
        click.option("--sigma", type=Level(), default=None, help="Train at this single σ (a fixed-σ DAE); implies --noise fixed."),
        click.option("--sigma-min", type=Level(), default=d.sigma_min, help="Smallest training σ."),
        click.option("--sigma-max", type=Level(), default=d.sigma_max, help="Largest training σ."),
        click.option("--noise", type=click.Choice(NOISE_DISTRIBUTIONS), default=None, help=f"How σ is drawn. [default: {d.noise}, or fixed with --sigma]"),
        click.option("--objective", type=click.Choice(OBJECTIVES), default=d.objective, help="dae (MSE denoising), n2n (Noise2Noise), esm/ssm (score matching, toys)."),
        click.option("--seed", type=Count(minimum=0), default=d.seed, help="Random seed."),
        click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", help="Where to train."),
        click.option("--threads", type=Count(), default=1, help=THREADS_HELP),
        click.option("--out", type=OutputFile((".safetensors",)), default=None, help="Checkpoint to write. [default: checkpoint.safetensors; with --resume, the resumed file]"),
        click.option("--metrics", type=OutputFile((".jsonl",)), default=None, help="JSONL metrics, one line per log step. [default: beside the checkpoint, NAME.metrics.jsonl]"),
        click.option("--log-every", type=Count(), default=d.log_every, help="Steps between metrics lines."),
        click.option("--checkpoint-every", type=Count(minimum=0), default=0, help="Steps between checkpoints (0: only at the end)."),
        click.option("--resume", metavar="CKPT", default=None, help="Continue the run saved in CKPT (needs CKPT's .resume.pt beside it)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


@cli.command(epilog=TRAIN_EPILOG, context_settings=CONTEXT)
@_train_options
@click.pass_context
def train(ctx: click.Context, **o) -> None:
    """Train a denoiser (MMSE / denoising score matching) and write a checkpoint."""
    import dataclasses

    import torch

    from scoregen.checkpoint import CheckpointError, load_resume_state, resume_path
    from scoregen.models import count_parameters
    from scoregen.train import TrainConfig
    from scoregen.train import train as run_training

    device = _device(o["device"])
    torch.set_num_threads(o["threads"])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if o["resume"] is not None:
        given = [
            name
            for name in _RUN_OPTIONS
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.BadParameter(
                "cannot be combined with --resume: a resumed run keeps its saved "
                "configuration (only --steps, --device, --out, --metrics, --log-every and "
                "--checkpoint-every may change)",
                param_hint="--" + given[0].replace("_", "-"),
            )
        source = Path(o["resume"])
        state_path = source if source.suffix == ".pt" else resume_path(source)
        try:
            saved = load_resume_state(state_path)["config"]
        except CheckpointError as e:
            raise click.BadParameter(str(e), param_hint="--resume") from None
        checkpoint = o["out"] or state_path.with_name(
            state_path.name.removesuffix(".resume.pt") + ".safetensors"
        )
        base = {k: v for k, v in saved.items() if k in fields}
        if ctx.get_parameter_source("steps") == click.core.ParameterSource.COMMANDLINE:
            base["steps"] = o["steps"]
        base["resume"] = str(state_path)
    else:
        checkpoint = o["out"] or Path("checkpoint.safetensors")
        noise = o["noise"] or ("fixed" if o["sigma"] is not None else TrainConfig.noise)
        if o["sigma"] is not None and noise != "fixed":
            raise click.BadParameter(
                f"trains at one σ, which needs --noise fixed, not {noise}", param_hint="--sigma"
            )
        if noise == "fixed" and o["sigma"] is None:
            raise click.BadParameter("fixed needs --sigma (the training σ)", param_hint="--noise")
        base = {
            "model": o["model"],
            "data": o["data"],
            "model_config": _key_values(o["model_config"], "--model-config"),
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
    base.update(
        device=device,
        out_dir=None,
        checkpoint=str(checkpoint),
        metrics_file=str(metrics),
        log_every=o["log_every"],
        checkpoint_every=o["checkpoint_every"],
        progress=not o["quiet"],
    )
    if o["resume"] is not None:
        done = int(load_resume_state(state_path)["step"])
        if base["steps"] <= done:
            raise click.BadParameter(
                f"the saved run has already taken {done} steps; pass a larger total",
                param_hint="--steps",
            )
    try:
        config = TrainConfig(**base)
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from None

    existed = {p: p.exists() for p in (checkpoint, resume_path(checkpoint), metrics)}
    # under torchrun every process runs this command; rank 0 owns the files and the summary
    rank_0 = int(os.environ.get("RANK", "0")) == 0
    try:
        result = run_training(config)
    except (ValueError, TypeError) as e:
        if rank_0:
            _remove_new(existed, keep_run=False)
        raise click.UsageError(str(e)) from None
    except BaseException:
        # a run that saved no checkpoint leaves nothing; one that did stays resumable
        if rank_0:
            _remove_new(existed, keep_run=config.checkpoint_every > 0 and checkpoint.exists())
        raise
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
        f"{_fmt(loss) if loss is not None else '?'}. Wrote {checkpoint} (resume state "
        f"{resume_path(checkpoint)}) and {metrics}."
    )


def _describe_sigma(sigma: dict[str, Any]) -> str:
    if "fixed" in sigma:
        return f"fixed at {_fmt(sigma['fixed'])}"
    return f"{sigma.get('distribution', '')} on [{_fmt(sigma['min'])}, {_fmt(sigma['max'])}]"


def _remove_new(existed: dict[Path, bool], keep_run: bool) -> None:
    if keep_run:
        return
    for path, was_there in existed.items():
        if not was_there:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- experiment
@cli.command(
    context_settings=CONTEXT,
    epilog="\b\nExamples:\n  scoregen experiment --list\n  scoregen experiment posterior_mean_vs_map --out out/pmap\n  scoregen experiment train_toy_mmse --full --seed 1",
)
@click.argument("name", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the experiments and exit.")
@click.option("--out", default=None, metavar="DIR", help="Output folder. [default: out/NAME]")
@click.option("--full", is_flag=True, help="Publication size (slower).")
@click.option("--seed", type=Count(minimum=0), default=0, help="Random seed.")
@click.option("--threads", type=Count(), default=1, help=THREADS_HELP)
@click.option("--quiet", "-q", is_flag=True, help="Do not print the numbers.")
def experiment(name, list_only, out, full, seed, threads, quiet) -> None:
    """Run one of the experiments (figures + NAME.json) of a scoregen checkout."""
    import torch

    try:
        from experiments._common import list_experiments, load_experiment, to_jsonable
    except ImportError:
        raise Failure(
            "the experiments package is not importable: it lives at the root of the scoregen "
            "repository, not in the installed package; run from a checkout (or put its root "
            "on PYTHONPATH)"
        ) from None
    names = list_experiments()
    if list_only:
        for entry in names:
            doc = (load_experiment(entry).__doc__ or "").strip().splitlines()
            click.echo(f"{entry:26s} {doc[0] if doc else ''}")
        return
    if name is None:
        raise click.UsageError("give an experiment NAME, or --list to see them")
    if name not in names:
        raise click.BadParameter(
            f"unknown experiment {name!r}; choose one of {', '.join(names)}", param_hint="NAME"
        )
    out_dir = _output_dir(out, "--out") or Path("out") / name
    before = set(out_dir.rglob("*")) if out_dir.exists() else None
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        numbers = load_experiment(name).run(out_dir=out_dir, full=full, seed=seed)
    except Exception as e:
        _remove_created(out_dir, before)
        raise Failure(f"experiment {name} failed: {type(e).__name__}: {e}") from None
    except BaseException:
        _remove_created(out_dir, before)
        raise
    if not quiet:
        click.echo(json.dumps(to_jsonable(numbers), indent=2))
        click.echo(f"[{name}] wrote {out_dir}/ in {time.perf_counter() - start:.1f} s")


def _remove_created(folder: Path, before: set[Path] | None) -> None:
    """Remove what a failed run added under ``folder`` (the folder too if it made it)."""
    import shutil

    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in sorted(set(folder.rglob("*")) - before, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- denoise
@cli.command(
    context_settings=CONTEXT,
    epilog="\b\nExamples:\n  scoregen denoise --ckpt builtin:digits-dae --sigma 0.4 digit.png --out denoised/\n  scoregen denoise --ckpt dae.safetensors --sigma 0.3 a.png b.png --out out/ --seed 1",
)
@click.option("--ckpt", required=True, metavar="FILE|builtin:NAME", help="An image denoiser.")
@click.option("--sigma", type=Level(), required=True, help="Noise level to add, in the model's units (data = x·scale + shift; the pixel std is σ·scale).")  # fmt: skip
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--out", required=True, metavar="DIR", help="Output folder (created if missing; its parent must exist).")  # fmt: skip
@click.option("--seed", type=Count(minimum=0), default=0, help="Seed of the added noise.")
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", help="Where to run.")  # fmt: skip
@click.option("--threads", type=Count(), default=1, help=THREADS_HELP)
def denoise(ckpt, sigma, images, out, seed, device, threads) -> None:
    """Add noise at σ to images, denoise them, write noisy/denoised PNGs and print PSNRs.

    Each IMAGE (PNG, JPEG, ...) is read as pixels in [0, 1], converted to the checkpoint's
    channels and resized to its image size when they differ.
    """
    import torch

    from scoregen import plot
    from scoregen.data import to_data_space
    from scoregen.metrics import psnr

    device = _device(device)
    torch.set_num_threads(threads)
    for image in images:
        if not Path(image).is_file():
            raise click.BadParameter(f"file {image!r} does not exist", param_hint="IMAGE")
    out_dir = _output_dir(out, "--out")
    model = _load(ckpt, device)
    record = model.data
    if len(model.shape) != 3:
        raise click.BadParameter(
            f"{model.name} models data of shape {list(model.shape)}, not images",
            param_hint="--ckpt",
        )
    fixed = model.fixed_sigma
    if fixed is not None and abs(sigma - fixed) > 1e-4 * fixed:
        raise click.BadParameter(
            f"{model.name} was trained at the single level σ={fixed:g}; got {sigma:g}",
            param_hint="--sigma",
        )
    if fixed is None:
        low, high = model.sigma_range
        if not low * (1 - 1e-6) <= sigma <= high * (1 + 1e-6):
            raise click.BadParameter(
                f"{sigma:g} is outside the σ range {model.name} was trained on [{low:g}, {high:g}]",
                param_hint="--sigma",
            )
    norm = record.get("normalization") or {}
    scale, shift = norm.get("scale", 1.0), norm.get("shift", 0.0)
    pixels = [_read_image(Path(p), model.shape) for p in images]
    generator = torch.Generator().manual_seed(seed)
    outputs = Outputs()
    lines = []
    try:
        for path, (clean, note) in zip(images, pixels):
            x = ((clean - shift) / scale).to(device)
            noisy = x + sigma * torch.randn(x.shape, generator=generator).to(device)
            with torch.no_grad():
                denoised = model.denoiser(noisy, sigma)
            noisy_px = to_data_space(noisy, record, clip=True).cpu()
            denoised_px = to_data_space(denoised, record, clip=True).cpu()
            db_noisy, db_denoised = psnr(noisy_px, clean).item(), psnr(denoised_px, clean).item()
            stem = Path(path).stem
            fig, axes = plot.new_figure(3, panel_size=(2.4, 2.6))
            for ax, picture, title in zip(
                axes[0],
                (clean, noisy_px, denoised_px),
                ("clean", f"noisy {db_noisy:.1f} dB", f"denoised {db_denoised:.1f} dB"),
            ):
                plot.image_grid(picture, nrow=1, ax=ax, title=title)
            fig.suptitle(f"{model.name}, σ={sigma:g}")
            compare = out_dir / f"{stem}_compare.png"
            single = out_dir / f"{stem}_denoised.png"
            outputs.write(compare, lambda p, fig=fig: plot.save_figure(fig, p))
            outputs.write(single, lambda p, img=denoised_px: _write_png(img, p))
            lines.append(
                f"{path}: PSNR noisy {db_noisy:.2f} dB -> denoised {db_denoised:.2f} dB{note}; "
                f"wrote {compare}, {single}"
            )
    except BaseException:
        outputs.rollback()
        raise
    click.echo(
        f"{model.name} at σ={sigma:g} (pixel noise std {sigma * scale:.4g}), seed {seed}:\n"
        + "\n".join(lines)
    )


def _read_image(path: Path, shape: tuple[int, ...]):
    """``[1, C, H, W]`` pixels in [0, 1] with the model's channels and size, and a note."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            size = image.size
            note = ""
            if size != (width, height):
                image = image.resize((width, height), Image.Resampling.LANCZOS)
                note = f" (resized {size[0]}×{size[1]} -> {width}×{height})"
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise click.BadParameter(
            f"cannot read {str(path)!r} as an image ({e})", param_hint="IMAGE"
        ) from None
    tensor = torch.from_numpy(array.copy())
    tensor = tensor[None] if channels == 1 else tensor.permute(2, 0, 1)
    return tensor[None], note


def _write_png(pixels, path: Path) -> None:
    """One image ``[1, C, H, W]`` in [0, 1] as an 8-bit PNG, atomically."""
    import numpy as np
    from PIL import Image

    from scoregen._io import atomic_write

    array = (pixels[0].clamp(0, 1) * 255).round().numpy().astype(np.uint8)
    image = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    atomic_write(path, lambda f: image.save(f, format="PNG"))


# ---------------------------------------------------------------------- builtins listing
@cli.command(name="builtins", context_settings=CONTEXT, epilog="\b\nExample:\n  scoregen builtins")
def builtins_command() -> None:
    """List the builtin:NAME checkpoints."""
    from scoregen.builtins import PREFIX, list_builtins

    for name, description in list_builtins().items():
        click.echo(f"{PREFIX + name:22s} {description}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``scoregen`` script and ``python -m scoregen``."""
    cli.main(args=argv, prog_name="scoregen")
