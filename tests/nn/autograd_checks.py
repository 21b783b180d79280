"""Checks shared by the tests of pointgeo's custom autograd functions: every tensor a backward needs goes through
``ctx.save_for_backward`` (so saved-tensor hooks and activation checkpointing see it), and activation checkpointing
around a layer changes neither its gradients nor its BatchNorm running statistics."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import BackwardCFunction
from torch.utils.checkpoint import checkpoint


def custom_function_nodes(output: Tensor) -> list[BackwardCFunction]:
    """The nodes of custom ``torch.autograd.Function``s in the graph that produced ``output`` (their ``ctx``)."""
    found, seen, todo = [], set(), [output.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, BackwardCFunction):
            found.append(node)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return found


def tensors_on_ctx(node: BackwardCFunction) -> list[str]:
    """Where tensors ride on a ``ctx``'s own attributes, searched through containers, dataclasses and objects:
    such tensors are invisible to saved-tensor hooks and outlive an activation checkpoint's recomputation."""
    found: list[str] = []

    def search(value: object, where: str, depth: int) -> None:
        if isinstance(value, Tensor):
            found.append(where)
        elif depth > 4:
            return
        elif isinstance(value, dict):
            for key, item in value.items():
                search(item, f"{where}[{key!r}]", depth + 1)
        elif isinstance(value, (list, tuple, set)):
            for i, item in enumerate(value):
                search(item, f"{where}[{i}]", depth + 1)
        elif dataclasses.is_dataclass(value) or hasattr(value, "__dict__"):
            for key, item in vars(value).items():
                search(item, f"{where}.{key}", depth + 1)

    for key, value in vars(node).items():
        search(value, f"ctx.{key}", 0)
    return found


def gradients(output: Tensor, inputs: Sequence[Tensor], upstream: Tensor) -> list[Tensor]:
    """``d(output · upstream) / d inputs`` through ``.backward`` (reentrant checkpointing refuses ``autograd.grad``),
    leaving the inputs' ``.grad`` as it found them."""
    before = [t.grad for t in inputs]
    for t in inputs:
        t.grad = None
    output.backward(upstream)
    grads = [t.grad for t in inputs]
    for t, grad in zip(inputs, before):
        t.grad = grad
    return grads


def offloaded_gradients(run: Callable[[], Tensor], inputs: Sequence[Tensor],
                        upstream: Tensor) -> tuple[Tensor, list[Tensor], int, int]:
    """Output and gradients of ``run()`` with every saved tensor offloaded by a saved-tensor hook (packed as a copy
    in host memory, unpacked as a fresh tensor), and how many tensors were packed and unpacked."""
    counts = [0, 0]

    def pack(t: Tensor) -> tuple[torch.device, Tensor]:
        counts[0] += 1
        return t.device, t.detach().to("cpu", copy=True)

    def unpack(packed: tuple[torch.device, Tensor]) -> Tensor:
        counts[1] += 1
        device, stored = packed
        return stored.to(device, copy=True)

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        output = run()
    grads = gradients(output, inputs, upstream)
    return output, grads, counts[0], counts[1]


def batch_norm_state(module: nn.Module) -> list[Tensor]:
    """Running mean, variance and batch count of every BatchNorm inside ``module``."""
    return [t.clone() for bn in module.modules() if isinstance(bn, nn.modules.batchnorm._BatchNorm)
            for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)]


CHECKPOINT_MODES = {
    "non-reentrant": {"use_reentrant": False},
    "non-reentrant-full": {"use_reentrant": False, "early_stop": False},  # recomputes past the last saved tensor
    "reentrant": {"use_reentrant": True},
}
"""Ways of ``torch.utils.checkpoint.checkpoint``: by default the non-reentrant recomputation stops once it has
recomputed every saved tensor (before a layer's statistics update); without early stop it runs the whole forward."""


def checkpointed_twin(layer: nn.Module, inputs: Sequence[Tensor | None], upstream: Tensor,
                      mode: str) -> tuple[tuple[Tensor, list[Tensor], list[Tensor]], ...]:
    """``(output, gradients, BatchNorm state)`` of one training step of ``layer`` on ``inputs`` and of a deep copy
    of it run through ``torch.utils.checkpoint.checkpoint`` in one of the :data:`CHECKPOINT_MODES`; gradients are
    those of the parameters and of the inputs that require them."""
    twin = copy.deepcopy(layer)
    results = []
    for module, wrapped in ((layer, False), (twin, True)):
        args = [None if t is None else t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
        leaves = [*module.parameters(), *(t for t in args if t is not None and t.requires_grad)]
        output = checkpoint(module, *args, **CHECKPOINT_MODES[mode]) if wrapped else module(*args)
        results.append((output.detach(), gradients(output, leaves, upstream), batch_norm_state(module)))
    return tuple(results)


def assert_equal_lists(ours: Sequence[Tensor], theirs: Sequence[Tensor]) -> None:
    """Element-wise bit-identical lists of tensors (the same computation, run twice)."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def assert_saved_tensors_only(run: Callable[[], Tensor], leaves: Sequence[Tensor],
                              reset: Callable[[], object] | None = None) -> list[BackwardCFunction]:
    """Check the output of ``run()``: its custom autograd functions keep no tensor on a ``ctx`` attribute, and with
    every saved tensor offloaded by a saved-tensor hook (a host copy packed, a fresh tensor unpacked) the output and
    the gradients of ``leaves`` are bit-identical, so the backward used the unpacked tensors, every one of them.
    ``reset`` puts back what the first run changed (e.g. running statistics). Returns the custom functions' nodes."""
    out = run()
    nodes = custom_function_nodes(out)
    assert nodes, "ran no custom autograd function"
    for node in nodes:
        assert tensors_on_ctx(node) == [], (type(node).__name__, tensors_on_ctx(node))
    upstream = torch.randn_like(out)
    expected = gradients(out, leaves, upstream)
    if reset is not None:
        reset()
    hooked, grads, packed, unpacked = offloaded_gradients(run, leaves, upstream)
    assert packed >= 4 and unpacked == packed
    torch.testing.assert_close(hooked, out, rtol=0, atol=0)
    assert_equal_lists(grads, expected)
    return nodes


def assert_checkpointing_changes_nothing(layer: nn.Module, inputs: Sequence[Tensor | None], upstream: Tensor,
                                         mode: str) -> list[Tensor]:
    """:func:`checkpointed_twin`: the checkpointed run's output, gradients and BatchNorm state equal the plain run's
    bit for bit. Returns the plain run's BatchNorm state (mean, variance, count per layer)."""
    (out, grads, state), (out_ckpt, grads_ckpt, state_ckpt) = checkpointed_twin(layer, inputs, upstream, mode)
    torch.testing.assert_close(out_ckpt, out, rtol=0, atol=0)
    assert_equal_lists(grads_ckpt, grads)
    assert_equal_lists(state_ckpt, state)
    return state
