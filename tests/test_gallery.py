"""The gallery page builder: shortening of long number lists and the page layout."""

import json

from experiments.gallery import compact_json, render, shorten


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
