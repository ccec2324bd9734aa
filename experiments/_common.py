"""What every experiment shares: the command line, JSON and figure output, and discovery.

An experiment is a module ``experiments/NAME.py`` with a docstring and::

    def run(out_dir: Path, full: bool = False, seed: int = 0) -> dict: ...

    if __name__ == "__main__":
        main(run, __doc__)

``run`` writes its figures and ``NAME.json`` (the numbers it returns) into ``out_dir``.
``python -m experiments.NAME --out DIR [--full] [--seed N]`` runs it from the shell;
:func:`list_experiments` and :func:`load_experiment` find it for the ``scoregen`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import pkgutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

import experiments
from scoregen._io import atomic_write

__all__ = [
    "main",
    "write_json",
    "save_figure",
    "to_jsonable",
    "list_experiments",
    "load_experiment",
    "experiment_name",
    "toy_mlp_config",
    "train_toy_denoiser",
    "one_thread",
]

RunFn = Callable[..., dict]


def experiment_name(run: RunFn) -> str:
    """``experiments.blurred_density`` -> ``blurred_density`` (``__main__`` -> the script's name)."""
    module = run.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else Path(sys.argv[0]).stem
    return module.rsplit(".", 1)[-1]


def to_jsonable(value: Any) -> Any:
    """Tensors, numpy arrays and scalars, Paths and tuples -> plain JSON types.

    Non-finite floats become None (JSON has no NaN), so every file parses anywhere.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(out_dir, name: str, numbers: Mapping[str, Any]) -> Path:
    """Write ``numbers`` to ``out_dir/name.json`` atomically (temp file + ``os.replace``)."""
    text = json.dumps(to_jsonable(numbers), indent=2, allow_nan=False) + "\n"
    return atomic_write(Path(out_dir) / f"{name}.json", lambda f: f.write(text), mode="w")


def save_figure(fig, path) -> Path:
    """Save a figure with scoregen's style, atomically, and close it (see ``scoregen.plot``)."""
    from scoregen.plot import save_figure as _save

    return _save(fig, path)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def main(
    run: RunFn,
    description: str | None = None,
    argv: list[str] | None = None,
    *,
    threads: int | None = 1,
) -> dict:
    """Parse ``--out DIR`` (default ``out/NAME``), ``--full``, ``--seed``, ``--threads``; call
    ``run``; print the numbers it returns as JSON, then where the files went and how long it took.

    ``threads`` is the default of ``--threads`` (torch's intra-op threads; None leaves torch's
    choice). One suits the toy experiments: their tensors are small, and a second thread
    only adds waiting, badly so when other processes share the cores.
    """
    name = experiment_name(run)
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{name}",
        description=(description or "").strip().split("\n\n")[0] or None,
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out") / name, help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--full", action="store_true", help="publication size: finer grids, more samples"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=threads,
        help="torch CPU threads (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    numbers = run(out_dir=args.out, full=args.full, seed=args.seed)
    elapsed = time.perf_counter() - start
    print(json.dumps(to_jsonable(numbers), indent=2))
    print(f"[{name}] wrote {args.out}/ in {elapsed:.1f} s", file=sys.stderr)
    return numbers


def list_experiments() -> list[str]:
    """Names of the experiments: modules of this package (not ``_private``, not subpackages)
    that define a ``run`` function."""
    names = []
    for info in pkgutil.iter_modules(experiments.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        if callable(getattr(load_experiment(info.name, check=False), "run", None)):
            names.append(info.name)
    return sorted(names)


def load_experiment(name: str, *, check: bool = True) -> ModuleType:
    """The module ``experiments.NAME``; a ValueError listing the choices if there is none."""
    if check and name not in list_experiments():
        raise ValueError(f"unknown experiment {name!r}; choose one of {list_experiments()}")
    return importlib.import_module(f"experiments.{name}")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch thread, then restore the caller's count. Small networks
    gain nothing from a second thread, and lose badly when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def toy_mlp_config(data: str, *, steps: int, hidden=(128, 128, 128), **fields):
    """The experiments' toy training run as a :class:`scoregen.TrainConfig`: a σ-conditioned
    MLP (``hidden`` widths, 32-d σ embedding) with EDM preconditioning on the toy ``data``,
    MSE with ``log σ`` uniform and EDM weighting, on the CPU without a progress bar; any
    other field (``sigma_min``, ``objective``, ``out_dir``, …) is passed through.
    """
    from scoregen import TrainConfig

    defaults = dict(
        model="mlp",
        model_config={"hidden": list(hidden), "embed_dim": 32},
        precond="edm",
        data=data,
        noise="log_uniform",
        objective="dae",
        weighting="edm",
        steps=steps,
        device="cpu",
        progress=False,
    )
    return TrainConfig(**{**defaults, **fields})


def train_toy_denoiser(
    data: str,
    *,
    sigma_range: tuple[float, float],
    steps: int,
    seed: int = 0,
    batch_size: int = 512,
    lr: float = 2e-3,
    hidden: tuple[int, ...] = (128, 128, 128),
) -> tuple[torch.nn.Module, dict]:
    """A small σ-conditioned MLP denoiser trained by :func:`scoregen.train` on the toy ``data``.

    MSE (``objective="dae"``) on ``x + σz`` with ``log σ`` uniform over ``sigma_range``,
    EDM preconditioning and weighting ``λ(σ) = (σ² + σ_d²)/(σ σ_d)²`` (every level on the
    same loss scale), AdamW with warmup and cosine decay, on one CPU thread, no files
    written. Returns the EMA denoiser (eval mode) and a JSON-able description of the run.
    """
    from scoregen import train

    sigma_min, sigma_max = (float(s) for s in sigma_range)
    config = toy_mlp_config(
        data,
        steps=steps,
        hidden=hidden,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        batch_size=batch_size,
        lr=lr,
        warmup=min(200, steps // 10),
        seed=seed,
        log_every=max(1, steps // 20),
    )
    with one_thread():
        result = train(config)
    info = {
        "trainer": "scoregen.train",
        "model": f"mlp hidden={list(hidden)}, embed_dim=32, precond=edm",
        "data": data,
        "objective": "dae",
        "weighting": "edm",
        "sigma_data": result.summary["sigma_data"],
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "sigma_range": [sigma_min, sigma_max],
        # the mean weighted loss over the last twentieth of the run
        "final_loss": result.summary["final_loss"],
        "train_seconds": result.summary["wall_time_s"],
    }
    return result.denoiser, info
