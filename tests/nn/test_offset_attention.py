"""The chunked offset-attention core equals PCT's composition of stock operations: values and every gradient in
float64 to 1e-10, over several chunks, for neighbourhoods (B, S, K, C) and centres (B, L, C); it keeps its tensors
through ``save_for_backward`` only, and activation checkpointing around the block changes nothing."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from autograd_checks import CHECKPOINT_MODES, assert_checkpointing_changes_nothing, assert_saved_tensors_only
from pointgeo.nn import offset_attention
from pointgeo.nn.offset_attention import OffsetAttention


def stock(attention: OffsetAttention, x: Tensor) -> Tensor:
    """PCT offset attention with the query-axis normalisation, from stock operations (autograd throughout)."""
    q, k = attention.qk(x).chunk(2, dim=-1)
    attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
    attn = attn / (1e-9 + attn.sum(dim=-2, keepdim=True))
    return x + attention.out(x - attn.transpose(-1, -2) @ attention.v(x))


@pytest.mark.parametrize("shape", [(2, 7, 5, 8), (3, 11, 8)])
def test_matches_stock_operations(shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offset_attention, "CHUNK_ROWS", 12)  # several chunks, the last one short
    torch.manual_seed(0)
    attention = OffsetAttention(8).double().train()
    x = (torch.randn(shape, dtype=torch.float64) * 2).requires_grad_()
    out = attention(x)
    torch.manual_seed(0)
    reference = OffsetAttention(8).double().train()
    expected = stock(reference, x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    upstream = torch.randn_like(out)
    ours = torch.autograd.grad(out, [x, *attention.parameters()], upstream)
    theirs = torch.autograd.grad(expected, [x, *reference.parameters()], upstream)
    for g_ours, g_theirs in zip(ours, theirs):
        torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=1e-10)


def test_gradcheck() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    w_qk = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w_v = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    b_v = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(offset_attention._AttentionCoreFunction.apply, (x, w_qk, w_v, b_v))


def attention_case(shape: tuple[int, ...], norm: str = "query") -> tuple[OffsetAttention, Tensor]:
    """A float64 offset attention in training mode and an input of ``shape``."""
    torch.manual_seed(3)
    return OffsetAttention(8, norm=norm).double().train(), (torch.randn(shape, dtype=torch.float64) * 2).requires_grad_()


@pytest.mark.parametrize("shape", [(2, 7, 5, 8), (3, 11, 8)])
def test_core_keeps_tensors_only_through_save_for_backward(shape: tuple[int, ...],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No tensor rides on a ``ctx`` attribute (the core's nor the output layer's), and with every saved tensor
    offloaded by a saved-tensor hook the gradients are bit-identical."""
    monkeypatch.setattr(offset_attention, "CHUNK_ROWS", 12)
    attention, x = attention_case(shape)
    nodes = assert_saved_tensors_only(lambda: attention(x), [x, *attention.parameters()])
    assert {type(node).__name__ for node in nodes} == {"_AttentionCoreFunctionBackward", "_LinearBNFunctionBackward"}


@pytest.mark.parametrize("mode", CHECKPOINT_MODES)
@pytest.mark.parametrize("shape,norm", [((2, 7, 5, 8), "query"), ((3, 11, 8), "query"), ((2, 7, 5, 8), "centres")])
def test_activation_checkpointing_changes_no_gradient_and_updates_statistics_once(
        shape: tuple[int, ...], norm: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.utils.checkpoint`` around the whole block: the same output, gradients and running statistics of its
    output layer (updated once) as without it."""
    monkeypatch.setattr(offset_attention, "CHUNK_ROWS", 12)
    attention, x = attention_case(shape, norm)
    upstream = torch.randn_like(x).detach()
    state = assert_checkpointing_changes_nothing(attention, [x], upstream, mode)
    assert int(state[2]) == 1
