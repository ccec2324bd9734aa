"""Posterior sampling for inverse problems: inpainting, Gaussian deblurring and 2× super-resolution
of held-out digits and photo patches, scoregen's solvers against deepinv's given the same denoiser.

Priors: the shipped ``builtin:digits-dae`` (8×8 digits) and a U-Net trained by
``scoregen.train`` on 16×16 patches of scikit-image's photographs (``scoregen.data.image_patches``;
the test photograph, ``chelsea``, is never trained on). The patch prior ships as
``experiments/assets/patches16-unet.safetensors``; :func:`build_patch_prior` rebuilds it
(3,000 steps of batch 64: a few minutes on an idle CPU core, 16 on a busy one).
Observations ``y = A x + σ_n n`` in pixel units, σ_n = 0.05:

* inpainting: deepinv ``Inpainting``, a random half of the pixels kept (one mask per problem);
* deblurring: deepinv ``Blur``, Gaussian kernel of std 1 pixel, circular padding;
* super-resolution: deepinv ``Downsampling``, bicubic filter, factor 2, circular padding.

Methods, each drawing ``n_samples`` samples per image (the posterior mean and std are over them):

* scoregen ``posterior_sample`` with ``sampler="dps"`` (the default), ``"diffpir"``,
  ``"langevin"`` (annealed posterior Langevin), all at their defaults;
* deepinv 0.5's ``DiffPIR``, ``DPS`` and ``ULA`` on ``DeepinvDenoiser(model)`` (the same
  network in pixel space), with 100 steps per sample for the two diffusion solvers and one
  ULA chain of ``100 · n_samples`` steps per image (the same number of network evaluations;
  its mean and variance are the chain's, burn-in 20 %, its sample is the last state). Each
  one's main hyper-parameter is picked from a small grid by the posterior mean's PSNR on
  separate validation images (``deepinv_grid``);
* the baseline ``A†y`` (deepinv's ``A_dagger``: the zero-filled observation for inpainting,
  least squares by conjugate gradients for blur and downsampling), clipped to [0, 1]; for
  deblurring also the blurred observation ``y`` itself, a far better estimate than ``A†y``.

Per method and problem: PSNR and SSIM (scikit-image, 7×7 window) of the posterior mean and
of one sample, averaged over images; calibration, the fraction of pixels whose posterior mean
is within 2 posterior standard deviations of the truth (about 0.95 if the spread is right);
seconds per image. Also three studies: DPS against its simpler variants (``dps_ablation``:
the ancestral ζ, the isotropic error variance, the ``"gaussian"`` guidance; digits, and
patches with ``--full``), and on the digits the default solver across σ_n ∈ {0.01, 0.05, 0.2}
(``noise_levels``) and annealed posterior Langevin under four step rules
(``langevin_step_rules``): NCSN's steps on the exact likelihood (what a user gets from
``annealed_langevin(posterior_score(...))``), (a) the likelihood's variance widened by σ²
with NCSN's steps, (b) the exact likelihood with steps bounded by its Lipschitz constant
``‖A‖²/σ_n²``, and (a)+(b), scoregen's ``annealed_posterior_langevin``.

Figure ``inverse_problems.png``: per problem, the truth, the observation (``y`` for blur,
``A†y`` otherwise), two samples, the posterior mean and std of the default solver.

    python -m experiments.inverse_problems --out out/inverse_problems [--full] [--seed 0]
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from experiments._common import main, save_figure, write_json

ASSETS = Path(__file__).resolve().parent / "assets"
PATCH_PRIOR = ASSETS / "patches16-unet.safetensors"
PROBLEMS = ("inpainting", "deblurring", "super_resolution")
PRIORS = ("digits", "patches")
NOISE_SIGMA = 0.05
SCOREGEN_SAMPLERS = ("dps", "diffpir", "langevin")
DEEPINV_SOLVERS = ("DiffPIR", "DPS", "ULA")
DIFFUSION_STEPS = 100  # deepinv's DiffPIR and DPS, per sample
# Each deepinv solver's main hyper-parameters; the first entry is deepinv's default.
DEEPINV_GRID: dict[str, list[dict[str, Any]]] = {
    "DiffPIR": [
        {"lambda_": 7.0, "zeta": 0.1},
        {"lambda_": 1.0, "zeta": 0.1},
        {"lambda_": 25.0, "zeta": 0.1},
        {"lambda_": 7.0, "zeta": 0.5},
    ],
    "DPS": [
        {"guidance": "norm", "weight": 1.0},
        {"guidance": "norm", "weight": 10.0},
        {"guidance": "norm", "weight": 100.0},
        {"guidance": "annealed", "weight": 1.0},
    ],
    # the denoiser's noise level in pixels; step 0.9 / (1/σ_n² + 1/σ²) (stable for both terms)
    "ULA": [{"sigma": 0.05}, {"sigma": 0.02}, {"sigma": 0.1}],
}
PATCH_TRAIN = {
    "model": "unet",
    "model_config": {"channels": [16, 32], "embed_dim": 32, "groups": 8},
    "precond": "edm",
    "data": "patches",
    "data_options": {"patch_size": 16, "stride": 8},
    "noise": "log_uniform",
    "sigma_min": 0.01,
    "sigma_max": 10.0,
    "weighting": "edm",
    "batch_size": 64,
    "lr": 2e-3,
    "warmup": 100,
    "device": "cpu",
}


# ----------------------------------------------------------------------------- priors and data
def build_patch_prior(path: Path = PATCH_PRIOR, steps: int = 3000, seed: int = 0) -> Path:
    """Train the photo-patch prior with :func:`scoregen.train` and save it to ``path``."""
    from scoregen import TrainConfig, save_checkpoint, train
    from scoregen.data import load_dataset

    config = TrainConfig(
        **PATCH_TRAIN, steps=steps, seed=seed, log_every=max(1, steps // 10), progress=False
    )
    data = load_dataset(config.data, **config.data_options)
    result = train(config, data=data)
    summary = {k: v for k, v in result.summary.items() if k not in ("sigma", "sigma_data")}
    summary["built_by"] = "experiments.inverse_problems.build_patch_prior"
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(
        path, result.denoiser, data=data, sigma=result.summary["sigma"], training=summary
    )


def load_prior(name: str, out_dir: Path, train_steps: int | None):
    """The loaded model for ``name``; the patch prior is trained into ``out_dir`` when
    ``train_steps`` is given (or when the shipped file is missing)."""
    from scoregen.builtins import load_builtin, load_score_model

    if name == "digits":
        return load_builtin("digits-dae")
    path = PATCH_PRIOR
    if train_steps is not None or not path.exists():
        path = build_patch_prior(out_dir / "patches16-unet.safetensors", steps=train_steps or 3000)
    return load_score_model(path)


def held_out_images(name: str, n_test: int, n_val: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(test, validation)`` images in [0, 1]: disjoint seeded subsets of the held-out split."""
    from scoregen.data import digits, image_patches

    if name == "digits":
        pool = digits(model_range=(0.0, 1.0)).test
    else:
        pool = image_patches(patch_size=16, stride=16, model_range=(0.0, 1.0)).test
    order = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(seed))
    if n_test + n_val > pool.shape[0]:
        raise ValueError(f"{name}: only {pool.shape[0]} held-out images")
    return pool[order[:n_test]], pool[order[n_test : n_test + n_val]]


def make_physics(problem: str, shape: tuple[int, ...], noise_sigma: float, seed: int):
    """The deepinv operator of ``problem`` for images of ``shape`` (C, H, W), noise σ_n."""
    import deepinv as dinv

    noise = dinv.physics.GaussianNoise(sigma=noise_sigma)
    if problem == "inpainting":
        generator = torch.Generator().manual_seed(seed)
        mask = (torch.rand((1,) + tuple(shape), generator=generator) < 0.5).float()
        return dinv.physics.Inpainting(img_size=shape, mask=mask, noise_model=noise)
    if problem == "deblurring":
        kernel = dinv.physics.functional.gaussian_blur(sigma=(1.0, 1.0))
        return dinv.physics.Blur(filter=kernel, padding="circular", noise_model=noise)
    if problem == "super_resolution":
        return dinv.physics.Downsampling(
            img_size=shape, filter="bicubic", factor=2, padding="circular", noise_model=noise
        )
    raise ValueError(f"problem must be one of {PROBLEMS}, got {problem!r}")


def observe(physics, x: Tensor, noise_sigma: float, seed: int) -> Tensor:
    clean = physics.A(x)
    generator = torch.Generator().manual_seed(seed)
    return clean + noise_sigma * torch.randn(clean.shape, generator=generator)


# ----------------------------------------------------------------------------- metrics
def ssim(x: Tensor, ref: Tensor) -> np.ndarray:
    """SSIM per image (scikit-image, 7×7 uniform window, data range 1), channels averaged."""
    from skimage.metrics import structural_similarity

    a = x.detach().double().cpu().numpy()
    b = ref.detach().double().cpu().numpy()
    return np.array(
        [
            np.mean(
                [
                    structural_similarity(a[i, c], b[i, c], data_range=1.0, win_size=7)
                    for c in range(a.shape[1])
                ]
            )
            for i in range(a.shape[0])
        ]
    )


def scores(truth: Tensor, mean: Tensor, sample: Tensor, std: Tensor | None, seconds: float):
    from scoregen.metrics import psnr

    row = {
        "psnr_mean": psnr(mean, truth).mean().item(),
        "psnr_sample": psnr(sample, truth).mean().item(),
        "ssim_mean": float(ssim(mean, truth).mean()),
        "ssim_sample": float(ssim(sample, truth).mean()),
        "seconds_per_image": seconds / truth.shape[0],
    }
    if std is not None:
        row["calibration_2std"] = ((mean - truth).abs() <= 2 * std).float().mean().item()
    return row


# ----------------------------------------------------------------------------- the methods
def run_scoregen(model, y, physics, n_samples: int, seed: int, steps=None, **options):
    from scoregen.sampling.posterior import posterior_sample

    sampler = options.get("sampler") or "dps"
    if steps is not None:  # a reduced budget (tests): langevin keeps its 4:1 ratio to DPS
        options["steps"] = 4 * steps if sampler == "langevin" else steps
    result = posterior_sample(model, y, physics, n_samples, seed=seed, progress=False, **options)
    return result.samples, result.mean, result.std


def run_deepinv(solver: str, model, y, physics, n_samples: int, seed: int, steps=None, **params):
    """deepinv's solver on ``DeepinvDenoiser(model)``: ``(samples [B, n, ...] or None, mean, std)``."""
    import deepinv as dinv

    from scoregen.deepinv_bridge import DeepinvDenoiser

    denoiser = DeepinvDenoiser(model).eval()
    steps = DIFFUSION_STEPS if steps is None else steps
    noise_sigma = float(physics.noise_model.sigma)
    batch = y.shape[0]
    if solver == "ULA":
        sigma = params["sigma"]
        step = 0.9 / (1.0 / noise_sigma**2 + 1.0 / sigma**2)
        sampler = dinv.sampling.ULA(
            prior=dinv.optim.ScorePrior(denoiser),
            data_fidelity=dinv.optim.data_fidelity.L2(sigma=noise_sigma),
            step_size=step,
            sigma=sigma,
            max_iter=steps * n_samples,
            thinning=1,
            burnin_ratio=0.2,
            clip=(-1.0, 2.0),
            save_chain=1,
            verbose=False,
        )
        torch.manual_seed(seed)
        mean, var = sampler.sample(y, physics, x_init=physics.A_adjoint(y))
        last = sampler.get_chain()[-1]["x"].clamp(0, 1)
        return last[:, None], mean.clamp(0, 1), var.clamp_min(0).sqrt()
    repeated = y.repeat_interleave(n_samples, 0)
    if solver == "DiffPIR":
        method = dinv.sampling.DiffPIR(
            denoiser,
            dinv.optim.data_fidelity.L2(),
            sigma=noise_sigma,
            max_iter=steps,
            **params,
        )
        torch.manual_seed(seed)
        with torch.no_grad():
            out = method(repeated, physics)
    elif solver == "DPS":
        generator = torch.Generator().manual_seed(seed)
        method = dinv.sampling.DPS(denoiser, num_steps=steps, rng=generator, **params)
        out = method(repeated, physics, seed=seed).float()
    else:
        raise ValueError(f"unknown deepinv solver {solver!r}")
    samples = out.reshape((batch, n_samples) + tuple(out.shape[1:])).clamp(0, 1)
    return samples, samples.mean(1), samples.std(1)


def tune_deepinv(
    solver, model, problem, x_val, n_samples, seed, steps=None
) -> tuple[dict, list[dict]]:
    """The grid entry of ``solver`` with the best posterior-mean PSNR on the validation images."""
    from scoregen.metrics import psnr

    physics = make_physics(problem, tuple(x_val.shape[1:]), NOISE_SIGMA, seed)
    y = observe(physics, x_val, NOISE_SIGMA, seed + 1)
    tried = []
    for params in DEEPINV_GRID[solver]:
        _, mean, _ = run_deepinv(solver, model, y, physics, n_samples, seed, steps, **params)
        tried.append({"params": params, "psnr_mean": psnr(mean, x_val).mean().item()})
    best = max(tried, key=lambda t: t["psnr_mean"] if math.isfinite(t["psnr_mean"]) else -1e9)
    return best["params"], tried


def solve_problem(model, problem, x_test, x_val, n_samples, seed, steps=None) -> dict:
    """Every method on one problem: the table rows, the default's samples for the figure."""
    physics = make_physics(problem, tuple(x_test.shape[1:]), NOISE_SIGMA, seed)
    y = observe(physics, x_test, NOISE_SIGMA, seed + 2)
    rows: dict[str, dict] = {}
    start = time.perf_counter()
    baseline = physics.A_dagger(y).clamp(0, 1)
    rows["A†y (baseline)"] = scores(x_test, baseline, baseline, None, time.perf_counter() - start)
    observation = baseline
    if problem != "inpainting" and y.shape == x_test.shape:
        # a blurred image is itself an estimate, and a far better one than A†y
        observation = y.clamp(0, 1)
        rows["y (observed image)"] = scores(x_test, observation, observation, None, 0.0)
    figure = {"truth": x_test, "observation": observation}
    for sampler in SCOREGEN_SAMPLERS:
        start = time.perf_counter()
        samples, mean, std = run_scoregen(
            model, y, physics, n_samples, seed, steps, sampler=sampler
        )
        seconds = time.perf_counter() - start
        rows[f"scoregen {sampler}"] = scores(x_test, mean, samples[:, 0], std, seconds)
        if sampler == SCOREGEN_SAMPLERS[0]:
            figure.update(samples=samples[:, :2], mean=mean, std=std)
    tuning = {}
    for solver in DEEPINV_SOLVERS:
        params = DEEPINV_GRID[solver][0]
        if x_val.shape[0] > 0:
            params, tried = tune_deepinv(solver, model, problem, x_val, n_samples, seed, steps)
            tuning[solver] = {"chosen": params, "validation": tried}
        start = time.perf_counter()
        samples, mean, std = run_deepinv(
            solver, model, y, physics, n_samples, seed, steps, **params
        )
        seconds = time.perf_counter() - start
        rows[f"deepinv {solver}"] = {
            **scores(x_test, mean, samples[:, 0], std, seconds),
            "params": params,
        }
    return {"rows": rows, "tuning": tuning, "figure": figure}


# ----------------------------------------------------------------------------- the two studies
def noise_level_study(
    model, x_test, n_samples, seed, noise_levels=(0.01, 0.05, 0.2), steps=None
) -> list:
    """The default solver against ``A†y`` on every problem at several σ_n."""
    from scoregen.metrics import psnr

    out = []
    for noise_sigma in noise_levels:
        for problem in PROBLEMS:
            physics = make_physics(problem, tuple(x_test.shape[1:]), noise_sigma, seed)
            y = observe(physics, x_test, noise_sigma, seed + 2)
            baseline = physics.A_dagger(y).clamp(0, 1)
            samples, mean, std = run_scoregen(model, y, physics, n_samples, seed, steps)
            out.append(
                {
                    "noise_sigma": noise_sigma,
                    "problem": problem,
                    "psnr_baseline": psnr(baseline, x_test).mean().item(),
                    "psnr_mean": psnr(mean, x_test).mean().item(),
                    "psnr_sample": psnr(samples[:, 0], x_test).mean().item(),
                    "calibration_2std": ((mean - x_test).abs() <= 2 * std).float().mean().item(),
                }
            )
    return out


def step_rule_study(
    model, x_test, n_samples, seed, noise_levels=(0.01, 0.05, 0.2), n_levels=20, n_steps_each=10
) -> list:
    """Annealed posterior Langevin on the digits under four step rules, same ladder and budget.

    NCSN's rule ``α_i = ε σ_i²`` (``step_lr = ε σ_L²``) and the curvature-bounded rule
    ``α_i = ε / (1/σ_i² + ‖A‖²/(σ_n² + γ²σ_i²))`` of ``annealed_posterior_langevin``, each
    with the exact likelihood (γ = 0) or the widened one (γ = 1); ε = 1, final Tweedie step.
    """
    from scoregen import SamplerDivergence, annealed_langevin, geometric_sigmas, posterior_score
    from scoregen.metrics import psnr
    from scoregen.samplers import GaussianLikelihood, annealed_posterior_langevin

    scale = model.data["normalization"]["scale"]
    shift = model.data["normalization"]["shift"]
    eps = 1.0
    out = []
    for noise_sigma in noise_levels:
        for problem in PROBLEMS:
            physics = make_physics(problem, tuple(x_test.shape[1:]), noise_sigma, seed)
            y = observe(physics, x_test, noise_sigma, seed + 2).repeat_interleave(n_samples, 0)
            likelihood = GaussianLikelihood(y, physics, noise_sigma).in_model_space(scale, shift)
            low = max(model.sigma_range[0], likelihood.noise_sigma / 2)
            sigmas = geometric_sigmas(model.sigma_range[1], low, n_levels)
            for rule, gamma, bounded in (
                ("NCSN steps, exact likelihood", 0.0, False),
                ("(a) widened likelihood, NCSN steps", 1.0, False),
                ("(b) exact likelihood, Lipschitz-bounded steps", 0.0, True),
                ("(a)+(b) annealed_posterior_langevin", 1.0, True),
            ):
                generator = torch.Generator().manual_seed(seed)
                x0 = sigmas[0] * torch.randn(
                    (y.shape[0],) + tuple(x_test.shape[1:]), generator=generator
                )
                row = {"noise_sigma": noise_sigma, "problem": problem, "rule": rule}
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        if bounded:
                            x = annealed_posterior_langevin(
                                model.score,
                                x0,
                                sigmas,
                                likelihood=likelihood,
                                n_steps_each=n_steps_each,
                                step_scale=eps,
                                gamma=gamma,
                                generator=generator,
                                progress=False,
                            )
                        else:
                            score = posterior_score(model.score, likelihood, gamma=gamma)
                            x = annealed_langevin(
                                score,
                                x0,
                                sigmas,
                                n_steps_each=n_steps_each,
                                step_lr=eps * float(sigmas[-1]) ** 2,
                                generator=generator,
                                progress=False,
                            )
                    samples = (
                        (x * scale + shift)
                        .clamp(0, 1)
                        .reshape((x_test.shape[0], n_samples) + tuple(x_test.shape[1:]))
                    )
                    row["psnr_mean"] = psnr(samples.mean(1), x_test).mean().item()
                    row["diverged"] = False
                except SamplerDivergence as err:
                    row["psnr_mean"] = None
                    row["diverged"] = True
                    row["message"] = str(err).split(";")[1].strip()[:200]
                out.append(row)
    return out


def dps_ablation(model, x_test, n_samples, seed, steps=None) -> list:
    """The default DPS against its simpler variants on every problem (σ_n = 0.05): the
    ancestral ζ (the solver's exact default) instead of ζ = 0.2, then the isotropic error
    variance ``σ²σ_d²/(σ² + σ_d²)`` instead of the probed one, then the ``"gaussian"``
    guidance (``A Aᵀ`` replaced by I)."""
    from scoregen.metrics import psnr

    variants = {
        "pigdm, probed r², ζ = 0.2 (default)": {},
        "pigdm, probed r², ancestral ζ": {"zeta": None},
        "pigdm, isotropic r², ancestral ζ": {"error_variance": "isotropic", "zeta": None},
        "gaussian, isotropic r², ancestral ζ": {
            "guidance": "gaussian",
            "error_variance": "isotropic",
            "zeta": None,
        },
    }
    out = []
    for problem in PROBLEMS:
        physics = make_physics(problem, tuple(x_test.shape[1:]), NOISE_SIGMA, seed)
        y = observe(physics, x_test, NOISE_SIGMA, seed + 2)
        for name, options in variants.items():
            start = time.perf_counter()
            samples, mean, std = run_scoregen(
                model, y, physics, n_samples, seed, steps, sampler="dps", **options
            )
            out.append(
                {
                    "problem": problem,
                    "variant": name,
                    "psnr_mean": psnr(mean, x_test).mean().item(),
                    "psnr_sample": psnr(samples[:, 0], x_test).mean().item(),
                    "calibration_2std": ((mean - x_test).abs() <= 2 * std).float().mean().item(),
                    "seconds_per_image": (time.perf_counter() - start) / x_test.shape[0],
                }
            )
    return out


# ----------------------------------------------------------------------------- figure
def draw_figure(panels: list[tuple[str, dict]], path: Path, n_show: int = 4) -> Path:
    """Rows: per (prior, problem) the truth, A†y, two samples, the mean and the std (×4)."""
    from scoregen import plot

    columns = ("truth", "observation", "sample 1", "sample 2", "posterior mean", "posterior std ×4")
    with plot.style():
        fig, axes = plot.new_figure(len(columns), len(panels), panel_size=(1.9, 1.9))
        for row, (label, figure) in enumerate(panels):
            k = min(n_show, figure["truth"].shape[0])
            images = (
                figure["truth"][:k],
                figure["observation"][:k],
                figure["samples"][:k, 0],
                figure["samples"][:k, 1 % figure["samples"].shape[1]],
                figure["mean"][:k],
                (4 * figure["std"][:k]).clamp(0, 1),
            )
            for col, (title, batch) in enumerate(zip(columns, images)):
                ax = axes[row, col]
                plot.image_grid(batch.cpu(), nrow=2, ax=ax)
                if row == 0:
                    ax.set_title(title, fontsize=8)
                if col == 0:
                    ax.set_axis_on()
                    ax.set_xticks([])
                    ax.set_yticks([])
                    for spine in ax.spines.values():
                        spine.set_visible(False)
                    ax.set_ylabel(label, fontsize=7)
        return save_figure(fig, path)


def table_markdown(results: dict) -> str:
    """The main table as Markdown (what docs/inverse_problems.md shows)."""
    lines = [
        "| prior | problem | method | PSNR mean | PSNR sample | SSIM mean | SSIM sample "
        "| within 2 std | s / image |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for prior, problems in results.items():
        for problem, rows in problems.items():
            for method, row in rows.items():
                cal = row.get("calibration_2std")
                lines.append(
                    f"| {prior} | {problem} | {method} | {row['psnr_mean']:.2f} | "
                    f"{row['psnr_sample']:.2f} | {row['ssim_mean']:.3f} | {row['ssim_sample']:.3f} "
                    f"| {'' if cal is None else f'{cal:.2f}'} | {row['seconds_per_image']:.3f} |"
                )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- run
def run(
    out_dir: Path,
    full: bool = False,
    seed: int = 0,
    *,
    priors: tuple[str, ...] = PRIORS,
    problems: tuple[str, ...] = PROBLEMS,
    n_images: dict[str, int] | None = None,
    n_val: int | None = None,
    n_samples: int | None = None,
    train_steps: int | None = None,
    studies: bool = True,
    study_images: int | None = None,
    steps: int | None = None,
) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_images = n_images or ({"digits": 96, "patches": 24} if full else {"digits": 32, "patches": 8})
    n_val = (4 if full else 2) if n_val is None else n_val
    # The mean of n exact posterior samples has an excess MSE of (posterior variance)/n over
    # the exact posterior mean, 10 log10(1 + 1/n) dB: 0.51 dB at n = 8, 0.26 dB at n = 16.
    n_samples = 16 if n_samples is None else n_samples
    study_images = (16 if full else 4) if study_images is None else study_images
    start = time.perf_counter()
    table: dict[str, dict] = {}
    tuning: dict[str, dict] = {}
    panels = []
    studies_out: dict[str, list] = {}
    for prior in priors:
        model = load_prior(prior, out_dir, train_steps)
        x_test, x_val = held_out_images(prior, n_images[prior], n_val, seed)
        table[prior], tuning[prior] = {}, {}
        for problem in problems:
            solved = solve_problem(model, problem, x_test, x_val, n_samples, seed, steps)
            table[prior][problem] = solved["rows"]
            tuning[prior][problem] = solved["tuning"]
            panels.append((f"{prior}\n{problem}", solved["figure"]))
        if studies and (full or prior == "digits"):
            studies_out.setdefault("dps_ablation", {})[prior] = dps_ablation(
                model, x_test, n_samples, seed, steps
            )
        if studies and prior == "digits":
            x_study = x_test[:study_images]
            studies_out["noise_levels"] = noise_level_study(
                model, x_study, n_samples, seed, steps=steps
            )
            studies_out["langevin_step_rules"] = step_rule_study(
                model,
                x_study,
                n_samples,
                seed,
                # a reduced budget (tests) keeps enough steps for a bad rule to blow up
                **({} if steps is None else {"n_levels": 3, "n_steps_each": 10}),
            )
    draw_figure(panels, out_dir / "inverse_problems.png")
    numbers = {
        "experiment": "inverse_problems",
        "noise_sigma": NOISE_SIGMA,
        "n_images": {p: n_images[p] for p in priors},
        "n_validation_images": n_val,
        "n_samples": n_samples,
        "deepinv_diffusion_steps": steps or DIFFUSION_STEPS,
        "deepinv_ula_steps": (steps or DIFFUSION_STEPS) * n_samples,
        "table": table,
        "deepinv_grid": tuning,
        **studies_out,
        "table_markdown": table_markdown(table),
        "seconds": time.perf_counter() - start,
    }
    write_json(out_dir, "inverse_problems", numbers)
    return numbers


if __name__ == "__main__":
    main(run, __doc__)
