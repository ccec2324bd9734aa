"""The gallery page builder (shortening, layout) and the gallery's numbers against reruns."""

import json

import pytest

from experiments._common import list_experiments
from experiments.gallery import (
    DOCS,
    NUMBERS_FILE,
    SPREAD_FILE,
    compact_json,
    compare_numbers,
    render,
    run_numbers,
    shorten,
)


def test_shorten_cuts_long_lists_and_rounds_floats():
    value = {"curve": list(range(20)), "x": 3.14159265, "nested": [{"y": [1.0] * 3}]}
    short = shorten(value, max_list=4)
    assert short["curve"] == [0, 1, "... 16 more ...", 18, 19]
    assert short["x"] == 3.1416
    assert short["nested"] == [{"y": [1.0, 1.0, 1.0]}]


def test_compact_json_round_trips_and_keeps_scalar_lists_on_one_line():
    value = {"a": [1, 2, 3], "b": {"c": [0.5, "x"]}}
    text = compact_json(value)
    assert json.loads(text) == value
    assert '"a": [1, 2, 3]' in text and '"c": [0.5, "x"]' in text


def test_render_lists_each_experiment_with_figures_and_command():
    entries = {
        "zeta": {"about": "Z.", "figures": ["zeta.png"], "numbers": {"n": 1}, "seconds": 1.0},
        "alpha": {"about": "A.", "figures": [], "numbers": {"n": 2}, "seconds": 2.0},
    }
    page = render(entries)
    assert page.index("## alpha") < page.index("## zeta")
    assert "![zeta](gallery/zeta.png)" in page
    assert "`python -m experiments.zeta`" in page


# ---------------------------------------------------------------------- staleness
# Each experiment's numbers in docs/gallery/numbers.json against a rerun at the same seed and
# thread count. Cheap experiments (a few seconds, no training) run in the default suite; those
# that train a network take 10-60 s each and are marked slow:
#   python -m pytest -m slow tests/test_gallery.py
FAST = ("posterior_mean_vs_map", "blurred_density", "trajectories")
SLOW = (
    "tweedie_arrows",  # trains an MLP (~10 s)
    "langevin_vs_annealed",  # trains an MLP (~16 s)
    "train_toy_mmse",  # trains an MLP for 4,000 steps (~20 s)
    "digits",  # trains a U-Net on 8x8 digits (~25 s)
    "score_fields",  # trains an MLP (~25 s)
    "score_matching",  # trains three MLPs (~45 s)
    "compare_architectures",  # trains six families on two datasets (~55 s)
    "inverse_problems",  # 6 problems x 7 solvers, 16 samples each (~5-15 min)
    "digits_quality",  # 7 sampler rows of 300 digits, 2 seeds, scored (~10 min)
)
REGENERATE = "python -m experiments.gallery --only {name}"


def gallery_entries() -> tuple[dict, dict]:
    numbers = json.loads((DOCS / "gallery" / NUMBERS_FILE).read_text())
    spread_path = DOCS / "gallery" / SPREAD_FILE
    spreads = json.loads(spread_path.read_text()) if spread_path.exists() else {}
    return numbers, spreads


def test_every_experiment_is_in_the_gallery_and_in_one_staleness_tier():
    numbers, spreads = gallery_entries()
    names = list_experiments()
    assert sorted(FAST + SLOW) == names, "classify each experiment as FAST or SLOW above"
    missing = [name for name in names if name not in numbers]
    assert not missing, f"not in the gallery: {missing}; run python -m experiments.gallery"
    assert all("seed" in numbers[name] and "threads" in numbers[name] for name in names)


@pytest.mark.parametrize(
    "name", [*FAST, *(pytest.param(name, marks=pytest.mark.slow) for name in SLOW)]
)
def test_gallery_numbers_match_a_rerun_at_the_same_seed(name, tmp_path):
    numbers, spreads = gallery_entries()
    entry = numbers[name]
    rerun = run_numbers(name, tmp_path, entry["seed"], entry["threads"])
    std = spreads.get(name, {}).get("std", {})
    problems = compare_numbers(entry["numbers"], rerun, std)
    shown = "\n  ".join(problems[:15]) + (
        f"\n  ... {len(problems) - 15} more" if len(problems) > 15 else ""
    )
    assert not problems, (
        f"docs/gallery/numbers.json is stale for {name} ({len(problems)} numbers differ from a "
        f"rerun at seed {entry['seed']}); regenerate with `{REGENERATE.format(name=name)}`:\n  {shown}"
    )


def test_compare_numbers_allows_float_rounding_and_the_seed_spread_but_not_more():
    stored = {"loss": 6.33, "n": 4000, "w": [0.8, 0.2], "kind": "mlp", "seconds": 7.5}
    assert compare_numbers(stored, {**stored, "seconds": 99.0}) == []  # wall times never count
    # rendered tables repeat the numbers with their wall times: compared number by number
    tables = {"table": "| 1.40 | 67 |", "table_markdown": "| 1.40 | 67 |"}
    assert compare_numbers({**stored, **tables}, {**stored, "table": "| 1.40 | 93 |",
                                                  "table_markdown": "| 1.40 | 93 |"}) == []  # fmt: skip
    assert compare_numbers(stored, {**stored, "loss": 6.33 * (1 + 1e-9)}) == []
    assert compare_numbers(stored, {**stored, "loss": 0.577})[0].startswith("loss: gallery 6.33")
    # with a seed spread of 0.01, a difference of 4·√2·0.01 = 0.0566 is the limit
    assert compare_numbers(stored, {**stored, "loss": 6.38}, {"loss": 0.01}) == []
    assert compare_numbers(stored, {**stored, "loss": 6.39}, {"loss": 0.01}) != []
    assert compare_numbers(stored, {**stored, "w": [0.79, 0.21]}, {"w[0]": 0.01}) == [
        "w[1]: gallery 0.2, rerun 0.21 (|Δ| 0.01 > tolerance 2.1e-07, no seed spread)"
    ]
    assert compare_numbers(stored, {**stored, "kind": "unet"}) == [
        "kind: gallery 'mlp', rerun 'unet'"
    ]
    assert compare_numbers(stored, {**stored, "w": [0.8]}) == [
        "w[1]: in the gallery, not in the rerun",
        "w.len: gallery 2, rerun 1 (|Δ| 1 > tolerance 2e-06, no seed spread)",
    ]
    assert compare_numbers(stored, {"n": 4000, "w": [0.8, 0.2], "kind": "mlp", "extra": 1}) == [
        "loss: in the gallery, not in the rerun",
        "extra: in the rerun, not in the gallery",
    ]
