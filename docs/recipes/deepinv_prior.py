"""Recipe: a deepinv denoiser as the prior of scoregen's samplers (prior and posterior).

    python docs/recipes/deepinv_prior.py --weights drunet_gray.pth --out out/deepinv_prior

deepinv's denoisers (``DRUNet``, ``DnCNN``, …) are already a ``D(x, sigma)``: images
``[B, C, H, W]`` with pixels in [0, 1], and **σ in pixel units** (the standard deviation
of the noise on [0, 1] pixels). ``tweedie_score(D)`` turns one into the score of the
blurred image prior, ``(D(x, σ) − x)/σ²``, which every scoregen sampler takes; this
script works in pixel space, so no conversion is needed. (A scoregen model trained on
[-1, 1] values works in model space instead: there σ_model = 2 σ_pixel; map images with
``scoregen.data.from_data_space`` / ``to_data_space``.)

This machine cannot download weights, so by default the network is built with
``pretrained=None`` (random weights): the script shows the wiring, and its pictures are
noise. For real use, load deepinv's published weights: ``DRUNet(pretrained="download")``
fetches them once, or pass the path of a downloaded file with ``--weights``. Steps:

1. prior samples: annealed Langevin on the Tweedie score from pure noise;
2. inpainting: a deepinv ``Inpainting`` physics (half the pixels, noise σ_n = 0.05) and
   ``posterior_score(prior_score, y, physics)``, sampled with Langevin at a small σ.

Posterior sampling in more depth: the page inverse_problems.md next to this one's
``recipes.md``. ``--tiny`` runs a small network on a small image (used by the tests).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from scoregen import (
    annealed_langevin,
    geometric_sigmas,
    init_noise,
    langevin,
    plot,
    posterior_score,
    tweedie_score,
)
from scoregen.metrics import psnr


def photo(size: int) -> torch.Tensor:
    """scikit-image's cameraman, ``[1, 1, size, size]`` in [0, 1]."""
    import torch.nn.functional as F
    from skimage import data

    image = torch.from_numpy(data.camera()).float()[None, None] / 255.0
    return F.interpolate(image, size=(size, size), mode="area")


def main(argv: list[str] | None = None) -> dict:
    import deepinv

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="a DRUNet weight file (grayscale); default: random")
    parser.add_argument("--size", type=int, default=64, help="image side (a multiple of 8)")
    parser.add_argument("--out", type=Path, default=Path("out/deepinv_prior"))
    parser.add_argument("--tiny", action="store_true", help="a small run, for the tests")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    size = 16 if args.tiny else args.size

    # The denoiser: deepinv's DRUNet, grayscale, D(x, σ) with σ in pixel units.
    widths = (8, 16, 32, 64) if args.tiny else (64, 128, 256, 512)  # the published size
    denoiser = deepinv.models.DRUNet(
        in_channels=1, out_channels=1, nc=widths, nb=1 if args.tiny else 4,
        pretrained=args.weights,  # None: random weights (shows the wiring only)
    ).eval()  # fmt: skip
    prior_score = tweedie_score(denoiser)
    generator = torch.Generator().manual_seed(1)

    # 1. Prior samples: annealed Langevin from σ = 1 down to σ = 0.01 (pixel units).
    sigma_max, sigma_min = 1.0, 0.01
    start = init_noise((4, 1, size, size), sigma_max, generator=generator)
    prior_samples = annealed_langevin(
        prior_score,
        start + 0.5,  # noise around mid-grey
        geometric_sigmas(sigma_max, sigma_min, 3 if args.tiny else 20),
        n_steps_each=2 if args.tiny else 50,
        step_lr=0.1 * sigma_min**2,
        generator=generator,
    )

    # 2. Inpainting: keep half the pixels, add noise σ_n; sample x | y at a small σ.
    clean = photo(size)
    noise_sigma = 0.05
    physics = deepinv.physics.Inpainting(
        img_size=(1, size, size),
        mask=0.5,
        noise_model=deepinv.physics.GaussianNoise(sigma=noise_sigma),
        rng=torch.Generator().manual_seed(2),
    )
    y = physics(clean)
    score = posterior_score(prior_score, y, physics)  # prior score + Aᵀ(y − A x)/σ_n²
    sigma = 0.02  # the prior's level; the step must resolve both it and σ_n
    step_size = 0.1 * min(sigma, noise_sigma) ** 2
    restored = langevin(
        score,
        physics.A_adjoint(y).expand(4, -1, -1, -1),  # start: the observed pixels, zeros elsewhere
        sigma=sigma,
        step_size=step_size,
        n_steps=20 if args.tiny else 2000,
        generator=generator,
    )

    numbers = {
        "prior_samples": prior_samples,
        "restored": restored,
        "observed_fraction": physics.mask.float().mean().item(),
        "observation_noise_rms": (y - physics.A(clean))
        .pow(2)
        .sum()
        .div(physics.mask.sum())
        .sqrt()
        .item(),
        "psnr_observation": psnr(physics.A_adjoint(y), clean).item(),
        "psnr_restored": psnr(restored.mean(0, keepdim=True).clamp(0, 1), clean).item(),
    }
    fig, axes = plot.new_figure(3, panel_size=(2.6, 2.8))
    plot.image_grid(prior_samples.clamp(0, 1), nrow=2, ax=axes[0, 0], title="prior samples")
    plot.image_grid(physics.A_adjoint(y).clamp(0, 1), ax=axes[0, 1], title="observed y")
    plot.image_grid(restored.clamp(0, 1), nrow=2, ax=axes[0, 2], title="posterior samples")
    figure = plot.save_figure(fig, args.out / "deepinv_prior.png")
    print(
        f"PSNR observed {numbers['psnr_observation']:.2f} dB, posterior mean of 4 chains "
        f"{numbers['psnr_restored']:.2f} dB (random weights: meaningless until you load "
        f"real ones); wrote {figure}"
    )
    return numbers


if __name__ == "__main__":
    main()
