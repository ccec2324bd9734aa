"""CPU speed of scoregen's hot paths, each beside the code it replaced, in one process.

    python -m experiments.bench.cpu                         # every section, torch's threads
    python -m experiments.bench.cpu --threads 1             # one intra-op thread
    python -m experiments.bench.cpu --section oracle --particles 10000,1000000
    python -m experiments.bench.cpu --quick                 # a few seconds

Sections (``--section``, repeatable; default all):

* ``oracle``: ``GaussianMixture.score`` against the previous ``[B, K, d]`` layout
  (experiments/bench/_oracle_reference.py) on the presets ``grid25`` (K = 25) and ``ncsn2d``
  (K = 2), at 10k and 1M particles drawn from ``p_σ``, σ = 0.1, in float64 and float32.
  ``--chunk 1048576`` (say) overrides the oracle's chunk size to compare settings.
* ``sigma_embedding``: the σ-conditioned MLP (128 × 3 hidden, 32-wide embedding) on a
  batch at one σ (a sampler's call), at ten levels (a ladder batch) and at distinct levels
  (a training batch), against its previous forward pass that embedded every example
  (experiments/bench/_embedding_reference.py).

Every section times its contenders in interleaved trials (``_timing.interleaved``: a fresh
random order every round, so a burst of load from other processes hits all alike), prints
the best and median milliseconds, the ratio previous / new of the best trials, and the
largest difference between their outputs. A section is one function in ``SECTIONS`` taking
the parsed options and returning its lines; later sections (compiled samplers, ``train()``
against a bare loop, start-up times) add one function each.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
from collections.abc import Callable

import torch

from experiments.bench import _embedding_reference, _oracle_reference
from experiments.bench._timing import interleaved, timed
from scoregen import gmm
from scoregen.gmm import preset
from scoregen.models.mlp import MLP, MLPConfig

ORACLE_MIXTURES = ("grid25", "ncsn2d")
ORACLE_SIGMA = 0.1
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def machine() -> str:
    """CPU model, core count, torch version and threads."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads"
    )


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> list[str]:
    """Rows of dicts as aligned text; columns are (key, header, format)."""
    cells = [[header for _, header, _ in columns]]
    cells += [[format(row[key], fmt) for key, _, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]


def _contest(contenders: dict[str, Callable], repeats: int, device: torch.device):
    """Best and median seconds of each contender and its last output."""
    for call in contenders.values():  # warm-up: allocator, threads, first-call dispatch
        call()
    times, outputs = interleaved(
        contenders, lambda name: timed(contenders[name], device), repeats, seed=0
    )
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    return best, median, outputs


# ---------------------------------------------------------------------- oracle
def oracle_rows(
    particles=(10_000, 1_000_000),
    dtypes=("float64", "float32"),
    mixtures=ORACLE_MIXTURES,
    repeats: int = 5,
    device: str = "cpu",
) -> list[dict]:
    """Time ``GaussianMixture.score`` (new) against the previous layout: one row per
    (mixture, particles, dtype), with both timings, the ratio and the outputs' difference."""
    device = torch.device(device)
    rows = []
    for name in mixtures:
        for n in particles:
            generator = torch.Generator().manual_seed(n)
            base = preset(name)
            points = base.sample(n, generator=generator)
            points = points + ORACLE_SIGMA * torch.randn(
                points.shape, generator=generator, dtype=points.dtype
            )
            for dtype_name in dtypes:
                mixture = base.to(device=device, dtype=DTYPES[dtype_name])
                x = points.to(device=device, dtype=DTYPES[dtype_name])
                contenders = {
                    "previous": lambda m=mixture, x=x: _oracle_reference.score(m, x, ORACLE_SIGMA),
                    "new": lambda m=mixture, x=x: m.score(x, ORACLE_SIGMA),
                }
                # small batches are noisier: more trials for the same wall time
                trials = repeats if n >= 100_000 else 4 * repeats
                best, median, out = _contest(contenders, trials, device)
                diff = (out["new"] - out["previous"]).abs().max() / out["previous"].abs().max()
                rows.append(
                    {
                        "mixture": name,
                        "particles": n,
                        "dtype": dtype_name,
                        "previous_ms": 1e3 * best["previous"],
                        "new_ms": 1e3 * best["new"],
                        "ratio": best["previous"] / best["new"],
                        "median_ratio": median["previous"] / median["new"],
                        "max_rel_diff": float(diff),
                    }
                )
    return rows


def oracle_report(rows: list[dict]) -> list[str]:
    lines = [
        f"== oracle: GaussianMixture.score, previous [B, K, d] layout vs new, σ = {ORACLE_SIGMA} ==",
        *_table(
            rows,
            [
                ("mixture", "mixture", ""),
                ("particles", "particles", ","),
                ("dtype", "dtype", ""),
                ("previous_ms", "previous ms", ".1f"),
                ("new_ms", "new ms", ".1f"),
                ("ratio", "previous/new", ".2f"),
                ("median_ratio", "(medians)", ".2f"),
                ("max_rel_diff", "max|Δ|/max|s|", ".1e"),
            ],
        ),
    ]
    # what a float32 user gains over the float64 default of before
    by_key = {(r["mixture"], r["particles"], r["dtype"]): r for r in rows}
    cross = [
        f"{mixture} {n:,}: {by_key[(mixture, n, 'float64')]['previous_ms'] / r['new_ms']:.2f}"
        for (mixture, n, dtype), r in by_key.items()
        if dtype == "float32" and (mixture, n, "float64") in by_key
    ]
    if cross:
        lines.append("new float32 vs previous float64 (previous/new): " + "; ".join(cross))
    return lines


def oracle_section(args) -> list[str]:
    saved = gmm._CHUNK_ELEMENTS, gmm._THREADED_CHUNK_ELEMENTS
    if args.chunk is not None:  # a tuning knob: the oracle's rows per chunk, in numbers
        gmm._CHUNK_ELEMENTS = gmm._THREADED_CHUNK_ELEMENTS = args.chunk
    try:
        rows = oracle_rows(args.particles, args.dtypes, repeats=args.repeats, device=args.device)
    finally:
        gmm._CHUNK_ELEMENTS, gmm._THREADED_CHUNK_ELEMENTS = saved
    lines = oracle_report(rows)
    if args.chunk is not None:
        lines.insert(1, f"(chunks of {args.chunk:,} numbers per intermediate, set by --chunk)")
    return lines


# ---------------------------------------------------------------------- σ embedding
def embedding_rows(batch: int = 10_000, repeats: int = 20, device: str = "cpu") -> list[dict]:
    """Time the MLP's forward pass, new against per-example embedding (previous), on a batch
    at one σ, at ten levels and at distinct levels; one row per case."""
    device = torch.device(device)
    torch.manual_seed(0)
    net = MLP(MLPConfig(shape=(2,), hidden=[128, 128, 128], embed_dim=32)).to(device).eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 2, generator=generator).to(device)
    log_sigma = torch.empty(batch).uniform_(-2.0, 1.0, generator=generator).to(device)
    ladder = torch.linspace(-2.0, 1.0, 10, device=device)[torch.arange(batch, device=device) % 10]
    one = torch.full((batch,), 0.25, device=device)
    cases = {
        # Denoiser passes one σ as [1]; a [B] tensor of one value is recognised (CPU only)
        "one σ, c_noise [1]": (one, one[:1]),
        "one σ, c_noise [B]": (one, one),
        "10 levels": (ladder, ladder),
        "distinct σ (training)": (log_sigma, log_sigma),
    }
    rows = []
    with torch.no_grad():
        for case, (per_example, ours) in cases.items():
            contenders = {
                "previous": lambda c=per_example: _embedding_reference.per_example_forward(
                    net, x, c
                ),
                "new": lambda c=ours: net(x, c),
            }
            best, median, out = _contest(contenders, repeats, device)
            rows.append(
                {
                    "case": case,
                    "batch": batch,
                    "previous_ms": 1e3 * best["previous"],
                    "new_ms": 1e3 * best["new"],
                    "ratio": best["previous"] / best["new"],
                    "median_ratio": median["previous"] / median["new"],
                    "max_abs_diff": float((out["new"] - out["previous"]).abs().max()),
                }
            )
    return rows


def embedding_report(rows: list[dict]) -> list[str]:
    return [
        "== sigma_embedding: MLP forward (2-D, 128 x 3, embed 32), previous per-example "
        "embedding vs new ==",
        *_table(
            rows,
            [
                ("case", "case", ""),
                ("batch", "batch", ","),
                ("previous_ms", "previous ms", ".2f"),
                ("new_ms", "new ms", ".2f"),
                ("ratio", "previous/new", ".2f"),
                ("median_ratio", "(medians)", ".2f"),
                ("max_abs_diff", "max|Δ|", ".1e"),
            ],
        ),
    ]


def embedding_section(args) -> list[str]:
    return embedding_report(embedding_rows(args.batch, 4 * args.repeats, args.device))


SECTIONS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "oracle": oracle_section,
    "sigma_embedding": embedding_section,
}


def _int_list(text: str) -> list[int]:
    return [int(item.replace("_", "")) for item in text.split(",") if item]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS), default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--particles", type=_int_list, default=[10_000, 1_000_000], help="oracle batch sizes"
    )
    parser.add_argument("--dtypes", type=lambda s: s.split(","), default=["float64", "float32"])
    parser.add_argument("--batch", type=int, default=10_000, help="σ-embedding batch size")
    parser.add_argument(
        "--chunk",
        type=lambda s: int(float(s)),
        default=None,
        help="oracle: numbers per intermediate in one chunk (default: the package's choice)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="trials per contender (large)")
    parser.add_argument(
        "--quick", action="store_true", help="20k particles, 2k batch, 2 trials: seconds"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        explicit = {a.split("=")[0] for a in argv}
        if "--particles" not in explicit:
            args.particles = [20_000]
        if "--batch" not in explicit:
            args.batch = 2_000
        if "--repeats" not in explicit:
            args.repeats = 2
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"scoregen CPU benchmarks, {now}")
    print(f"machine: {machine()}")
    print(f"command: python -m experiments.bench.cpu {' '.join(argv)}".rstrip())
    for name in args.section or list(SECTIONS):
        print()
        print("\n".join(SECTIONS[name](args)), flush=True)


if __name__ == "__main__":
    main()
