"""The compiled score: one graph for a whole σ ladder (a backend that counts compilations),
an eager fallback with one warning, channels_last where chosen, and the same samples."""

import warnings

import pytest
import torch

from scoregen import annealed_langevin, geometric_sigmas, sample
from scoregen.builtins import load_model
from scoregen.compiled import CHANNELS_LAST_MIN_BATCH, compile_score


class CountingBackend:
    """A torch.compile backend that runs the captured graph as it is and counts graphs."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["builtin:ncsn2d", "builtin:ncsn2d-dae"])
def test_the_first_level_compiles_and_no_other_level_does(name):
    model = load_model(name)
    backend = CountingBackend()
    score = compile_score(model, backend=backend)
    x0 = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    sigmas = geometric_sigmas(*reversed(model.sigma_range), 10)
    counts = []
    run = lambda s, cb=None: annealed_langevin(s, x0, sigmas, n_steps_each=3, callback=cb,  # noqa: E731
                                               generator=torch.Generator().manual_seed(1))  # fmt: skip
    compiled = run(score, lambda info: counts.append(backend.graphs))
    eager = run(model.score)
    assert counts[0] >= 1 and counts[-1] == counts[0], f"graphs after each step: {counts}"
    assert backend.graphs == 1, backend.graphs  # no graph breaks either
    assert score.compile_seconds is not None and score.fallback is None
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_a_failing_compile_falls_back_to_eager_with_one_warning():
    def broken(graph_module, example_inputs):
        raise RuntimeError("no C++ compiler here")

    model = load_model("builtin:ncsn2d-dae")
    score = compile_score(model, backend=broken)
    x = torch.randn(32, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            first = score(x, 0.5)
            second = score(x, 0.3)
    messages = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert len(messages) == 1 and "no C++ compiler here" in messages[0]
    assert score.fallback is not None and score.compile_seconds is None
    torch.testing.assert_close(first, model.score(x, 0.5))
    torch.testing.assert_close(second, model.score(x, 0.3))


def test_channels_last_is_measured_for_convolutional_models_and_changes_no_value():
    model = load_model("builtin:digits-dae")
    reference = load_model("builtin:digits-dae")
    x = torch.randn(CHANNELS_LAST_MIN_BATCH, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    score = compile_score(model, backend=CountingBackend())
    with torch.no_grad():
        out = score(x, 0.3)
        torch.testing.assert_close(out, reference.score(x, 0.3), rtol=1e-4, atol=1e-4)
    assert set(score.layout_times) == {"contiguous", "channels_last"}
    faster = min(score.layout_times, key=score.layout_times.get)
    assert score.channels_last == (faster == "channels_last")
    small = compile_score(load_model("builtin:digits-dae"), backend=CountingBackend())
    with torch.no_grad():
        small(x[:4], 0.3)
    assert small.channels_last is False and small.layout_times is None  # too few chains
    points = compile_score(load_model("builtin:ncsn2d-dae"), backend=CountingBackend())
    assert points.channels_last is False  # an MLP has no convolutions


@pytest.mark.slow
def test_the_inductor_compiled_oracle_samples_the_same_mixture():
    eager = sample("builtin:ncsn2d", 2000, seed=0, device="cpu")
    compiled = sample("builtin:ncsn2d", 2000, seed=0, device="cpu", compile=True)
    # same generator, same updates: equal up to float reassociation in the fused kernels
    from scoregen.gmm import preset
    from scoregen.metrics import mode_weights

    mixture = preset("ncsn2d")
    weights = mode_weights(compiled.double(), mixture) - mode_weights(eager.double(), mixture)
    assert weights.abs().max() < 0.01, weights
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3)
