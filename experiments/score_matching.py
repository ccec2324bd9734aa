"""Explicit, sliced and denoising score matching on one toy, one network, one target: ∇log p_σ.

Three objectives of ``scoregen.train`` fit the same score, that of the blurred density
``p_σ`` of the ``ring8`` mixture at one fixed σ (default 0.3; the components have std 0.4),
with the same σ-conditioned MLP in the Tweedie parametrisation
``s_θ(y) = (D_θ(y, σ) − y) / σ²``, the same initial weights, data stream, batch size, steps
and learning rate:

- ``esm`` (Hyvärinen): ``½‖s_θ(y)‖² + tr ∇_y s_θ(y)`` on noisy draws ``y = x + σz``, the
  Jacobian trace exact (one backward pass per dimension);
- ``ssm`` (sliced): ``½(vᵀs_θ)² + vᵀ∇_y(vᵀs_θ)`` with one Rademacher ``v`` per draw;
- ``dae`` (denoising): ``‖D_θ(x + σz, σ) − x‖² / d``, no derivative of ``s_θ`` in ``y``.

All three have ``½ E_{p_σ}‖s_θ − ∇log p_σ‖²`` plus a constant as their expectation, so they
share the minimiser; they differ in cost per step and in the noise of their gradients.
``scoregen.train`` scales the score-matching losses by ``2σ⁴/d``, which puts all three in
the same units: with ``J = E_{p_σ}‖∇log p_σ‖²`` (the Fisher information of ``p_σ``),

    E[loss_esm] = E[loss_ssm] = σ⁴ E‖s_θ − ∇log p_σ‖² / d − σ⁴ J / d
    E[loss_dae]               = σ⁴ E‖s_θ − ∇log p_σ‖² / d − σ⁴ J / d + σ²

(the last from Tweedie's ``MMSE = σ² d − σ⁴ J``). Adding the known constants back gives a
relative score error from each training loss (``loss_rel_error``, of the raw weights,
averaged over the log window).

Numbers (``score_matching.json``) per method: ``rel_error``, the relative score error of
the returned (EMA) network ``E‖s_θ − ∇log p_σ‖² / E‖∇log p_σ‖²`` on ``n_eval`` draws of
``p_σ`` (independent of the training draws) against the exact score
(``GaussianMixture.score``), with its standard error; ``curve``, the same every
``eval_every`` steps (measured inside ``train``'s callback, its time excluded from
``train_seconds``); ``loss_curve``, the logged training loss and its ``loss_rel_error``;
``train_seconds`` and ``ms_per_step``. Baselines on the same draws: the zero score (relative error 1) and the
Gaussian fit ``−C_σ⁻¹(y − m)`` with the mixture's exact mean ``m`` and covariance
``C_σ = Cov(p) + σ²I``, the best affine score.

Figure: ``score_matching.png``, relative score error against training step and against
training time.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from experiments._common import main, one_thread, save_figure, toy_mlp_config, write_json
from scoregen import plot, train
from scoregen.gmm import preset

NAME = "score_matching"
METHODS = ("esm", "ssm", "dae")
LABELS = {"esm": "explicit (Hyvärinen)", "ssm": "sliced", "dae": "denoising"}


def relative_error(estimate: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """``Σ‖ŝ − s‖² / Σ‖s‖²`` over the draws and its standard error (delta method for a ratio
    of means of paired values: ``sd(e_i − r n_i) / (√n · mean n)``)."""
    err = ((estimate.double() - exact) ** 2).sum(1)
    norm = (exact**2).sum(1)
    ratio = (err.mean() / norm.mean()).item()
    se = ((err - ratio * norm).std() / (err.numel() ** 0.5 * norm.mean())).item()
    return ratio, se


def gaussian_fit_score(mixture, sigma: float):
    """The score of ``N(m, Cov(p) + σ²I)``, ``m`` and ``Cov(p)`` the mixture's exact moments."""
    mean = mixture.mean()
    precision = torch.linalg.inv(
        mixture.covariance() + sigma**2 * torch.eye(mixture.dim, dtype=mixture.dtype)
    )
    return lambda y: -(y - mean) @ precision


def noisy_draws(mixture, sigma: float, n: int, seed: int) -> torch.Tensor:
    """``n`` draws of ``p_σ``: ``x + σz`` with ``x`` from the mixture (float64)."""
    generator = torch.Generator().manual_seed(seed)
    x = mixture.sample(n, generator=generator)
    return x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def train_one(method, *, preset_name, sigma, steps, batch_size, lr, seed, eval_every, y_eval,
              exact_eval):  # fmt: skip
    """Train with ``objective=method``; the EMA network's relative score error every
    ``eval_every`` steps (from ``train``'s callback), timed apart from the training."""
    curve, eval_seconds = [], 0.0

    def evaluate(info):
        nonlocal eval_seconds
        if info["step"] % eval_every:
            return
        start = time.perf_counter()
        with torch.no_grad():
            y = y_eval.float()
            score = (info["ema"](y, sigma) - y) / sigma**2
        rel, se = relative_error(score, exact_eval)
        curve.append({"step": info["step"], "rel_error": rel, "rel_error_se": se})
        eval_seconds += time.perf_counter() - start

    config = toy_mlp_config(
        preset_name,
        steps=steps,
        noise="fixed",
        sigma=sigma,
        objective=method,
        weighting="none",
        batch_size=batch_size,
        lr=lr,
        warmup=min(100, steps // 10),
        seed=seed,
        log_every=eval_every,
    )
    with one_thread():
        result = train(config, callback=evaluate)
    seconds = result.summary["wall_time_s"] - eval_seconds
    return result, curve, seconds


def draw_curves(results, baseline, sigma, path):
    with plot.style():
        fig, axes = plot.new_figure(2, panel_size=(4.4, 3.3))
        for i, (method, res) in enumerate(results.items()):
            color = plot.COLORS[i]
            steps = [c["step"] for c in res["curve"]]
            errors = [c["rel_error"] for c in res["curve"]]
            label = f"{LABELS[method]} ({method})"
            axes[0, 0].semilogy(steps, errors, color=color, label=label)
            loss = [(c["step"], c["loss_rel_error"]) for c in res["loss_curve"]
                    if c["loss_rel_error"] > 0]  # fmt: skip
            if loss:
                axes[0, 0].semilogy(*zip(*loss), color=color, ls=":", lw=0.9)
            per_step = res["train_seconds"] / res["steps"]
            axes[0, 1].semilogy([s * per_step for s in steps], errors, color=color, label=label)
        for ax, xlabel in (
            (axes[0, 0], "training step"),
            (axes[0, 1], "training time (s): step × mean time per step"),
        ):
            ax.axhline(baseline, color="0.4", ls="--", lw=1.0, label="best affine score")
            ax.set(xlabel=xlabel, ylabel="$E‖s_θ − ∇\\log p_σ‖^2 / E‖∇\\log p_σ‖^2$")
            ax.legend(loc="lower left")
        axes[0, 0].set_title(f"score error on draws of $p_σ$, σ = {sigma:g}\n"
                             "(solid: EMA vs exact score; dotted: from the training loss)")  # fmt: skip
        axes[0, 1].set_title("the same against training time (one thread)")
    save_figure(fig, path)


def run(
    out_dir,
    full: bool = False,
    seed: int = 0,
    *,
    sigma: float = 0.3,
    steps: int | None = None,
    batch_size: int = 256,
    lr: float = 2e-3,
    eval_every: int | None = None,
    n_eval: int | None = None,
    methods=METHODS,
    preset_name: str = "ring8",
) -> dict:
    """Train each method, measure against the exact score, draw, write; return the numbers."""
    out_dir = Path(out_dir)
    steps = steps or (6_000 if full else 2_000)
    eval_every = eval_every or max(1, steps // 30)
    n_eval = n_eval or (100_000 if full else 20_000)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    mixture = preset(preset_name)
    dim = mixture.dim

    y_eval = noisy_draws(mixture, sigma, n_eval, seed + 7)
    exact_eval = mixture.score(y_eval, sigma)
    fisher = (exact_eval**2).sum(1).mean().item()  # J = E‖∇log p_σ‖², Monte Carlo
    scale = sigma**4 * fisher / dim  # σ⁴ J / d: the loss units of a relative error of 1
    baseline, baseline_se = relative_error(gaussian_fit_score(mixture, sigma)(y_eval),
                                           exact_eval)  # fmt: skip

    results = {}
    for method in methods:
        result, curve, seconds = train_one(
            method, preset_name=preset_name, sigma=sigma, steps=steps, batch_size=batch_size,
            lr=lr, seed=seed, eval_every=eval_every, y_eval=y_eval, exact_eval=exact_eval,
        )  # fmt: skip
        with torch.no_grad():
            y = y_eval.float()
            score = (result.denoiser(y, sigma) - y) / sigma**2
        rel, se = relative_error(score, exact_eval)
        offset = (sigma**2 if method == "dae" else 0.0) - scale  # the constant in E[loss]
        results[method] = {
            "rel_error": rel,
            "rel_error_se": se,
            "train_seconds": seconds,
            "ms_per_step": 1000 * seconds / steps,
            "steps": steps,
            "final_loss": result.summary["final_loss"],
            "curve": curve,
            "loss_curve": [
                {
                    "step": h["step"],
                    "loss": h["loss"],
                    "loss_rel_error": (h["loss"] - offset) / scale,
                }
                for h in result.history
            ],  # fmt: skip
        }

    draw_curves(results, baseline, sigma, out_dir / f"{NAME}.png")
    numbers = {
        "experiment": NAME,
        "preset": preset_name,
        "sigma": sigma,
        "batch_size": batch_size,
        "lr": lr,
        "n_eval": n_eval,
        "fisher_per_dim": fisher / dim,
        "baselines": {
            "zero_score": 1.0,
            "gaussian_fit": baseline,
            "gaussian_fit_se": baseline_se,
        },
        "methods": results,
        "figures": [f"{NAME}.png"],
    }
    write_json(out_dir, NAME, numbers)
    return numbers


def summarize(numbers: dict) -> str:
    """The terminal summary: each method's final relative error to the exact score."""
    base = numbers["baselines"]
    lines = [
        f"{numbers['preset']} at σ = {numbers['sigma']:g}: relative error "
        "E‖s_θ − ∇log p_σ‖² / E‖∇log p_σ‖² on fresh draws of p_σ",
        f"    {'method':<8} {'rel. error':>10} {'± se':>8} {'steps':>6} {'train s':>8}",
    ]
    for method, row in numbers["methods"].items():
        lines.append(
            f"    {method:<8} {row['rel_error']:>10.4f} {row['rel_error_se']:>8.4f} "
            f"{row['steps']:>6} {row['train_seconds']:>8.1f}"
        )
    lines.append(
        f"baselines: zero score {base['zero_score']:.4f}, Gaussian fit {base['gaussian_fit']:.4f}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main(run, __doc__)
