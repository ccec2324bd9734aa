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
* ``compile``: one annealed Langevin level with the eager score against the
  :func:`scoregen.compiled.compile_score` one (σ a tensor, one graph for every level), for the
  3 × 128 MLP at ``--batch`` chains and the digits U-Net at 64 and 512: ms per step, the
  compile time and the break-even number of steps. Not in ``--quick`` (compiling takes tens
  of seconds).
* ``startup``: fresh processes importing torch, importing scoregen, and answering
  ``scoregen --help`` (which imports no torch).
* ``readme``: the sampling time the README's first command prints, for this checkout and,
  with ``--baseline DIR``, for another commit's checkout, in alternating fresh processes.
* ``train_loop``: ``scoregen.train`` (fused AdamW, foreach clipping and EMA, the loss by σ
  band logged) against a bare training loop of the same model and data
  (experiments/bench/train_loop.py, also runnable alone).

Every section times its contenders in interleaved trials (``_timing.interleaved``: a fresh
random order every round, so a burst of load from other processes hits all alike), prints
the best and median milliseconds, the ratio previous / new of the best trials, and the
largest difference between their outputs. A section is one function in ``SECTIONS`` taking
the parsed options and returning its lines.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from experiments.bench import _embedding_reference, _oracle_reference, train_loop
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


def compile_rows(batches: dict[str, list[int]], steps: int, repeats: int) -> list[dict]:
    """Per-step time of an annealed Langevin level, eager score vs compiled score
    (:func:`scoregen.compiled.compile_score`), the compile time, and the break-even number of
    steps (compile time / time saved per step), for the MLP and the digits U-Net."""
    from scoregen import annealed_langevin
    from scoregen.builtins import load_model
    from scoregen.compiled import compile_score
    from scoregen.models import Denoiser, build_net

    models = {
        "mlp": lambda: Denoiser(build_net("mlp", shape=(2,))).eval().requires_grad_(False),
        "digits unet": lambda: load_model("builtin:digits-dae").denoiser,
    }
    rows = []
    for name, sizes in batches.items():
        for batch in sizes:
            denoiser = models[name]()
            shape = (batch, 2) if name == "mlp" else (batch, 1, 8, 8)
            x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0))
            eager_score = lambda x, s, d=denoiser: (d(x, s) - x) / s**2  # noqa: E731
            compiled = compile_score(denoiser, batch_size=batch)
            with torch.no_grad():
                compiled(x0, 1.0)  # compiles
            if compiled.fallback is not None:
                rows.append({"model": name, "batch": batch, "note": compiled.fallback})
                continue
            ladder = [2.0, 1.0]  # two levels: the second runs on the first's graph

            def level(score, x0=x0, ladder=ladder):
                return lambda: annealed_langevin(score, x0, ladder, n_steps_each=steps,
                                                 progress=False, final_denoise=False,
                                                 generator=torch.Generator().manual_seed(1))  # fmt: skip

            best, _, _ = _contest({"eager": level(eager_score), "compiled": level(compiled)}, repeats, torch.device("cpu"))  # fmt: skip
            per_eager = best["eager"] / (2 * steps)
            per_compiled = best["compiled"] / (2 * steps)
            saved = per_eager - per_compiled
            rows.append({
                "model": name, "batch": batch, "eager_ms": 1e3 * per_eager,
                "compiled_ms": 1e3 * per_compiled, "ratio": per_eager / per_compiled,
                "compile_s": compiled.compile_seconds,
                "break_even": compiled.compile_seconds / saved if saved > 0 else float("inf"),
                "channels_last": compiled.channels_last,
            })  # fmt: skip
    return rows


def compile_section(args) -> list[str]:
    batches = {"mlp": [args.batch], "digits unet": [64, 512]}
    rows = compile_rows(batches, 10 if args.quick else 50, args.repeats)
    lines = ["== compile: one annealed level, eager score vs torch.compile'd (σ a tensor) =="]
    good = [r for r in rows if "note" not in r]
    lines += _table(good, [("model", "model", "s"), ("batch", "batch", "d"),
                           ("eager_ms", "eager ms/step", ".3f"),
                           ("compiled_ms", "compiled ms/step", ".3f"),
                           ("ratio", "eager/compiled", ".2f"), ("compile_s", "compile s", ".1f"),
                           ("break_even", "break-even steps", ".0f")])  # fmt: skip
    lines += [f"{r['model']} batch {r['batch']}: compile failed ({r['note']})" for r in rows if "note" in r]  # fmt: skip
    lines.append("(channels_last, measured at the first call of a convolutional model: "
                 + ", ".join(f"{r['model']} {r['batch']}: {r['channels_last']}" for r in good) + ")")  # fmt: skip
    return lines


def _wall(command: list[str], env: dict | None = None) -> float:
    import subprocess
    import time

    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def startup_section(args) -> list[str]:
    """Wall time of starting the command line (``scoregen --help``), importing scoregen and
    importing torch (the floor of any command that computes), in fresh processes."""
    import shutil

    python = sys.executable
    script = shutil.which("scoregen") or str(Path(python).parent / "scoregen")
    commands = {
        "python -c 'import torch'": [python, "-c", "import torch"],
        "python -c 'import scoregen'": [python, "-c", "import scoregen"],
        "python -m scoregen --help": [python, "-m", "scoregen", "--help"],
    }
    if Path(script).exists():
        commands["scoregen --help"] = [script, "--help"]
    times, _ = interleaved(commands, lambda name: (_wall(commands[name]), None), args.repeats, seed=0)  # fmt: skip
    lines = ["== startup: fresh processes (best and median of the trials) =="]
    rows = [{"command": name, "best": min(t), "median": statistics.median(t)} for name, t in times.items()]  # fmt: skip
    lines += _table(rows, [("command", "command", "s"), ("best", "best s", ".3f"), ("median", "median s", ".3f")])  # fmt: skip
    return lines


README_COMMAND = ["sample", "--ckpt", "builtin:ncsn2d-dae", "--steps", "5000"]


def readme_section(args) -> list[str]:
    """The sampling time the README's first command prints, in fresh processes, for this
    checkout and (with ``--baseline DIR``, a checkout of another commit) for that one, in
    interleaved trials."""
    import re
    import subprocess
    import tempfile

    here = str(Path(__file__).resolve().parents[2])
    checkouts = {"this checkout": here}
    if args.baseline:
        checkouts["baseline " + args.baseline] = args.baseline

    def trial(name):
        with tempfile.TemporaryDirectory() as folder:
            env = {**os.environ, "PYTHONPATH": checkouts[name]}
            out = subprocess.run([sys.executable, "-m", "scoregen", *README_COMMAND, "--plot",
                                  "s.png"], cwd=folder, env=env, capture_output=True, text=True,
                                 check=True)  # fmt: skip
        return float(re.search(r" in ([\d.]+) s on", out.stdout).group(1)), None

    times, _ = interleaved(checkouts, trial, args.repeats, seed=0)
    rows = [{"checkout": n, "best": min(t), "median": statistics.median(t)} for n, t in times.items()]  # fmt: skip
    lines = [f"== readme: the sampling time `scoregen {' '.join(README_COMMAND)}` prints =="]
    lines += _table(rows, [("checkout", "checkout", "s"), ("best", "best s", ".2f"), ("median", "median s", ".2f")])  # fmt: skip
    if args.baseline:
        base = times["baseline " + args.baseline]
        lines.append(f"baseline / this checkout: {min(base) / min(times['this checkout']):.2f} (best), "
                     f"{statistics.median(base) / statistics.median(times['this checkout']):.2f} (median)")  # fmt: skip
    return lines


SECTIONS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "oracle": oracle_section,
    "sigma_embedding": embedding_section,
    "compile": compile_section,
    "startup": startup_section,
    "readme": readme_section,
    "train_loop": train_loop.cpu_section,
}
# --quick leaves out the sections whose floor is a compile of tens of seconds
QUICK_SECTIONS = ("oracle", "sigma_embedding", "startup")  # readme and compile: tens of s


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
        "--baseline",
        default=None,
        help="readme: a checkout of another commit to time beside this one "
        "(git worktree add /tmp/base <commit>)",
    )
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
    for name in args.section or (QUICK_SECTIONS if args.quick else list(SECTIONS)):
        print()
        print("\n".join(SECTIONS[name](args)), flush=True)


if __name__ == "__main__":
    main()
