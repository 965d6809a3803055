"""Model sizes of the papers, the quadratic error, and the one-step trainer."""

from __future__ import annotations

import pytest
import torch

from rlopt.data import ImageData
from rlopt.models import MLP, ShallowCNN, build_model, count_parameters, quadratic_error
from rlopt.training import Trainer, build_seeded_model, make_optimizer, resolve_device


def test_parameter_counts_match_the_papers() -> None:
    assert count_parameters(ShallowCNN()) == 28_938  # Zhu et al. §4: "28938 parameters"
    assert count_parameters(MLP()) == 784 * 100 + 100 + 100 * 200 + 200 + 200 * 10 + 10


@pytest.mark.parametrize("name, shape", [("cnn", (5, 1, 28, 28)), ("mlp", (5, 784)), ("mlp-relu", (5, 1, 28, 28))])
def test_forward_shapes(name: str, shape: tuple[int, ...]) -> None:
    assert build_model(name).eval()(torch.rand(shape)).shape == (5, 10)  # type: ignore[arg-type]


def test_sigmoid_mlp_outputs_are_probabilities_relu_are_logits() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 784) * 5
    assert ((MLP()(x) > 0) & (MLP()(x) < 1)).all()
    assert (MLP(activation="relu")(x) < 0).any()


def test_quadratic_error_by_hand() -> None:
    out = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    labels = torch.tensor([0, 1])
    # example 1: ½(0.25 + 0.25) = 0.25; example 2: ½(1 + 1) = 1; mean 0.625
    assert quadratic_error(out, labels).item() == pytest.approx(0.625)


def make_trainer(data: ImageData, seed: int) -> Trainer:
    model = build_seeded_model("cnn", seed)
    opt = make_optimizer("sgd", model.parameters(), 0.1)
    return Trainer(model, opt, data.train.float_images(), data.train.labels, batch_size=32, seed=seed)


def test_trainer_is_seeded_and_learns(tiny_data: ImageData) -> None:
    a, b = make_trainer(tiny_data, 3), make_trainer(tiny_data, 3)
    losses_a = [a.train_step() for _ in range(60)]
    losses_b = [b.train_step() for _ in range(60)]
    assert losses_a == losses_b
    assert sum(losses_a[-10:]) < sum(losses_a[:10])
    result = a.evaluate(tiny_data.test.float_images(), tiny_data.test.labels)
    assert 0.0 <= result.accuracy <= 1.0 and result.loss > 0
    assert a.steps_done == 60
    other = make_trainer(tiny_data, 4)
    assert [other.train_step() for _ in range(5)] != losses_a[:5]


def test_seeded_model_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_seeded_model("cnn", 7)
    assert torch.equal(torch.rand(3), expected)


def test_the_momentum_family_is_heavy_ball_sgd_at_a_tenth_of_sgds_rates() -> None:
    from rlopt.training import MOMENTUM, OPTIMIZER_PRESETS

    opt = make_optimizer("momentum", ShallowCNN().parameters())
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["lr"]) == (MOMENTUM, False, OPTIMIZER_PRESETS["momentum"].lr)
    # the effective step lr / (1 − μ) spans the same range as plain SGD's rates
    low, high = OPTIMIZER_PRESETS["momentum"].lr_bounds
    assert (low / (1 - MOMENTUM), high / (1 - MOMENTUM)) == pytest.approx(OPTIMIZER_PRESETS["sgd"].lr_bounds)


def test_bad_inputs_are_clear_errors(tiny_data: ImageData) -> None:
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lbfgs", ShallowCNN().parameters())
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet")  # type: ignore[arg-type]
    model = ShallowCNN()
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(model, make_optimizer("sgd", model.parameters()), tiny_data.train.float_images(),
                tiny_data.train.labels, batch_size=0, seed=0)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            resolve_device("cuda")
