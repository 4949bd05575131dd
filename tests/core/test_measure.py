"""Data forms, results, costs, determinism."""

import json

import pytest
import torch
from torch import nn

from sharpness import Result, SharpnessError, Spec, measure
from testkit import KeywordModel, SmallCNN, classification_data, mlp


def test_pair_data_draws_a_seeded_subset_split_into_m_batches() -> None:
    data = classification_data(n=200)
    spec = Spec(case="average", norm="l2", rho=0.05, m=32, n_examples=96, n_iters=4)
    res = measure(mlp(), data, spec)
    assert len(res.per_batch) == 3
    assert res.n_forward == 3 * (1 + 4) and res.n_backward == 0


@pytest.mark.parametrize(("n_iters", "restarts", "batches"), [(20, 1, 2), (7, 3, 1), (1, 2, 3)])
def test_worst_case_costs_one_pass_per_iteration(n_iters: int, restarts: int, batches: int) -> None:
    x, y = classification_data(n=16 * batches)
    data = [(x[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16]) for i in range(batches)]
    spec = Spec(case="worst", norm="linf", rho=0.01, n_iters=n_iters, n_restarts=restarts)
    res = measure(mlp(), data, spec)
    # A reduced-precision search (fast mode on a GPU) re-evaluates each best point: one more forward per m-batch.
    reevaluated = res.mode == "fast" and res.details["fast"]["precision"] != "fp32"
    assert res.n_backward == batches * restarts * n_iters
    assert res.n_forward == batches * (1 + restarts * (n_iters + 1) + reevaluated)
    assert len(res.per_batch) == batches


def test_same_seed_same_result_other_seed_other_draws() -> None:
    data = classification_data(n=128)
    spec = Spec(case="average", norm="l2", rho=0.1, m=32, n_examples=64, n_iters=6)
    a, b = measure(mlp(), data, spec), measure(mlp(), data, spec)
    assert a.per_batch == b.per_batch and a.stderr == b.stderr
    assert measure(mlp(), data, spec.replace(seed=1)).per_batch != a.per_batch
    w = spec.replace(case="worst", init="random", n_iters=5)
    assert measure(mlp(), data, w).per_batch == measure(mlp(), data, w).per_batch


def test_hugging_face_batches_equal_tuple_batches() -> None:
    x, y = classification_data(n=32)
    net = mlp()
    mask = torch.ones_like(x)
    spec = Spec(case="worst", norm="l2", rho=0.2, n_iters=8, logit_norm=True)
    as_tuple = measure(net, [(x, y)], spec)
    as_mapping = measure(KeywordModel(net), [{"input_ids": x, "attention_mask": mask, "labels": y}], spec.replace(
        params=r"^net\."))
    as_pair = measure(KeywordModel(net), ({"input_ids": x, "attention_mask": mask}, y),
                      spec.replace(m=32, n_examples=32))
    assert as_mapping.value == pytest.approx(as_tuple.value, rel=1e-12)
    assert as_mapping.error_increase == as_tuple.error_increase
    assert as_pair.value == pytest.approx(as_tuple.value, rel=1e-12)


class TupleOutput(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return logits, logits.sum()


def test_tuple_outputs_are_unwrapped_like_logits() -> None:
    x, y = classification_data(n=32)
    spec = Spec(case="worst", norm="linf", rho=0.05, n_iters=5)
    net = mlp()
    assert measure(TupleOutput(net), [(x, y)], spec).value == measure(net, [(x, y)], spec).value


def test_single_batch_stderr_rules() -> None:
    data = classification_data(n=32)
    worst = measure(mlp(), [data], Spec(case="worst", norm="l2", rho=0.1, n_iters=3))
    assert worst.stderr is None
    avg = measure(mlp(), [data], Spec(case="average", norm="l2", rho=0.1, n_iters=8))
    assert avg.stderr is not None and avg.stderr > 0
    two = measure(mlp(), [data, data], Spec(case="worst", norm="l2", rho=0.1, n_iters=3))
    assert two.stderr == 0.0  # identical batches, identical searches


def test_result_to_dict_is_json_and_records_environment() -> None:
    res = measure(mlp(), [classification_data(n=16)], Spec(case="worst", norm="linf", rho=0.01, n_iters=2))
    record = json.loads(json.dumps(res.to_dict()))
    assert record["torch_version"] == torch.__version__
    assert record["device"] == "cpu" and record["dtype"] == "float64"
    assert Spec.from_dict(record["spec"]) == res.spec and record["spec_str"] == str(res.spec)
    assert isinstance(res, Result) and res.seconds > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_works_in_the_models_dtype(dtype: torch.dtype) -> None:
    x, y = classification_data(n=32, dtype=dtype)
    res = measure(mlp(dtype=dtype), [(x, y)], Spec(case="worst", norm="linf", rho=0.01, n_iters=4))
    assert res.dtype == str(dtype).removeprefix("torch.")
    assert res.value > 0


def test_error_increase_reported_for_classifiers_only() -> None:
    x, y = classification_data(n=32)
    res = measure(mlp(), [(x, y)], Spec(case="worst", norm="linf", rho=0.5, n_iters=10))
    assert res.error_increase is not None and 0 < res.error_increase <= 1
    reg = measure(mlp(k=1), [(x, torch.randn(32, 1, dtype=torch.float64))],
                  Spec(case="worst", norm="linf", rho=0.1, n_iters=3), loss_fn=nn.functional.mse_loss)
    assert reg.error_increase is None and reg.clean_error is None


class Sequence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.out = nn.Linear(8, 11, bias=False)
        self.out.weight = self.emb.weight  # tied

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.emb(tokens)))


def test_sequence_outputs_ignore_minus_100_and_tied_weights_count_once() -> None:
    torch.manual_seed(0)
    model = Sequence().double()
    tokens = torch.randint(0, 11, (4, 6))
    target = torch.randint(0, 11, (4, 6))
    target[:, :2] = -100
    spec = Spec(case="worst", norm="l2", rho=0.1, n_iters=5)
    res = measure(model, [(tokens, target)], spec)
    logits = model(tokens)
    keep = target != -100
    expected = nn.functional.cross_entropy(logits[keep], target[keep])
    assert res.clean_loss == pytest.approx(float(expected.detach()), rel=1e-12)
    assert res.error_increase is None
    assert res.n_perturbed == 11 * 8
    assert res.value > 0


def test_batchnorm_and_dropout_are_evaluated_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    model.bn.running_mean.normal_()
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))
    model.train()
    spec = Spec(case="average", norm="l2", rho=1e-9, n_iters=2)
    res = measure(model, [(x, y)], spec)
    model.eval()
    with torch.no_grad():
        clean = float(nn.functional.cross_entropy(model(x), y))
    assert res.clean_loss == pytest.approx(clean, rel=1e-6)


def test_trainable_only_perturbs_exactly_the_parameters_that_require_gradients() -> None:
    model, (x, y) = mlp(), classification_data()
    model[0].requires_grad_(False)  # a frozen first layer
    spec = Spec(case="worst", norm="l2", rho=0.1, m=32, n_examples=64, trainable_only=True)
    both = measure(model, (x, y), spec)
    by_name = measure(model, (x, y), Spec(case="worst", norm="l2", rho=0.1, m=32, n_examples=64, params=r"^2\."))
    assert both.n_perturbed == by_name.n_perturbed == model[2].weight.numel() + model[2].bias.numel()
    assert both.value == by_name.value
    assert str(spec).endswith("trainable_only=true") and not model[0].weight.requires_grad
    model[2].requires_grad_(False)
    with pytest.raises(SharpnessError, match="no trainable"):
        measure(model, (x, y), spec)


def test_half_precision_models_get_their_loss_in_float32() -> None:
    model = mlp(dtype=torch.bfloat16)
    x, y = classification_data(dtype=torch.bfloat16)
    res = measure(model, [(x, y)], Spec(case="worst", norm="linf", rho=0.01, n_iters=3))
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(model(x).float(), y))
    assert res.clean_loss == expected and res.dtype == "bfloat16"
    # a bfloat16 loss would be a multiple of 2^-7 near 1: this one is not
    assert res.clean_loss * 2**7 != round(res.clean_loss * 2**7)


def test_a_progress_bar_counts_the_passes_and_leaves_no_trace(capsys: pytest.CaptureFixture[str]) -> None:
    model, (x, y) = mlp(), classification_data()
    spec = Spec(case="worst", norm="l2", rho=0.1, m=32, n_examples=64, n_iters=5)
    quiet = measure(model, (x, y), spec, progress=False)
    assert capsys.readouterr().err == ""
    shown = measure(model, (x, y), spec, progress=True)
    err = capsys.readouterr().err
    assert shown.value == quiet.value and "pass" in err and f"/{(5 + 1 + 1) * 2}" in err
    assert not model._forward_hooks  # the counting hook is gone
    measure(model, (x, y), spec)  # stderr is not a terminal here: no bar
    assert capsys.readouterr().err == ""


def test_a_progress_bar_that_redraws_leaves_the_outputs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm's ``update`` returns True when it redraws; a forward hook returning it would replace the logits."""
    import tqdm.auto

    def redraw(self: object, n: int = 1) -> bool:
        return True

    monkeypatch.setattr(tqdm.auto.tqdm, "update", redraw)
    model, (x, y) = mlp(), classification_data()
    spec = Spec(case="worst", norm="l2", rho=0.1, m=32, n_examples=64, n_iters=3)
    assert measure(model, (x, y), spec, progress=True).value == measure(model, (x, y), spec, progress=False).value
