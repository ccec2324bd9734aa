"""``scoregen experiment``: run one of the experiments of a scoregen checkout."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import click

from scoregen.cli._common import (
    CONTEXT,
    Failure,
    did_you_mean,
    output_dir,
    seed_option,
    set_up_torch,
    threads_option,
)

EXPERIMENT_EPILOG = """\b
Examples:
  scoregen experiment --list
  scoregen experiment posterior_mean_vs_map --out out/pmap
  scoregen experiment train_toy_mmse --full --seed 1
"""


def experiments_common():
    """``experiments._common`` of the scoregen checkout this package was installed from (an
    editable install, wherever the shell is), else one importable from ``sys.path``; a
    :class:`Failure` saying how to get the experiments when there is none (a wheel install)."""
    root = Path(__file__).resolve().parents[2]
    if (root / "experiments" / "_common.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        common = importlib.import_module("experiments._common")
    except ImportError:
        common = None
    if common is None or not hasattr(common, "list_experiments"):
        raise Failure(
            "the experiments live in the scoregen repository, not in an installed package: "
            "clone it and install it with `pip install -e .` (then `scoregen experiment` finds "
            "them from any folder)"
        )
    return common


@click.command(context_settings=CONTEXT, epilog=EXPERIMENT_EPILOG)
@click.argument("name", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the experiments and exit.")
@click.option("--out", default=None, metavar="DIR", help="Output folder. [default: out/NAME]")
@click.option("--full", is_flag=True, help="Publication size (slower).")
@seed_option()
@threads_option()
@click.option("--quiet", "-q", is_flag=True, help="Do not print the summary.")
def experiment(name, list_only, out, full, seed, threads, quiet) -> None:
    """Run one of the experiments (figures + NAME.json) of a scoregen checkout."""
    common = experiments_common()
    names = common.list_experiments()
    if list_only:
        for entry in names:
            click.echo(f"{entry:26s} {_describe(common, entry)}")
        return
    if name is None:
        raise click.UsageError("give an experiment NAME, or --list to see them")
    if name not in names:
        raise click.BadParameter(
            f"unknown experiment {name!r}{did_you_mean(name, names)}; choose one of "
            f"{', '.join(names)}",
            param_hint="NAME",
        )
    out_dir = output_dir(out, "--out") or Path("out") / name
    before = set(out_dir.rglob("*")) if out_dir.exists() else None
    set_up_torch("cpu", threads)
    start = time.perf_counter()
    try:
        numbers = common.load_experiment(name).run(out_dir=out_dir, full=full, seed=seed)
    except Exception as e:
        _remove_created(out_dir, before)
        raise Failure(f"experiment {name} failed: {type(e).__name__}: {e}") from None
    except BaseException:
        _remove_created(out_dir, before)
        raise
    if not quiet:
        click.echo(_summarize(common, numbers, name))
        click.echo(
            f"[{name}] wrote {out_dir}/ ({name}.json holds every number) in "
            f"{time.perf_counter() - start:.1f} s"
        )


def _describe(common, name: str) -> str:
    """One line about an experiment: ``experiments._common.describe`` when the checkout has
    it, else the first line of the experiment's docstring."""
    if hasattr(common, "describe"):
        return common.describe(name)
    doc = common.load_experiment(name, check=False).__doc__ or ""
    return doc.strip().split("\n")[0]


def _summarize(common, numbers, name: str) -> str:
    """The numbers an experiment returned: ``experiments._common.summarize`` when the
    checkout has it, else its JSON."""
    if hasattr(common, "summarize"):
        return common.summarize(numbers, name)
    import json

    from scoregen._util import jsonable

    return json.dumps(jsonable(numbers), indent=2)


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
