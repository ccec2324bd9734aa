"""Recipe: run k-diffusion's samplers on a scoregen model, and the scoregen-native equivalent.

    python docs/recipes/k_diffusion_samplers.py                       # builtin:ncsn2d-dae
    python docs/recipes/k_diffusion_samplers.py --ckpt mine.safetensors --steps 40

k-diffusion's samplers (``k_diffusion.sampling.sample_heun``, ``sample_euler``,
``sample_dpmpp_2m``, …) take a denoiser ``model(x, sigma)`` with ``sigma`` a ``[B]`` tensor,
and a descending σ ladder that ends in 0. A scoregen model's ``denoiser`` already is such a
``D(x, σ)``, so it goes in as it is. The ladder: k-diffusion's
``get_sigmas_karras(n, sigma_min, sigma_max)`` is scoregen's
``karras_sigmas(sigma_max, sigma_min, n)`` (note the argument order) with a 0 appended.

k-diffusion is not a dependency of scoregen (``pip install k-diffusion`` brings wandb,
accelerate, CLIP, kornia and more). Without it, this script runs only the scoregen-native
sampler: ``probability_flow(score, x, karras_sigmas(...), solver="heun")`` is the same Heun
ODE sampler as ``sample_heun`` (Karras et al. 2022, Algorithm 1, no churn), ending with the
same step to σ = 0 (for scoregen, the Tweedie step ``D(x, σ_min)``). With k-diffusion
installed it runs both from the same start and prints how far apart they end.
``--tiny`` runs a short version (used by the tests).
"""

from __future__ import annotations

import argparse

import torch

from scoregen import init_noise, karras_sigmas, probability_flow, tweedie_score
from scoregen.builtins import load_score_model
from scoregen.metrics import mode_weights


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default="builtin:ncsn2d-dae", help="checkpoint or builtin:NAME")
    parser.add_argument("--steps", type=int, default=30, help="ODE steps (σ levels)")
    parser.add_argument("--n", type=int, default=2000, help="samples")
    parser.add_argument("--tiny", action="store_true", help="a short run, for the tests")
    args = parser.parse_args(argv)
    n, steps = (200, 8) if args.tiny else (args.n, args.steps)

    model = load_score_model(args.ckpt)
    sigma_range = model.metadata["sigma"]  # the σ range the model was trained on
    sigma_min, sigma_max = float(sigma_range["min"]), float(sigma_range["max"])
    shape = tuple(model.data["shape"])
    generator = torch.Generator().manual_seed(0)
    x = init_noise((n, *shape), sigma_max, generator=generator)

    # scoregen: the probability-flow ODE with Heun steps on the Karras ladder.
    sigmas = karras_sigmas(sigma_max, sigma_min, steps)
    ours = probability_flow(tweedie_score(model.denoiser), x, sigmas, solver="heun")
    numbers = {"scoregen": ours, "k_diffusion": None, "max_abs_difference": None}
    if model.oracle is not None:
        weights = mode_weights(ours, model.oracle).tolist()
        print(f"scoregen probability_flow (heun), {steps} levels: mode weights {weights}")

    try:
        import k_diffusion
    except ImportError:
        print("k-diffusion is not installed: ran the scoregen-native sampler only")
        return numbers

    # k-diffusion: the same ladder with its final 0, the scoregen denoiser as its model.
    sigmas_k = k_diffusion.sampling.get_sigmas_karras(steps, sigma_min, sigma_max)
    assert torch.allclose(sigmas_k, torch.cat([sigmas, sigmas.new_zeros(1)]))
    theirs = k_diffusion.sampling.sample_heun(model.denoiser, x, sigmas_k, disable=True)
    difference = (theirs - ours).abs().max().item()
    print(f"k-diffusion sample_heun from the same start: max |difference| = {difference:.3g}")
    # any other k-diffusion sampler takes the same arguments, e.g. a stochastic one:
    ancestral = k_diffusion.sampling.sample_euler_ancestral(
        model.denoiser, x, sigmas_k, disable=True
    )
    if model.oracle is not None:
        weights = mode_weights(ancestral, model.oracle).tolist()
        print(f"k-diffusion sample_euler_ancestral: mode weights {weights}")
    numbers.update(k_diffusion=theirs, max_abs_difference=difference)
    return numbers


if __name__ == "__main__":
    main()
