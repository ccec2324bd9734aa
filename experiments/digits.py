"""A σ-conditioned DAE on scikit-learn's 8×8 digits: denoising PSNR per σ, and sampling with
Langevin from a noisy held-out digit vs annealed Langevin from pure noise.

Data: the 1,797 digits of ``sklearn.datasets.load_digits`` (``scoregen.data.digits``), pixels
in [0, 1], 297 held out as the test split. The model space is the pixel space
(``model_range=(0, 1)``), so every σ below is in pixel units and PSNR uses the peak 1. A small
U-Net with EDM preconditioning is trained by ``scoregen.train`` on σ log-uniform over
[0.01, 1] with EMA weights.

(a) Denoising, on the whole test split: ``y = x + σz`` (not clipped), ``D(y, σ)`` clipped to
[0, 1]; the mean over images of ``psnr`` for the noisy input and the denoised output, and the
pooled PSNR ``10 log10(1 / mean MSE)`` over all test pixels. The noisy input's expected MSE is
exactly σ², so its pooled PSNR must sit near ``−20 log10 σ``. Figure ``digits_denoising.png``:
clean / noisy / denoised rows per σ.

(b) Sampling with the Tweedie score ``s(x, σ) = (D(x, σ) − x)/σ²``:

* "seeded" Langevin (started from the data, at temperature 1): the chain starts at a
  held-out digit plus noise at one σ and runs ULA at that fixed σ; its last state is denoised
  by ``D(·, σ)``. A fixed-σ chain only explores near its start: the JSON says how far the
  chains moved and how many changed class.
* annealed Langevin (NCSN) from ``init_noise`` at σ_max over a geometric ladder to σ_min, with
  the final Tweedie step.

Figures ``digits_samples.png`` (seeds, seeded-Langevin samples, annealed samples, test digits)
and ``digits_trajectory_annealed.png`` / ``digits_trajectory_seeded.png`` (one chain each).

Sample quality without a pretrained network: the distance of each sample to its nearest
training digit (against the same distance for test digits: far larger means blurry or broken
samples, far smaller means copies), pixel mean and standard deviation, MMD (RBF, one bandwidth
from the median heuristic on train ∪ test) and energy distance to the test digits (against
train vs test as the reference; a permutation test gives the energy distance's p-value and its
null scale at the samples' size), and a logistic-regression classifier fitted on the training
digits: the class histogram of the samples (does annealing cover all ten digits?) and its
mean confidence (largest class probability).

    python -m experiments.digits --out out/digits [--full] [--seed 0]
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from experiments._common import main, save_figure, write_json
from scoregen import (
    TrainConfig,
    TrajectoryRecorder,
    annealed_langevin,
    geometric_sigmas,
    init_noise,
    langevin,
    plot,
    train,
    tweedie_score,
)
from scoregen._util import check_positive_float, check_positive_int
from scoregen.data import load_dataset
from scoregen.metrics import energy_distance, median_bandwidth, mmd, permutation_test, psnr

NAME = "digits"
SIGMA_MIN, SIGMA_MAX = 0.01, 1.0
PSNR_SIGMAS = (0.05, 0.1, 0.2, 0.4, 0.8)
N_CLASSES = 10


def config_for(out_dir: Path, full: bool, seed: int, train_steps: int) -> TrainConfig:
    """The training run: a small U-Net, σ log-uniform over [SIGMA_MIN, SIGMA_MAX] in pixels."""
    return TrainConfig(
        model="unet",
        model_config={"channels": (32, 64) if full else (16, 32), "embed_dim": 32},
        precond="edm",
        data="digits",
        data_options={"model_range": (0.0, 1.0)},  # model space = pixels: σ in pixel units
        noise="log_uniform",
        sigma_min=SIGMA_MIN,
        sigma_max=SIGMA_MAX,
        objective="dae",
        weighting="edm",
        steps=train_steps,
        batch_size=128,
        lr=2e-3,
        warmup=min(100, train_steps // 4),
        lr_schedule="cosine",
        ema_decay=0.999,
        seed=seed,
        device="auto" if full else "cpu",
        out_dir=str(out_dir / "dae"),
        log_every=50,
        progress=False,
    )


# ---------------------------------------------------------------------- (a) denoising
@torch.no_grad()
def psnr_table(denoiser, clean: Tensor, sigmas, generator: torch.Generator) -> list[dict]:
    """Noisy and denoised PSNR (dB, peak 1) per σ over the batch ``clean`` (pixels in [0, 1])."""
    rows = []
    for sigma in sigmas:
        noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
        denoised = _on_device(denoiser, noisy, sigma).clamp(0.0, 1.0)
        rows.append(
            {
                "sigma": sigma,
                "noisy_expected": -20.0 * math.log10(sigma),  # E MSE = σ² exactly
                "noisy_mean": psnr(noisy, clean).mean().item(),
                "noisy_pooled": _pooled_psnr(noisy, clean),
                "denoised_mean": psnr(denoised, clean).mean().item(),
                "denoised_pooled": _pooled_psnr(denoised, clean),
            }
        )
        rows[-1]["gain_db"] = rows[-1]["denoised_mean"] - rows[-1]["noisy_mean"]
    return rows


def _on_device(denoiser, x: Tensor, sigma: float) -> Tensor:
    """``D(x, σ)`` on the denoiser's device, returned on the CPU (noise is drawn on the CPU,
    so the PSNR table does not depend on the device)."""
    device = next(denoiser.parameters()).device
    return denoiser(x.to(device), sigma).cpu()


def _pooled_psnr(x: Tensor, ref: Tensor) -> float:
    """``10 log10(1 / MSE)`` with the MSE over every pixel of the batch."""
    return -10.0 * math.log10((x - ref).double().square().mean().item())


@torch.no_grad()
def denoising_figure(denoiser, clean: Tensor, sigmas, rows, generator: torch.Generator):
    """One panel per σ: clean, noisy and denoised rows of the same held-out digits."""
    fig, axes = plot.new_figure(len(sigmas), panel_size=(2.4, 1.3))
    for ax, sigma, row in zip(axes[0], sigmas, rows):
        noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
        denoised = _on_device(denoiser, noisy, sigma)
        title = f"σ={sigma:g}: {row['noisy_mean']:.1f}→{row['denoised_mean']:.1f} dB"
        plot.image_grid(torch.cat([clean, noisy, denoised]), clean.shape[0], ax=ax, title=title)
    fig.suptitle("held-out digits: clean / noisy (σ in pixels) / denoised")
    return fig


# ---------------------------------------------------------------------- sample quality
def fit_classifier(train_images: Tensor, train_labels: np.ndarray, seed: int):
    """Multinomial logistic regression on the flattened training pixels."""
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(max_iter=2000, random_state=seed)
    return classifier.fit(_flat(train_images), train_labels)


def _flat(images: Tensor) -> np.ndarray:
    return images.reshape(images.shape[0], -1).double().numpy()


def class_numbers(classifier, images: Tensor) -> tuple[np.ndarray, dict]:
    """Predicted labels, and the class histogram and mean confidence of ``images``."""
    probs = classifier.predict_proba(_flat(images))
    labels = classifier.classes_[probs.argmax(1)]
    histogram = np.bincount(labels, minlength=N_CLASSES)
    return labels, {
        "class_histogram": histogram.tolist(),
        "classes_covered": int((histogram > 0).sum()),
        "confidence_mean": float(probs.max(1).mean()),
    }


def nn_distances(x: Tensor, reference: Tensor) -> Tensor:
    """The L2 distance (pixels) from each image of ``x`` to its nearest image in ``reference``."""
    return torch.cdist(x.flatten(1).double(), reference.flatten(1).double()).min(1).values


def _summary(values: Tensor) -> dict:
    return {"mean": values.mean().item(), "median": values.median().item()}


def sample_quality(samples: Tensor, data, classifier, bandwidth: float, seed: int) -> dict:
    """Everything measured on a batch of samples (pixels in [0, 1]) against the digits.

    ``energy_test`` is the permutation test of "samples and test digits share a law" on the
    energy distance: its p-value, and the 99% quantile of the statistic under that null at
    these sample sizes (the scale below which an energy distance means nothing).
    """
    _, classes = class_numbers(classifier, samples)
    test = permutation_test(
        "energy_distance", samples, data.test, generator=torch.Generator().manual_seed(seed)
    )
    return {
        "n": samples.shape[0],
        "nn_distance_to_train": _summary(nn_distances(samples, data.train)),
        "pixel_mean": samples.mean().item(),
        "pixel_std": samples.std().item(),
        "mmd_to_test": mmd(samples, data.test, bandwidth).item(),
        "energy_distance_to_test": energy_distance(samples, data.test).item(),
        "energy_test": {"p_value": test.p_value, "null_quantile_99": test.threshold},
        **classes,
    }


def reference_quality(data, classifier, test_labels: np.ndarray, bandwidth: float) -> dict:
    """The same numbers for real digits: test digits against the training set."""
    predicted, classes = class_numbers(classifier, data.test)
    return {
        "n_train": data.train.shape[0],
        "n_test": data.test.shape[0],
        "nn_distance_test_to_train": _summary(nn_distances(data.test, data.train)),
        "pixel_mean_test": data.test.mean().item(),
        "pixel_std_test": data.test.std().item(),
        "pixel_mean_train": data.train.mean().item(),
        "pixel_std_train": data.train.std().item(),
        "mmd_bandwidth": bandwidth,
        "mmd_train_test": mmd(data.train, data.test, bandwidth).item(),
        "energy_distance_train_test": energy_distance(data.train, data.test).item(),
        "classifier_test_accuracy": float((predicted == test_labels).mean()),
        **{f"{key}_test": value for key, value in classes.items()},
    }


def digit_labels(data) -> tuple[np.ndarray, np.ndarray]:
    """The true labels of the train and test splits (the split of ``scoregen.data.digits``)."""
    from sklearn.datasets import load_digits

    from scoregen.data import split_indices

    targets = load_digits().target
    train_index, test_index = split_indices(len(targets), data.test.shape[0], data.info["seed"])
    return targets[train_index.numpy()], targets[test_index.numpy()]


# ---------------------------------------------------------------------- (b) sampling
def _strip(recorder: TrajectoryRecorder, title: str):
    labels = ["start" if step < 0 else f"step {step + 1}, σ={sigma:.3g}"
              for step, sigma in zip(recorder.steps, recorder.sigmas)]  # fmt: skip
    return plot.trajectory_strip(
        [x.clamp(0, 1) for x in recorder.xs], labels=labels, n_panels=7, n_images=1, title=title
    )


def run(
    out_dir,
    full: bool = False,
    seed: int = 0,
    *,
    train_steps: int | None = None,
    n_samples: int | None = None,
    n_levels: int | None = None,
    n_steps_each: int | None = None,
    step_lr: float = 2e-5,
    seeded_sigma: float = 0.2,
    seeded_steps: int | None = None,
    psnr_sigmas=PSNR_SIGMAS,
) -> dict:
    """Train, denoise, sample, measure; writes the figures and ``digits.json`` into ``out_dir``.

    ``step_lr`` sets both samplers' step: annealed ``α_i = step_lr σ_i² / σ_min²``, seeded
    ``ε = step_lr σ² / σ_min²`` (the same ratio ε/σ² at every level).
    """
    out_dir = Path(out_dir)

    def size(name: str, value, default: int, minimum: int = 1) -> int:
        return default if value is None else check_positive_int(name, value, minimum=minimum)

    train_steps = size("train_steps", train_steps, 8_000 if full else 400)
    n_samples = size("n_samples", n_samples, 400 if full else 100, minimum=2)
    n_levels = size("n_levels", n_levels, 10, minimum=2)
    n_steps_each = size("n_steps_each", n_steps_each, 100 if full else 50)
    seeded_steps = size("seeded_steps", seeded_steps, n_levels * n_steps_each)
    step_lr = check_positive_float("step_lr", step_lr)
    psnr_sigmas = [check_positive_float("psnr_sigmas", s) for s in psnr_sigmas]
    if not SIGMA_MIN <= seeded_sigma <= SIGMA_MAX:
        raise ValueError(
            f"seeded_sigma must lie in the trained range [{SIGMA_MIN}, {SIGMA_MAX}], "
            f"got {seeded_sigma!r}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)

    # ---- train
    config = config_for(out_dir, full, seed, train_steps)
    start = time.perf_counter()
    trained = train(config)
    train_seconds = time.perf_counter() - start
    denoiser = trained.denoiser.eval()
    device = next(denoiser.parameters()).device
    score = tweedie_score(denoiser)
    data = load_dataset("digits", model_range=(0.0, 1.0))
    train_labels, test_labels = digit_labels(data)
    generator = torch.Generator().manual_seed(seed + 1)  # data picks, noise, starting points
    chain_generator = torch.Generator(device).manual_seed(seed + 2)  # the samplers' noise

    # ---- (a) denoising on the whole test split
    start = time.perf_counter()
    rows = psnr_table(denoiser, data.test, psnr_sigmas, generator)
    shown = data.test[:8]
    fig = denoising_figure(denoiser, shown, psnr_sigmas, rows, generator)
    save_figure(fig, out_dir / "digits_denoising.png")
    denoise_seconds = time.perf_counter() - start

    # ---- (b) sampling
    start = time.perf_counter()
    seeds = data.test[torch.randperm(data.test.shape[0], generator=generator)[:n_samples]]
    seeds = seeds[torch.arange(n_samples) % seeds.shape[0]]
    x0 = seeds + seeded_sigma * torch.randn(seeds.shape, generator=generator)
    xT = init_noise((n_samples, *data.shape), SIGMA_MAX, generator=generator)
    seeded_recorder = TrajectoryRecorder(every=max(1, seeded_steps // 20), max_chains=1, x0=x0)
    seeded_state = langevin(
        score, x0.to(device), sigma=seeded_sigma,
        step_size=step_lr * seeded_sigma**2 / SIGMA_MIN**2, n_steps=seeded_steps,
        generator=chain_generator, callback=seeded_recorder, progress=False,
    )  # fmt: skip
    with torch.no_grad():
        seeded = denoiser(seeded_state, seeded_sigma).clamp(0.0, 1.0).cpu()

    sigmas = geometric_sigmas(SIGMA_MAX, SIGMA_MIN, n_levels)
    annealed_recorder = TrajectoryRecorder(every=n_steps_each, max_chains=1, x0=xT)
    annealed = annealed_langevin(
        score, xT.to(device), sigmas, n_steps_each=n_steps_each, step_lr=step_lr,
        generator=chain_generator, callback=annealed_recorder, progress=False,
    ).clamp(0.0, 1.0).cpu()  # fmt: skip
    sample_seconds = time.perf_counter() - start

    # ---- sample quality
    classifier = fit_classifier(data.train, train_labels, seed)
    bandwidth = median_bandwidth(data.train, data.test)
    seed_labels, _ = class_numbers(classifier, seeds)
    seeded_labels, _ = class_numbers(classifier, seeded)
    seeded_numbers = sample_quality(seeded, data, classifier, bandwidth, seed)
    seeded_numbers["distance_from_seed"] = _summary((seeded - seeds).flatten(1).norm(dim=1))
    seeded_numbers["changed_class_fraction"] = float((seeded_labels != seed_labels).mean())

    n_show = min(n_samples, 40)
    fig, axes = plot.new_figure(4, panel_size=(3.0, 2.0))
    panels = [
        (x0[:n_show], f"held-out digits + noise, σ={seeded_sigma:g}"),
        (seeded[:n_show], f"fixed-σ Langevin, {seeded_steps} steps, denoised"),
        (annealed[:n_show], f"annealed Langevin from noise ({n_levels}×{n_steps_each})"),
        (data.test[:n_show], "test digits"),
    ]
    for ax, (images, title) in zip(axes[0], panels):
        plot.image_grid(images, 10, ax=ax, title=title)
    save_figure(fig, out_dir / "digits_samples.png")
    save_figure(
        _strip(annealed_recorder, "annealed Langevin: one chain"),
        out_dir / "digits_trajectory_annealed.png",
    )
    save_figure(
        _strip(seeded_recorder, f"fixed-σ Langevin (σ={seeded_sigma:g}): one chain"),
        out_dir / "digits_trajectory_seeded.png",
    )

    numbers = {
        "full": full,
        "seed": seed,
        "data": {"name": "digits", "model_range": [0.0, 1.0], "shape": list(data.shape)},
        "train": {
            "model": config.model,
            "model_config": config.model_config,
            "sigma_range": [SIGMA_MIN, SIGMA_MAX],
            "steps": config.steps,
            "batch_size": config.batch_size,
            "final_loss": trained.summary["final_loss"],
            "seconds": train_seconds,
            "checkpoint": trained.checkpoint,
        },
        "psnr": rows,
        "sampling": {
            "step_lr": step_lr,
            "n_samples": n_samples,
            "seeded": {"sigma": seeded_sigma, "n_steps": seeded_steps, **seeded_numbers},
            "annealed": {
                "sigmas": sigmas,
                "n_steps_each": n_steps_each,
                **sample_quality(annealed, data, classifier, bandwidth, seed),
            },
        },
        "reference": reference_quality(data, classifier, test_labels, bandwidth),
        "seconds": {"train": train_seconds, "denoise": denoise_seconds, "sample": sample_seconds},
    }
    write_json(out_dir, NAME, numbers)
    return numbers


if __name__ == "__main__":
    main(run, __doc__)
