"""What every experiment shares: the command line, JSON and figure output, and discovery.

An experiment is a module ``experiments/NAME.py`` with a docstring and::

    def run(out_dir: Path, full: bool = False, seed: int = 0) -> dict: ...

    if __name__ == "__main__":
        main(run, __doc__)

``run`` writes its figures and ``NAME.json`` (the numbers it returns) into ``out_dir``.
``python -m experiments.NAME --out DIR [--full] [--seed N]`` runs it from the shell and prints
:func:`summarize` of the numbers (``--json`` prints them whole); :func:`list_experiments`,
:func:`load_experiment` and :func:`describe` find and name it for the ``scoregen`` command.
A module may define its own ``summarize(numbers) -> str``; :func:`summarize` then uses it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import pkgutil
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import experiments
from scoregen._io import atomic_write
from scoregen._util import jsonable

__all__ = [
    "main",
    "summarize",
    "describe",
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


# the package's JSON sanitiser (tensors, numpy values, paths, tuples; non-finite floats
# become None, so every file parses anywhere)
to_jsonable = jsonable


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
    """Parse ``--out DIR`` (default ``out/NAME``), ``--full``, ``--seed``, ``--threads``,
    ``--json``; call ``run``; print :func:`summarize` of the numbers it returns (or, with
    ``--json``, the numbers whole), then where the files went and how long it took.

    The numbers are always in ``DIR/NAME.json`` (written here if ``run`` did not).
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
    parser.add_argument(
        "--json", action="store_true", help="print the numbers as JSON instead of a summary"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    numbers = run(out_dir=args.out, full=args.full, seed=args.seed)
    elapsed = time.perf_counter() - start
    json_path = Path(args.out) / f"{name}.json"
    if not json_path.exists():
        write_json(args.out, name, numbers)
    if args.json:
        print(json.dumps(to_jsonable(numbers), indent=2))
    else:
        print(summarize(numbers, name))
    print(f"[{name}] wrote {args.out}/ ({json_path.name} and figures) in {elapsed:.1f} s")
    return numbers


# ---------------------------------------------------------------------- summaries
# A "short" value fits in a table cell or a key/value line; longer lists stay in the JSON.
MAX_INLINE_LIST = 4
SUMMARY_WIDTH = 100
SUMMARY_LINES = 40
TABLE_ROWS = 10


def _is_short(value: Any) -> bool:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return True
    return (
        isinstance(value, list)
        and len(value) <= MAX_INLINE_LIST
        and all(isinstance(v, (bool, int, float)) or v is None for v in value)
    )


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _table(path: str, rows: list[dict]) -> list[str]:
    """A list of records with shared short fields as an aligned table (columns that do not fit
    in ``SUMMARY_WIDTH`` are left to the JSON, and said so)."""
    keys = [k for k in rows[0] if all(k in r and _is_short(r[k]) for r in rows)]
    cells = [[_fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    shown, used = [], 4
    for i, width in enumerate(widths):
        if used + width + 2 > SUMMARY_WIDTH and shown:
            break
        shown.append(i)
        used += width + 2
    hidden = len(keys) - len(shown)
    title = f"{path}:" + (f" ({hidden} more columns in the JSON)" if hidden else "")
    body = ["    " + "  ".join(c[i].rjust(widths[i]) for i in shown) for c in cells]
    if len(body) > TABLE_ROWS:  # a long curve: its two ends
        head, tail = TABLE_ROWS // 2, TABLE_ROWS - TABLE_ROWS // 2 - 1
        body = [*body[:head], f"    ... {len(body) - head - tail} more rows ...", *body[-tail:]]
    return [title, "    " + "  ".join(keys[i].rjust(widths[i]) for i in shown), *body]


def _summary_lines(value: Any, path: str) -> list[str]:
    if isinstance(value, Mapping):
        short = {k: v for k, v in value.items() if _is_short(v)}
        lines = []
        if short:
            text = ", ".join(f"{k} {_fmt(v)}" for k, v in short.items())
            head = f"{path}: " if path else ""
            wrapped = _wrap(head + text, indent="    " if path else "")
            lines += wrapped
        for key, sub in value.items():
            if not _is_short(sub):
                lines += _summary_lines(sub, f"{path}.{key}" if path else str(key))
        return lines
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        lines = []
        if any(_is_short(v) for v in value[0].values()):
            lines += _table(path, list(value))
        for i, item in enumerate(value):
            nested = {k: v for k, v in item.items() if not _is_short(v)}
            if nested:
                lines += _summary_lines(nested, f"{path}[{i}]")
        return lines
    return []  # a long list of plain values: in the JSON only


def _wrap(text: str, indent: str) -> list[str]:
    import textwrap

    return textwrap.wrap(
        text, SUMMARY_WIDTH, subsequent_indent=indent, break_long_words=False
    ) or [text]


def summarize(numbers: Mapping[str, Any], name: str | None = None) -> str:
    """A short human summary of an experiment's numbers, for a terminal.

    With ``name``, the experiment's own ``summarize(numbers)`` is used when its module defines
    one. Otherwise: every group of scalar fields on one line (floats to 4 significant digits),
    every list of records as an aligned table (a long one cut to its ends), lists of more than
    four numbers left out (they are in ``NAME.json``), at most 40 lines.
    """
    if name is not None:
        own = getattr(load_experiment(name), "summarize", None)
        if callable(own):
            return own(numbers)
    lines = _summary_lines(to_jsonable(numbers), "")
    if len(lines) > SUMMARY_LINES:
        more = len(lines) - SUMMARY_LINES + 1
        where = f"{name}.json" if name else "the JSON"
        lines = [*lines[: SUMMARY_LINES - 1], f"... {more} more lines: see {where}"]
    return "\n".join(lines)


def describe(name: str) -> str:
    """The experiment's one-line description: the whole first sentence of its docstring."""
    doc = load_experiment(name).__doc__ or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    # a sentence ends at . ! or ? followed by a space (not inside "0.8" or "e.g.x")
    match = re.match(r"(.+?[.!?])(?=\s|$)", paragraph)
    return match.group(1) if match else paragraph


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
        lr=1e-3,  # what the gallery was measured with (TrainConfig defaults to 2e-3)
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
