"""LinearBN (recomputing Linear + BatchNorm + ReLU [+ gather] [+ max]) equals the composition of PyTorch modules:
outputs, every gradient and the running statistics, in float64 to 1e-10. Its custom autograd functions keep their
tensors through ``save_for_backward`` only, and activation checkpointing around a layer changes nothing."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from autograd_checks import (
    CHECKPOINT_MODES,
    assert_checkpointing_changes_nothing,
    assert_equal_lists,
    assert_saved_tensors_only,
    checkpointed_twin,
)
from pointgeo.nn import linear_bn
from pointgeo.nn.linear_bn import LinearBN, LinearBNChain, PooledMLP


def reference(layer: LinearBN, a: torch.Tensor, features: torch.Tensor | None, idx: torch.Tensor | None,
              bn: nn.BatchNorm1d) -> torch.Tensor:
    """The same layer from stock modules: gather + concat, matmul, BatchNorm1d, ReLU, amax."""
    x = a
    weight = layer.weight
    if features is not None:
        gathered = torch.stack([features[b][idx[b]] for b in range(idx.shape[0])])
        x = torch.cat([a, gathered], dim=-1)
        weight = torch.cat([layer.weight, layer.gathered_weight], dim=1)
    y = x @ weight.t()
    y = bn(y.reshape(-1, y.shape[-1])).view(y.shape)
    if layer.relu:
        y = torch.nn.functional.leaky_relu(y, layer.negative_slope)
    return y.max(dim=-2).values if layer.pool else y


@pytest.mark.parametrize("gathered", [0, 5])
@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("relu,slope", [(False, 0.0), (True, 0.0), (True, 0.2)])
@pytest.mark.parametrize("training", [True, False])
def test_matches_stock_modules(gathered: int, pool: bool, relu: bool, slope: float, training: bool,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linear_bn, "CHUNK_ROWS", 14)  # the pooled training path in several chunks of 2 groups
    torch.manual_seed(0)
    layer = LinearBN(4, 6, gathered_channels=gathered, relu=relu, negative_slope=slope, pool=pool).double()
    bn = nn.BatchNorm1d(6).double()
    with torch.no_grad():
        layer.bn.weight.uniform_(-1, 1)  # negative scales too: the max must not commute blindly
        layer.bn.bias.uniform_(-1, 1)
        layer.bn.running_mean.uniform_(-1, 1)
        layer.bn.running_var.uniform_(0.5, 2)
    bn.load_state_dict(layer.bn.state_dict())
    layer.train(training), bn.train(training)
    a = torch.randn(3, 5, 7, 4, dtype=torch.float64, requires_grad=True)
    features = torch.randn(3, 9, gathered, dtype=torch.float64, requires_grad=True) if gathered else None
    idx = torch.randint(0, 9, (3, 5, 7)) if gathered else None
    out = layer(a, features, idx)
    bn.weight = layer.bn.weight  # share the affine parameters so their gradients add up in one place
    bn.bias = layer.bn.bias
    expected = reference(layer, a, features, idx, bn)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    if training:  # the running statistics were updated exactly once, as BatchNorm1d does
        torch.testing.assert_close(layer.bn.running_mean, bn.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.bn.running_var, bn.running_var, rtol=0, atol=1e-12)
    upstream = torch.randn_like(out)
    inputs = [a, layer.weight, layer.bn.weight, layer.bn.bias] + ([features, layer.gathered_weight] if gathered else [])
    ours = torch.autograd.grad(out, inputs, upstream)
    theirs = torch.autograd.grad(expected, inputs, upstream)
    for g_ours, g_theirs in zip(ours, theirs):
        torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=1e-10)


def pooled_gradients(dtype: torch.dtype, ours: bool) -> list[Tensor]:
    """Gradients (as float64) of a pooled training LinearBN on offset, non-centred inputs of realistic size, from
    our layer or from the stock modules, with the same parameters and data for every dtype."""
    torch.manual_seed(2)
    layer, bn = LinearBN(32, 48, pool=True), nn.BatchNorm1d(48)
    with torch.no_grad():
        layer.bn.weight.uniform_(-1, 1)
    bn.load_state_dict(layer.bn.state_dict())
    layer, bn = layer.to(dtype), bn.to(dtype)
    bn.weight, bn.bias = layer.bn.weight, layer.bn.bias
    g = torch.Generator().manual_seed(5)
    a = (torch.randn(4, 256, 32, 32, generator=g).relu() + 3.0).to(dtype).requires_grad_()
    out = layer(a) if ours else reference(layer, a, None, None, bn)
    upstream = torch.randn(out.shape, generator=g).to(dtype)
    return [t.double() for t in torch.autograd.grad(out, [a, layer.weight, layer.bn.weight, layer.bn.bias], upstream)]


def test_pooled_training_backward_is_as_accurate_as_the_stock_modules_in_float32() -> None:
    """The pooled training path's Gram-matrix form of BatchNorm's backward is exact in float64 and no less accurate
    in float32 than the stock modules (both against float64), on offset inputs where cancellation could bite."""
    truth = pooled_gradients(torch.float64, ours=False)
    for g_ours, g_true in zip(pooled_gradients(torch.float64, ours=True), truth):
        torch.testing.assert_close(g_ours, g_true, rtol=0, atol=1e-10)
    ours, stock = pooled_gradients(torch.float32, ours=True), pooled_gradients(torch.float32, ours=False)
    for g_ours, g_stock, g_true in zip(ours, stock, truth):
        error, stock_error = (g_ours - g_true).abs().max(), (g_stock - g_true).abs().max()
        assert error <= max(2 * stock_error, 1e-6 * g_true.abs().max()), (error, stock_error)


def test_gradcheck() -> None:
    torch.manual_seed(1)
    layer = LinearBN(3, 4, gathered_channels=2, pool=True).double()
    a = torch.randn(2, 3, 5, 3, dtype=torch.float64, requires_grad=True)
    f = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 6, (2, 3, 5))
    assert torch.autograd.gradcheck(lambda a, f: layer(a, f, idx), (a, f))


def test_bad_arguments() -> None:
    layer = LinearBN(3, 4, gathered_channels=2)
    with pytest.raises(ValueError, match="gathered_channels"):
        layer(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="more than one value"):
        LinearBN(3, 4)(torch.randn(1, 3))


def stock_mlp(mlp: PooledMLP | LinearBNChain) -> nn.Sequential:
    """The stock modules of a PooledMLP or LinearBNChain: Linear (no bias), BatchNorm1d (sharing the affine
    parameters), activation where the layer has one (a PooledMLP's max over the neighbour axis comes after)."""
    layers: list[nn.Module] = []
    for layer in mlp:
        linear = nn.Linear(layer.weight.shape[1], layer.weight.shape[0], bias=False)
        linear.weight = layer.weight
        bn = nn.BatchNorm1d(layer.weight.shape[0]).to(layer.weight.dtype)
        bn.load_state_dict(layer.bn.state_dict())
        bn.weight, bn.bias = layer.bn.weight, layer.bn.bias
        layers += [linear, Channels(bn), nn.LeakyReLU(layer.negative_slope) if layer.relu else nn.Identity()]
    return nn.Sequential(*layers)


def random_affine(layers: nn.Sequential) -> nn.Sequential:
    """BatchNorm scales and shifts drawn from U(-1, 1) (scales of both signs) in every layer."""
    with torch.no_grad():
        for layer in layers:
            layer.bn.weight.uniform_(-1, 1)
            layer.bn.bias.uniform_(-1, 1)
    return layers


def assert_same_running_statistics(layers: nn.Sequential, stock: nn.Sequential) -> None:
    """Each layer's running estimates equal the stock BatchNorm's, updated exactly once."""
    for layer, bn in zip(layers, stock[1::3]):
        torch.testing.assert_close(layer.bn.running_mean, bn.bn.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.bn.running_var, bn.bn.running_var, rtol=0, atol=1e-12)
        assert layer.bn.num_batches_tracked == bn.bn.num_batches_tracked == 1


class Channels(nn.Module):
    """Apply a BatchNorm1d to the last axis of any tensor."""

    def __init__(self, bn: nn.BatchNorm1d) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x.reshape(-1, x.shape[-1])).view(x.shape)


@pytest.mark.parametrize("widths", [(3, 5), (3, 5, 6), (4, 6, 5, 7)])
@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("input_grad", [True, False])
def test_pooled_mlp_matches_stock_modules(widths: tuple[int, ...], slope: float, input_grad: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs, running statistics and every gradient in float64 to 1e-10, over several chunks (the last one short),
    with BatchNorm scales of both signs."""
    monkeypatch.setattr(linear_bn, "CHUNK_ROWS", 64)
    torch.manual_seed(0)
    mlp = random_affine(PooledMLP(widths, negative_slope=slope).double().train())
    stock = stock_mlp(mlp)
    a = (torch.randn(3, 23, 9, widths[0], dtype=torch.float64) + 2).requires_grad_(input_grad)  # 621 rows
    out = mlp(a)
    expected = stock(a).amax(dim=-2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    assert_same_running_statistics(mlp, stock)
    upstream = torch.randn_like(out)
    inputs = [p for p in mlp.parameters()] + ([a] if input_grad else [])
    for g_ours, g_theirs in zip(torch.autograd.grad(out, inputs, upstream),
                                torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=1e-10)


def test_pooled_mlp_float32_is_as_accurate_as_the_stock_modules() -> None:
    """PaRot's disentangler stack 3 → 64 → 128 → 128 on offset patches of realistic size: float32 outputs and
    gradients no further from float64 truth than the stock modules' (statistics from Gram matrices and chunk
    moments must not lose precision)."""
    def run(dtype: torch.dtype, ours: bool) -> list[Tensor]:
        torch.manual_seed(3)
        mlp = PooledMLP((3, 64, 128, 128))
        with torch.no_grad():
            for layer in mlp:
                layer.bn.weight.uniform_(-1, 1)
        mlp = mlp.to(dtype).train()
        g = torch.Generator().manual_seed(4)
        a = (torch.randn(512, 32, 3, generator=g) * 0.1 + 5).to(dtype)
        out = mlp(a) if ours else stock_mlp(mlp)(a).amax(dim=-2)
        upstream = torch.randn(out.shape, generator=g).to(dtype)
        return [out.double()] + [t.double() for t in torch.autograd.grad(out, list(mlp.parameters()), upstream)]

    truth = run(torch.float64, ours=False)
    for g_ours, g_true in zip(run(torch.float64, ours=True), truth):
        torch.testing.assert_close(g_ours, g_true, rtol=0, atol=1e-10 * g_true.abs().max().item())
    for g_ours, g_stock, g_true in zip(run(torch.float32, ours=True), run(torch.float32, ours=False), truth):
        error, stock_error = (g_ours - g_true).abs().max(), (g_stock - g_true).abs().max()
        assert error <= max(2 * stock_error, 1e-6 * g_true.abs().max()), (error, stock_error)


@pytest.mark.parametrize("kind", [PooledMLP, LinearBNChain])
def test_stacks_run_their_layers_in_evaluation_and_refuse_bad_input(kind: type[nn.Sequential]) -> None:
    """In eval mode a stack is its layers in turn with the running statistics (a PooledMLP then takes the max)."""
    torch.manual_seed(5)
    mlp = kind((3, 8, 16)).double()
    mlp.train()(torch.randn(4, 10, 3, dtype=torch.float64))
    mlp.eval()
    a = torch.randn(2, 10, 3, dtype=torch.float64)
    expected = stock_mlp(mlp).eval()(a)
    expected = expected.amax(dim=-2) if kind is PooledMLP else expected
    torch.testing.assert_close(mlp(a), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="widths"):
        kind((3,))
    with pytest.raises(ValueError, match="more than one value"):
        kind((3, 4)).train()(torch.randn(1, 1, 3))


@pytest.mark.parametrize("widths", [(3, 5), (14, 32, 64), (4, 6, 5, 7)])
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_chain_matches_stock_modules(widths: tuple[int, ...], slope: float) -> None:
    """Training: outputs, every gradient (input included) and the running statistics equal the stock layers'; the
    inner BatchNorm shifts, which the next normalisation cancels, get zero gradients (not none: DDP needs them)."""
    torch.manual_seed(6)
    chain = random_affine(LinearBNChain(widths, negative_slope=slope).double().train())
    stock = stock_mlp(chain).train()
    a = (torch.randn(3, 11, 4, widths[0], dtype=torch.float64) * 0.5 + 2).requires_grad_()
    out = chain(a)
    expected = stock(a)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    assert_same_running_statistics(chain, stock)
    upstream = torch.randn_like(out)
    inputs = [a, *chain.parameters()]
    for ours, theirs in zip(torch.autograd.grad(out, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    for layer in list(chain)[:-1]:
        assert torch.autograd.grad(chain(a), layer.bn.bias, upstream)[0].abs().max() < 1e-12


def training_case(name: str) -> tuple[nn.Module, list[Tensor | None]]:
    """A float64 layer in training mode (BatchNorm scales of both signs) and its inputs, in several chunks."""
    torch.manual_seed(7)
    a = (torch.randn(3, 23, 9, 4, dtype=torch.float64) + 2).requires_grad_()  # 621 rows: 10 chunks of 64, one short
    features = torch.randn(3, 11, 5, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 11, (3, 23, 9))
    layers = {
        "linear": (LinearBN(4, 6), [a]),
        "linear-leaky": (LinearBN(4, 6, negative_slope=0.2), [a]),
        "gathered": (LinearBN(4, 6, gathered_channels=5), [a, features, idx]),
        "pooled": (LinearBN(4, 6, pool=True), [a]),
        "pooled-gathered": (LinearBN(4, 6, gathered_channels=5, pool=True), [a, features, idx]),
        "pooled-mlp": (PooledMLP((4, 6, 5, 7), negative_slope=0.2), [a]),
        "chain": (LinearBNChain((4, 6, 5)), [a]),
    }
    layer, inputs = layers[name]
    with torch.no_grad():
        for module in layer.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.weight.uniform_(-1, 1)
                module.bias.uniform_(-1, 1)
    return layer.double().train(), inputs


FUNCTION_CASES = ["linear", "linear-leaky", "gathered", "pooled", "pooled-gathered", "pooled-mlp"]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", FUNCTION_CASES)
def test_custom_functions_keep_tensors_only_through_save_for_backward(name: str, training: bool,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No tensor rides on a ``ctx`` attribute, and with every saved tensor offloaded by a saved-tensor hook (a
    host copy packed, a fresh tensor unpacked) the backward still gives bit-identical gradients: it used the
    unpacked tensors, every one of them."""
    monkeypatch.setattr(linear_bn, "CHUNK_ROWS", 64)
    layer, inputs = training_case(name)
    layer.train(training)
    leaves = [*layer.parameters(), *(t for t in inputs if t is not None and t.requires_grad)]
    assert_saved_tensors_only(  # the second run starts from the same running statistics again
        lambda: layer(*inputs), leaves, lambda: layer.load_state_dict(training_case(name)[0].train(training).state_dict()))


@pytest.mark.parametrize("mode", CHECKPOINT_MODES)
@pytest.mark.parametrize("name", [*FUNCTION_CASES, "chain"])
def test_activation_checkpointing_changes_no_gradient_and_updates_statistics_once(
        name: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.utils.checkpoint`` around a training layer recomputes its forward in the backward pass: outputs and
    every gradient are bit-identical to the plain run, and the running statistics are updated exactly once."""
    monkeypatch.setattr(linear_bn, "CHUNK_ROWS", 64)
    layer, inputs = training_case(name)
    upstream = torch.randn_like(layer(*inputs)).detach()
    layer.load_state_dict(training_case(name)[0].state_dict())
    state = assert_checkpointing_changes_nothing(layer, inputs, upstream, mode)
    assert all(int(count) == 1 for count in state[2::3])


@pytest.mark.parametrize("mode", ["non-reentrant-full", "reentrant"])
def test_a_recomputation_that_updated_the_statistics_would_be_caught(mode: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpointing test can fail: updating the running estimates in a recomputation that runs the whole
    forward again (as a stock BatchNorm does) counts two batches and moves the estimates twice."""
    monkeypatch.setattr(linear_bn, "_recomputing", lambda: False)
    layer, inputs = training_case("pooled-mlp")
    upstream = torch.randn_like(layer(*inputs)).detach()
    layer.load_state_dict(training_case("pooled-mlp")[0].state_dict())
    (_, grads, state), (_, grads_ckpt, state_ckpt) = checkpointed_twin(layer, inputs, upstream, mode)
    assert_equal_lists(grads_ckpt, grads)
    assert [int(c) for c in state[2::3]] == [1, 1, 1] and [int(c) for c in state_ckpt[2::3]] == [2, 2, 2]
    assert not torch.equal(state_ckpt[0], state[0])
