"""Layer access: names, truncation, fake ReLU, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synthesis.features import FeatureExtractor, LayerError, list_layers
from tests.synthesis.tiny import SIZE, Untraceable, make_net, smooth_images

EXAMPLE = torch.zeros(1, 1, SIZE, SIZE)


def full_forward_outputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Reference: run the whole model with forward hooks and keep the named modules' outputs."""
    out: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o.clone())) for n in names]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


def test_listing_has_modules_traced_nodes_and_output_shapes() -> None:
    layers = {la.name: la for la in list_layers(make_net(), EXAMPLE)}
    assert layers["conv1"].shape == (4, 8, 8)
    assert layers["relu2"].shape == (6, 4, 4)
    assert layers["fc"].shape == (3,)
    assert layers["add"].kind == "node" and layers["add"].shape == (4, 8, 8)
    assert layers["relu1"].relu and not layers["conv1"].relu


def test_listing_is_in_execution_order() -> None:
    names = [la.name for la in list_layers(make_net(), EXAMPLE)]
    assert names.index("conv1") < names.index("relu1") < names.index("add") < names.index("conv2") < names.index("fc")


@pytest.mark.parametrize("factory", [make_net, lambda: Untraceable().eval()], ids=["fx", "hooks"])
def test_truncated_activations_equal_full_forward_activations(factory) -> None:
    torch.manual_seed(1)
    model = factory()
    names = ["relu2", "conv2"] if isinstance(model, Untraceable) else ["relu1", "conv2"]
    x = smooth_images(3, seed=5)
    reference = full_forward_outputs(model, x, names)
    fe = FeatureExtractor(model, names, EXAMPLE)
    with torch.no_grad():
        got = fe(x)
    for n in names:
        assert torch.equal(got[n], reference[n]), n


def test_truncation_does_not_run_layers_above_the_deepest() -> None:
    model = make_net()
    fe = FeatureExtractor(model, ["relu1"], EXAMPLE)
    calls = []
    model.fc.register_forward_hook(lambda *a: calls.append("fc"))
    model.conv2.register_forward_hook(lambda *a: calls.append("conv2"))
    fe(smooth_images(2, seed=0))
    assert calls == []


def test_hook_truncation_stops_untraceable_model_early() -> None:
    model = Untraceable().eval()
    fe = FeatureExtractor(model, ["block"], EXAMPLE)
    assert fe.access.gm is None  # really the hook path
    calls = []
    model.fc.register_forward_hook(lambda *a: calls.append("fc"))
    fe(smooth_images(2, seed=0))
    assert calls == []


def test_traced_node_can_be_read() -> None:
    model = make_net()
    x = smooth_images(2, seed=2)
    fe = FeatureExtractor(model, ["add"], EXAMPLE)
    with torch.no_grad():
        expected = torch.relu(model.conv1(x)) + x
        assert torch.allclose(fe(x)["add"], expected)


def test_inplace_relu_does_not_overwrite_an_earlier_captured_layer() -> None:
    model = make_net()  # relu1 is nn.ReLU(inplace=True)
    x = smooth_images(2, seed=3)
    fe = FeatureExtractor(model, ["conv1", "relu1"], EXAMPLE)
    with torch.no_grad():
        out = fe(x)
        assert (out["conv1"] < 0).any()
        assert torch.equal(out["conv1"], model.conv1(x))


@pytest.mark.parametrize("factory,layer", [(make_net, "relu2"), (lambda: Untraceable().eval(), "block")], ids=["fx", "hooks-container"])
def test_fake_relu_passes_gradient_where_the_real_relu_does_not(factory, layer) -> None:
    torch.manual_seed(0)
    model = factory()
    x = smooth_images(2, seed=4)
    real = FeatureExtractor(model, [layer], EXAMPLE, fake_relu=False)
    fake = FeatureExtractor(model, [layer], EXAMPLE, fake_relu=True)
    assert layer in fake.fake_relu_layers
    mask = {layer: torch.ones(2, dtype=torch.bool)}
    xr = x.clone().requires_grad_(True)
    xf = x.clone().requires_grad_(True)
    out_r = real(xr)[layer]
    out_f = fake(xf, mask)[layer]
    assert torch.equal(out_r, out_f)  # same forward values
    dead = out_r.detach() == 0
    assert dead.any()
    # Gradient of the dead units only: zero through the real ReLU, non-zero through the fake one.
    (g_real,) = torch.autograd.grad((out_r * dead).sum(), xr)
    (g_fake,) = torch.autograd.grad((out_f * dead).sum(), xf)
    assert g_real.abs().sum() == 0
    assert g_fake.abs().sum() > 0


def test_fake_relu_applies_only_to_masked_batch_elements() -> None:
    model = make_net()
    x = smooth_images(2, seed=4).requires_grad_(True)
    fe = FeatureExtractor(model, ["relu2"], EXAMPLE, fake_relu=True)
    out = fe(x, {"relu2": torch.tensor([True, False])})["relu2"]
    dead = out.detach() == 0
    (g,) = torch.autograd.grad((out * dead).sum(), x)
    assert g[0].abs().sum() > 0
    assert g[1].abs().sum() == 0


def test_unknown_layer_error_lists_the_valid_layers() -> None:
    with pytest.raises(LayerError) as err:
        FeatureExtractor(make_net(), ["relu9"], EXAMPLE)
    msg = str(err.value)
    assert "relu9" in msg
    for valid in ("conv1", "relu1", "add", "conv2", "relu2", "fc"):
        assert valid in msg
