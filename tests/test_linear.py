"""adatosk.models.linear: the oneDNN fp32 product is F.linear, forward and backward, and steps aside where it must."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adatosk.models import linear as linear_module
from adatosk.models.linear import Linear, linear, uses_onednn

needs_onednn = pytest.mark.skipif(linear_module._ONEDNN_LINEAR is None, reason="this torch build has no oneDNN linear")


def _grads(fn, x, weight, bias, grad_out):
    x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
    bias = None if bias is None else bias.detach().requires_grad_()
    out = fn(x, weight, bias)
    out.backward(grad_out)
    return out, x.grad, weight.grad, None if bias is None else bias.grad


@needs_onednn
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "permuted"])
def test_onednn_linear_equals_f_linear_forward_and_backward(with_bias, layout):
    torch.manual_seed(0)
    x = torch.randn(4, 24, 48)  # [B, L, K]
    if layout == "permuted":  # a non-contiguous input, as a transposed view
        x = torch.randn(4, 48, 24).transpose(1, 2)
    weight, bias = torch.randn(40, 48), torch.randn(40) if with_bias else None
    grad_out = torch.randn(4, 24, 40)
    assert uses_onednn(x, weight)
    ours = _grads(linear, x, weight, bias, grad_out)
    reference = _grads(F.linear, x, weight, bias, grad_out)
    for got, expected in zip(ours, reference):
        if expected is None:
            assert got is None
        else:
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_only_the_input_or_only_the_weight_may_need_a_gradient():
    x, weight = torch.randn(6, 8), torch.randn(5, 8)
    frozen = weight.clone()  # e.g. a frozen layer: only the input's gradient
    xg = x.clone().requires_grad_()
    linear(xg, frozen).sum().backward()
    torch.testing.assert_close(xg.grad, torch.ones(6, 5) @ weight, rtol=1e-5, atol=1e-5)
    wg = weight.clone().requires_grad_()  # the first layer: only the weight's gradient
    linear(x, wg).sum().backward()
    torch.testing.assert_close(wg.grad, torch.ones(5, 6) @ x, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_a_weight_updated_in_place_is_read_anew():  # what every optimiser step does: no stale packed weight
    x, weight, bias = torch.randn(16, 8), torch.randn(4, 8), torch.randn(4)
    before = linear(x, weight, bias)
    with torch.no_grad():
        weight.mul_(-2.0)
        bias.add_(1.0)
    after = linear(x, weight, bias)
    torch.testing.assert_close(after, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, before)


def test_f_linear_where_onednn_does_not_apply():
    x, weight = torch.randn(3, 8), torch.randn(4, 8)
    assert not uses_onednn(x.double(), weight.double())  # not fp32
    assert not uses_onednn(torch.randn(8), weight)  # a single vector
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast decides the dtype: F.linear
        assert not uses_onednn(x, weight)
        assert linear(x, weight).dtype == torch.bfloat16
    traced = torch.jit.trace(Linear(8, 4), (x,))  # tracing (fvcore's FLOP count) must see aten::linear
    assert "aten::linear" in str(traced.graph) and "PythonOp" not in str(traced.graph)


def test_linear_is_an_nn_linear_with_its_state_dict():
    layer = Linear(8, 4)
    assert isinstance(layer, nn.Linear)
    assert list(layer.state_dict()) == list(nn.Linear(8, 4).state_dict()) == ["weight", "bias"]
    x = torch.randn(5, 8)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_a_training_step_of_the_tiny_model_is_the_same_with_and_without_onednn(monkeypatch):
    from adatosk.models.registry import adatosk_vit_tiny_patch16_64

    def step():
        torch.manual_seed(0)
        model = adatosk_vit_tiny_patch16_64(num_classes=7, mask_ratio=0.5, exclude_at=None, exclude_fraction=0.0667)
        video, target = torch.randn(2, 3, 16, 64, 64), torch.eye(7)[[1, 4]]
        out = model(video, target, visible=model.draw_visible(2, generator=torch.Generator().manual_seed(1)))
        out.loss.backward()
        return out.loss.detach(), {k: p.grad for k, p in model.named_parameters() if p.grad is not None}

    loss, grads = step()
    monkeypatch.setattr(linear_module, "_ONEDNN_LINEAR", None)  # F.linear everywhere
    reference_loss, reference_grads = step()
    torch.testing.assert_close(loss, reference_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == reference_grads.keys() and len(grads) > 50
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-3, atol=1e-5, msg=name)
