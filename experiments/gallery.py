"""Regenerate the documentation gallery: run every experiment, copy its figures into
``docs/gallery/`` and write ``docs/gallery.md`` with each figure and the numbers behind it.

    python -m experiments.gallery                 # every experiment, default size
    python -m experiments.gallery --only digits   # one or more, the rest of the page kept

Each experiment runs at its default size into ``out/gallery/NAME`` (``--out``); the page
shows its figures and a compact view of the JSON it wrote (long lists shortened).
"""

from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list_experiments()
    chosen = args.only or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from {names}")
    gallery = DOCS / "gallery"
    gallery.mkdir(parents=True, exist_ok=True)
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
