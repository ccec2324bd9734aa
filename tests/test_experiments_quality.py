"""experiments.digits_quality and experiments.train_classifier at a tiny size: the table's rows,
rows drawn exactly as ``scoregen.sample`` draws, the figures, and a classifier file that loads."""

import json

import pytest
import torch
from PIL import Image

from experiments import digits_quality, train_classifier
from experiments._common import to_jsonable
from scoregen.data import load_dataset
from scoregen.models.classifier import classifier_accuracy, load_classifier

TINY_ROWS = (("annealed", 20), ("pc", 6), ("ode", 3), ("langevin_data", 5), ("ode", 3))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_quality")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        numbers = digits_quality.run(
            out, n_samples=24, n_seeds=2, rows=TINY_ROWS, n_reference_draws=4
        )
    finally:
        torch.set_num_threads(threads)
    return out, numbers


def test_writes_one_scored_row_per_setting_and_the_figures(result):
    out, numbers = result
    saved = json.loads((out / "digits_quality.json").read_text())
    assert saved == json.loads(json.dumps(to_jsonable(numbers)))
    assert [[r["sampler"], r["steps"]] for r in saved["rows"]] == [list(r) for r in TINY_ROWS]
    for row in saved["rows"]:
        assert len(row["seeds"]) == 2
        for quality in row["seeds"]:
            assert quality["n_evaluated"] == 24 and quality["n_draws"] == 4
            fd = quality["bands"]["fd"]
            assert fd["low"] <= fd["median"] <= fd["high"]
            assert quality["fd_ratio"] == pytest.approx(fd["value"] / fd["median"])
            assert sum(quality["class_counts"]) == 24
        ratios = sorted(q["fd_ratio"] for q in row["seeds"])
        assert row["summary"]["fd_ratio_range"] == pytest.approx(ratios)
        # the median of two is their mean
        assert row["summary"]["fd_ratio"] == pytest.approx(sum(ratios) / 2)
    # common random numbers: seed s draws the same noise for every row, so the two identical
    # ODE rows agree exactly, while a row's two seeds differ
    fd = [[q["bands"]["fd"]["value"] for q in row["seeds"]] for row in saved["rows"]]
    assert fd[2] == fd[4] and fd[2][0] != fd[2][1]
    nfe = {r["sampler"]: r["setting"]["nfe"] for r in saved["rows"]}
    # annealed: 10 levels × 2 steps + the denoising step; pc: 6 // 2 + 1 = 4 levels → 3
    # predictor + 3 corrector calls + 1; ode: 4 Karras levels → 3 Heun steps of 2 calls + 1;
    # langevin: 5 steps + the denoising step
    assert nfe == {"annealed": 21, "pc": 7, "ode": 7, "langevin_data": 6}
    table = (out / "digits_quality.md").read_text()
    assert table.count("\n| ") == 1 + len(TINY_ROWS)  # the rule line and one line per row
    assert digits_quality.summarize(numbers) == table.rstrip("\n")  # what the terminal shows
    for name in ("digits_quality_samples.png", "digits_quality_classes.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 200, name


@pytest.mark.parametrize(
    ("sampler", "steps", "options"),
    [("annealed", 20, {}), ("ode", 3, {"sigma_max": 2.0}), ("pc", 6, {"snr": 0.1})],
)
def test_a_row_draws_exactly_what_scoregen_sample_draws(sampler, steps, options):
    from scoregen import sample
    from scoregen.builtins import load_model

    model = load_model(digits_quality.CKPT, "cpu")
    with torch.no_grad():
        pixels, setting = digits_quality.draw(model, sampler, steps, 6, 17, **options)
        expected = sample(model, 6, sampler=sampler, steps=steps, seed=17, **options)
    assert torch.equal(pixels, expected)
    assert setting["start"].startswith("N(")


def test_train_classifier_writes_a_loadable_file_with_its_record(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net, record = train_classifier.train_classifier(
            epochs=1, out=tmp_path / "c.safetensors", log=None
        )
    finally:
        torch.set_num_threads(threads)
    loaded = load_classifier(tmp_path / "c.safetensors")
    data = load_dataset("digits")
    test = data.to_data_space(data.test)
    assert classifier_accuracy(loaded, test, data.test_labels) == record["held_out_accuracy"]
    assert loaded.record["data"]["n_test"] == 297 and loaded.record["training"]["epochs"] == 1
    # calibrated: the training digits' features have mean square 1
    features, _ = loaded.embed(data.to_data_space(data.train))
    assert features.square().mean().item() == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="data must be one of"):
        train_classifier.train_classifier("cifar10", out=None)
