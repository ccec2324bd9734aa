"""Regenerate the documentation gallery: run every experiment, copy its figures into
``docs/gallery/`` and write ``docs/gallery.md`` with each figure and the numbers behind it.

    python -m experiments.gallery                 # every experiment, default size
    python -m experiments.gallery --only digits   # one or more, the rest of the page kept
    python -m experiments.gallery --spread        # measure the seed-to-seed spread (slow)

Each experiment runs at its default size into ``out/gallery/NAME`` (``--out``); the page
shows its figures and a compact view of the JSON it wrote (long lists shortened).

``docs/gallery/numbers.json`` keeps every experiment's numbers with the seed and thread
count of the run; ``tests/test_gallery.py`` reruns the experiments and compares
(:func:`compare_numbers`). Its tolerance for each number comes from
``docs/gallery/spread.json``: the standard deviation of that number over ``--spread-seeds``
seeds (``--spread``). A number whose value does not depend on the seed must match to
floating-point precision; one that does may differ by ``SPREAD_Z`` times the standard
deviation of a difference of two runs (``√2`` times the seed-to-seed standard deviation),
which is what a different platform or thread count can cause at the same seed, and much
less than what a changed experiment causes.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path

import torch

from experiments._common import list_experiments, load_experiment, to_jsonable
from scoregen._io import atomic_write

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FIGURE_SUFFIXES = (".png", ".gif")
# Lists longer than this are shown as their first and last entries.
MAX_LIST = 8
NUMBERS_FILE = "numbers.json"
SPREAD_FILE = "spread.json"
# Tolerance of the staleness test, in standard deviations of a difference of two runs.
SPREAD_Z = 4.0
SPREAD_SEEDS = 5
# Floating-point slack for numbers that do not depend on the seed.
REL_TOL, ABS_TOL = 1e-6, 1e-9
# Numbers that measure the machine, not the experiment (wall times, thread counts, paths
# under the output folder), and tables rendered as text (they repeat numbers compared one by
# one, with their wall times): a rerun never compares them.
VOLATILE_KEY = re.compile(
    r"second|time|timing|_s$|^ms_per_step$|^machine$|^torch_threads$|^checkpoint$"
    r"|^table$|_markdown$"
)


def shorten(value, max_list: int = MAX_LIST):
    """A copy of a JSON value with long lists cut to their ends and floats to 5 significant digits."""
    if isinstance(value, dict):
        return {k: shorten(v, max_list) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > max_list:
            head = [shorten(v, max_list) for v in value[: max_list // 2]]
            tail = [shorten(v, max_list) for v in value[-(max_list // 2) :]]
            return [*head, f"... {len(value) - max_list} more ...", *tail]
        return [shorten(v, max_list) for v in value]
    if isinstance(value, float):
        return float(f"{value:.5g}")
    return value


def compact_json(value) -> str:
    """Indented JSON with every list of plain values kept on one line."""
    text = json.dumps(value, indent=2)
    return re.sub(
        r"\[[^\[\]{}]*\]",
        lambda m: " ".join(m.group(0).split()).replace("[ ", "[").replace(" ]", "]"),
        text,
    )


def first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def flatten(value, path: str = "") -> dict[str, object]:
    """The leaves of a JSON value by path (``a.b[2].c``), machine-dependent keys left out."""
    if isinstance(value, dict):
        leaves = {}
        for key, sub in value.items():
            if not VOLATILE_KEY.search(str(key)):
                leaves.update(flatten(sub, f"{path}.{key}" if path else str(key)))
        return leaves
    if isinstance(value, list):
        leaves = {f"{path}.len": len(value)}
        for i, sub in enumerate(value):
            leaves.update(flatten(sub, f"{path}[{i}]"))
        return leaves
    return {path: value}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def compare_numbers(stored, rerun, spread: dict[str, float] | None = None) -> list[str]:
    """Where ``rerun`` differs from ``stored`` beyond the tolerance, one line per number.

    A number with a seed-to-seed standard deviation ``s`` in ``spread`` may differ by
    ``SPREAD_Z · √2 · s``; every other number by ``REL_TOL`` relative (``ABS_TOL`` absolute);
    strings, booleans without a spread and None must be equal, and both must have the same
    leaves.
    """
    spread = spread or {}
    old, new = flatten(stored), flatten(rerun)
    problems = [f"{path}: in the gallery, not in the rerun" for path in old if path not in new]
    problems += [f"{path}: in the rerun, not in the gallery" for path in new if path not in old]
    for path in sorted(set(old) & set(new)):
        a, b = old[path], new[path]
        if _is_number(a) and _is_number(b):
            s = spread.get(path, 0.0)
            tol = max(ABS_TOL, REL_TOL * max(abs(a), abs(b))) + SPREAD_Z * math.sqrt(2) * s
            if abs(a - b) > tol:
                why = f"seed spread {s:.3g}" if s else "no seed spread"
                problems.append(
                    f"{path}: gallery {a!r}, rerun {b!r} (|Δ| {abs(a - b):.3g} > tolerance {tol:.3g}, {why})"
                )
        elif a != b:
            problems.append(f"{path}: gallery {a!r}, rerun {b!r}")
    return problems


def run_numbers(name: str, out_dir: Path, seed: int, threads: int) -> dict:
    """Run experiment ``name`` at its default size on ``threads`` torch threads; its numbers."""
    module = load_experiment(name)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return to_jsonable(module.run(out_dir=out_dir, full=False, seed=seed))
    finally:
        torch.set_num_threads(before)


def measure_spread(name: str, out_root: Path, seeds, threads: int) -> dict[str, float]:
    """The sample standard deviation over ``seeds`` of every number of experiment ``name``
    (only those that vary, and present in every run)."""
    runs = []
    for seed in seeds:
        start = time.perf_counter()
        runs.append(flatten(run_numbers(name, out_root / f"{name}_seed{seed}", seed, threads)))
        print(
            f"[gallery] spread {name} seed {seed}: {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )
    spread = {}
    for path in runs[0]:
        if re.search(r"(^|\.)seed$", path):
            continue  # the seed itself: compared exactly
        values = [run.get(path) for run in runs]
        if all(_is_number(v) for v in values):
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            if std > 0:
                spread[path] = float(f"{std:.4g}")
    return spread


def run_one(name: str, out_root: Path, gallery: Path, seed: int) -> dict:
    """Run experiment ``name``; copy its figures into ``gallery``; return its page entry."""
    module = load_experiment(name)
    out_dir = out_root / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    start = time.perf_counter()
    numbers = module.run(out_dir=out_dir, full=False, seed=seed)
    seconds = time.perf_counter() - start
    figures = []
    for path in sorted(out_dir.iterdir()):
        if path.suffix in FIGURE_SUFFIXES:
            # Figures named after their experiment keep their name; others get it as a prefix.
            target = gallery / (path.name if path.stem.startswith(name) else f"{name}__{path.name}")
            shutil.copyfile(path, target)
            figures.append(target.name)
    print(f"[gallery] {name}: {seconds:.1f} s, {len(figures)} figure(s)", file=sys.stderr)
    return {
        "name": name,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "about": first_paragraph(module.__doc__),
        "figures": figures,
        "numbers": to_jsonable(numbers),
        "seconds": round(seconds, 1),
    }


def render(entries: dict[str, dict]) -> str:
    lines = [
        "# Gallery",
        "",
        "Every figure of `experiments/`, at its default size, with the numbers its run wrote.",
        "Regenerate all of it with `python -m experiments.gallery` (or one experiment with",
        "`python -m experiments.gallery --only NAME`); each experiment also runs on its own as",
        "`scoregen experiment NAME --out DIR` or `python -m experiments.NAME --out DIR`.",
        "Wall times are from the machine that last built the page (a shared 2-core CPU).",
        "`tests/test_gallery.py` reruns the experiments at the recorded seed and fails when a",
        "number here differs by more than the seed-to-seed spread allows",
        "(`python -m experiments.gallery --spread` measures it).",
        "",
    ]
    for name in sorted(entries):
        entry = entries[name]
        lines += [f"## {name}", "", entry["about"], ""]
        lines += [f"![{name}](gallery/{figure})" for figure in entry["figures"]]
        numbers = compact_json(shorten(entry["numbers"]))
        lines += [
            "",
            f"Command: `python -m experiments.{name}` ({entry['seconds']} s). Numbers:",
            "",
            "```json",
            numbers,
            "```",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.gallery", description=__doc__)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="rebuild just these")
    parser.add_argument("--out", type=Path, default=Path("out") / "gallery")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--spread",
        action="store_true",
        help=f"rerun each experiment at --spread-seeds seeds and write {SPREAD_FILE} (no page)",
    )
    parser.add_argument("--spread-seeds", type=int, default=SPREAD_SEEDS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list_experiments()
    chosen = args.only or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from {names}")
    gallery = DOCS / "gallery"
    gallery.mkdir(parents=True, exist_ok=True)
    if args.spread:
        if args.spread_seeds < 2:
            parser.error("--spread-seeds must be at least 2")
        spread_store = gallery / SPREAD_FILE
        spreads = json.loads(spread_store.read_text()) if spread_store.exists() else {}
        spreads = {k: v for k, v in spreads.items() if k in names}
        for name in chosen:
            spreads[name] = {
                "seeds": list(range(args.spread_seeds)),
                "threads": args.threads,
                "std": measure_spread(
                    name, args.out / "spread", range(args.spread_seeds), args.threads
                ),
            }
            text = json.dumps(spreads, indent=1, sort_keys=True) + "\n"
            atomic_write(spread_store, lambda f, text=text: f.write(text), mode="w")
        print(f"[gallery] wrote {spread_store}", file=sys.stderr)
        return
    store = gallery / NUMBERS_FILE
    entries = json.loads(store.read_text()) if store.exists() else {}
    entries = {k: v for k, v in entries.items() if k in names}
    for name in chosen:
        for old in entries.get(name, {}).get("figures", []):
            (gallery / old).unlink(missing_ok=True)
        entries[name] = run_one(name, args.out, gallery, args.seed)
        text = json.dumps(entries, indent=1) + "\n"
        atomic_write(store, lambda f, text=text: f.write(text), mode="w")
    page = render(entries)
    atomic_write(DOCS / "gallery.md", lambda f: f.write(page), mode="w")
    print(f"[gallery] wrote {DOCS / 'gallery.md'} ({len(entries)} experiments)", file=sys.stderr)


if __name__ == "__main__":
    main()
