"""Names and configuration the command line needs before torch is imported: model families,
data sets, noise laws, objectives, samplers, and :class:`TrainConfig` (the single source of
training defaults). The registries that own each name (``scoregen.models.MODELS``,
``scoregen.data.DATASETS``, ...) are checked against these tuples by the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scoregen._util import check_positive_float, check_positive_int

__all__ = [
    "DATASET_NAMES",
    "LR_SCHEDULES",
    "MIXTURE_PRESETS",
    "MODEL_FAMILIES",
    "NOISE_DISTRIBUTIONS",
    "OBJECTIVES",
    "PROJECTIONS",
    "SAMPLERS",
    "TRAIN_SIGMA_RANGE",
    "TrainConfig",
    "WEIGHTINGS",
]

MODEL_FAMILIES = ("mlp", "conv_ae", "unet", "patch_transformer", "dncnn", "drunet")
MIXTURE_PRESETS = ("ncsn2d", "bimodal1d", "ring8", "grid25")
TOY_DATASETS = ("moons", "swiss_roll", "checkerboard", "rings")
IMAGE_DATASETS = ("digits", "patches", "mnist", "fashion_mnist", "cifar10", "image_folder")
DATASET_NAMES = MIXTURE_PRESETS + TOY_DATASETS + IMAGE_DATASETS
NOISE_DISTRIBUTIONS = ("fixed", "log_uniform", "geometric", "log_normal")
OBJECTIVES = ("dae", "n2n", "esm", "ssm")
WEIGHTINGS = ("none", "ncsn", "edm")
PROJECTIONS = ("rademacher", "gaussian")
LR_SCHEDULES = ("constant", "cosine")
# langevin (ULA at one σ), annealed (NCSN), mala, pc (predictor–corrector), ode (probability flow)
SAMPLERS = ("langevin", "annealed", "mala", "pc", "ode")
# Training noise levels: σ² (loss weights, preconditioning) must stay finite and non-zero in
# float32 with room to spare.
TRAIN_SIGMA_RANGE = (1e-10, 1e10)
# Step counts stay exact in the learning-rate schedule's float arithmetic.
MAX_STEPS = 2**53


@dataclass
class TrainConfig:
    """Everything :func:`train` needs; stored in the checkpoint it writes."""

    # model: a family of scoregen.models.MODELS and its config fields (shape from the data)
    model: str = "mlp"
    model_config: dict[str, Any] = field(default_factory=dict)
    precond: str | None = None  # "edm" | "none" | None = the family's default (edm for MLP)
    sigma_data: float | None = None  # EDM's σ_data; None = the data's std (4096 draws)
    # data: a name of scoregen.data.DATASETS and its options (or pass a Dataset to train)
    data: str = "ncsn2d"
    data_options: dict[str, Any] = field(default_factory=dict)
    # noise levels (scoregen.noise_levels): fixed | log_uniform | geometric | log_normal
    noise: str = "log_uniform"
    sigma: float | None = None  # the fixed σ (real Noise2Noise pairs: their pair_sigma)
    sigma_min: float = 0.01
    sigma_max: float = 10.0
    n_levels: int = 10  # geometric ladder
    p_mean: float = -1.2  # log-normal, EDM's defaults
    p_std: float = 1.2
    # objective: dae | n2n (Noise2Noise) | esm | ssm (score matching, toys)
    objective: str = "dae"
    # none | ncsn | edm (scoregen.losses.loss_weight); None: "edm" over a σ range (every level
    # on the same loss scale; unweighted, small σ barely count and their scores come out
    # wrong), "none" at a fixed σ (one level: λ would only rescale the loss)
    weighting: str | None = None
    n_projections: int = 1  # ssm
    projection: str = "rademacher"  # ssm: rademacher | gaussian
    # optimisation
    # 4000 steps at a peak lr of 2e-3: at 2000 / 1e-3 a 2-D toy's MLP is still visibly
    # undertrained (moons' arcs smeared, ODE mode weights off on ncsn2d)
    steps: int = 4000
    batch_size: int = 256
    lr: float = 2e-3
    lr_schedule: str = "cosine"  # constant | cosine (to 0 after warmup)
    warmup: int = 100  # linear learning-rate warmup steps
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max gradient norm; None or 0 = off
    ema_decay: float = 0.999
    ema_warmup: bool = True  # β_t = min(β, (1 + t)/(10 + t)): early EMA forgets the init
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (dae, n2n); ignored on CPU
    # output
    out_dir: str | None = None  # holds checkpoint.safetensors and metrics.jsonl by default
    checkpoint: str | None = None  # the checkpoint path (its resume state goes beside it)
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end
    log_every: int = 100
    metrics_file: str | None = None  # JSONL, one object per log line
    resume: str | None = None  # a checkpoint (or its .resume.pt) to continue; written back there
    # unless out_dir / checkpoint name another place
    # with resume: let `steps` differ from the saved run's planned total under the cosine
    # schedule; the updates after the resumed step follow the schedule of a `steps`-step run
    # (recorded in the resume state, so a later resume of the extended run stays exact)
    extend: bool = False
    progress: bool | None = None  # a progress bar; None = only when stderr is a terminal

    def __post_init__(self):
        if self.weighting is None:
            self.weighting = "none" if self.noise == "fixed" else "edm"
        choices = {
            "noise": NOISE_DISTRIBUTIONS,
            "objective": OBJECTIVES,
            "weighting": WEIGHTINGS,
            "projection": PROJECTIONS,
            "lr_schedule": LR_SCHEDULES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        check_positive_int("steps", self.steps, maximum=MAX_STEPS)
        for name in ("batch_size", "log_every", "n_projections"):
            check_positive_int(name, getattr(self, name))
        for name in ("warmup", "checkpoint_every"):
            check_positive_int(name, getattr(self, name), minimum=0)
        check_positive_int("seed", self.seed, minimum=0, maximum=2**63 - 1)  # torch's seeds
        check_positive_float("lr", self.lr)
        check_positive_float("weight_decay", self.weight_decay, allow_zero=True)
        if self.grad_clip is not None:
            check_positive_float("grad_clip", self.grad_clip, allow_zero=True)
        if self.sigma_data is not None:
            check_positive_float("sigma_data", self.sigma_data)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not isinstance(self.model_config, dict) or not isinstance(self.data_options, dict):
            raise TypeError("model_config and data_options must be dicts")
        low, high = TRAIN_SIGMA_RANGE
        for name in ("sigma", "sigma_min", "sigma_max"):
            value = getattr(self, name)
            if value is not None and not low <= check_positive_float(name, value) <= high:
                raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value:g}")
        if self.noise != "fixed":
            self.noise_levels(sigma=1.0)  # validates the range / log-normal parameters

    def noise_levels(self, sigma: float | None = None):
        """The :class:`~scoregen.noise_levels.NoiseLevels` these fields describe (``sigma``
        overrides the fixed σ)."""
        from scoregen.noise_levels import NoiseLevels

        sigma = self.sigma if sigma is None else sigma
        if self.noise == "fixed" and sigma is None:
            raise ValueError("noise='fixed' needs sigma (the single training noise level)")
        return NoiseLevels(
            self.noise,
            sigma=0.0 if sigma is None else sigma,
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
            n_levels=self.n_levels,
            p_mean=self.p_mean,
            p_std=self.p_std,
        )
