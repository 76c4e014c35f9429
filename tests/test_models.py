"""Every registered model: shapes, gradients, exact symmetry, folding, input-size checks, parameter table."""

import functools

import pytest
import torch
from torch import nn

from equipath.cli import main
from equipath.models import create_model, list_models
from equipath.nn import (GroupConv2d, GroupConvTranspose2d, IsotropicConv2d, LiftingConv2d, ProjectionConv2d,
                         fold_model)
from equipath.testing import equivariance_error

# Small configurations for the per-model loop; the registered defaults are the papers' sizes.
SMALL = {
    "p4m_densenet": {"growth": 8}, "p4m_densenet_m": {"growth": 8}, "p4_densenet": {"growth": 4},
    "densenet": {"growth": 2}, "densenet_m": {"growth": 2},
    "p4m_unet": {"width": 6}, "p4_unet": {"width": 4}, "unet": {"width": 2},
    "p4m_gerunet": {"width": 6}, "p4m_gerunet_concat": {"width": 6}, "resunet": {"width": 2},
    "iso_unet": {"width": 4}, "iso_unet_baseline": {"width": 2},
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.cache
def default_params(name: str) -> int:
    """Parameters of the registered default (paper) configuration, built once per test session."""
    return n_params(create_model(name))


def small_model(name: str) -> nn.Module:
    """The model at its small configuration, with random batch-norm statistics and affine parameters so
    that eval mode is not close to the identity."""
    model = create_model(name, **SMALL.get(name, {}))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


def test_registry_lists_every_paper_model():
    assert set(SMALL) <= set(list_models())


def test_create_model_drops_none_and_rejects_unknowns():
    assert create_model("densenet", growth=None, stem=None).growth == 24
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(ValueError, match="accepted arguments: growth, stem"):
        create_model("densenet", depth=3)


@pytest.mark.parametrize("name", list_models())
def test_model_shapes_gradients_and_exact_symmetry(name):
    model = small_model(name)
    H, W = model.input_size
    model.check_input_size(H, W)
    x = torch.rand(2, 3, H, W)

    model.train()
    y = model(x)
    expected = (2, 1) if model.task == "classification" else (2, model.num_classes, H, W)
    assert tuple(y.shape) == expected
    y.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())

    model.eval()
    errors = equivariance_error(model, x, model.group, "invariant" if model.task == "classification" else "planar")
    assert len(errors) == model.group.order
    assert errors.max() <= 1e-4, f"{name}: {errors.tolist()}"


@pytest.mark.parametrize("name", list_models())
def test_folded_model_gives_the_same_outputs(name):
    model = small_model(name).eval()
    folded = fold_model(model)
    equivariant = (LiftingConv2d, GroupConv2d, ProjectionConv2d, GroupConvTranspose2d, IsotropicConv2d)
    assert not any(isinstance(m, equivariant) for m in folded.modules())
    x = torch.rand(2, 3, *model.input_size)
    with torch.no_grad():
        y, y_folded = model(x), folded(x)
    assert torch.allclose(y_folded, y, rtol=1e-4, atol=1e-5 * y.abs().max().item())


@pytest.mark.parametrize("name", list_models())
def test_inadmissible_size_raises_stating_the_admissible_sizes(name):
    model = small_model(name).eval()
    H, W = model.input_size
    rule = str(model.size_rule)
    with pytest.raises(ValueError, match=rf"width {W + 1} .*must each be|must each be .*width {W + 1}"):
        model(torch.rand(1, 3, H, W + 1))
    with pytest.raises(ValueError, match=r"must each be " + rule.split(" (")[0].replace("+", r"\+")):
        model.check_input_size(H - 1, W)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 4, H, W))


@pytest.mark.parametrize("name", ["p4m_densenet", "p4_densenet", "densenet"])
def test_dense_logit_map_equals_patch_by_patch(name):
    model = small_model(name).eval()
    s, rf = model.output_stride, model.receptive_field
    x = torch.rand(2, 3, rf + 2 * s, rf + s)  # irregular: 3 x 2 patches
    with torch.no_grad():
        dense = model.forward_dense(x)
        assert tuple(dense.shape[-2:]) == model.dense_output_size(*x.shape[-2:]) == (3, 2)
        for i in range(3):
            for j in range(2):
                patch = model(x[..., i * s: i * s + rf, j * s: j * s + rf])
                assert torch.allclose(dense[:, :, i, j], patch, atol=1e-4 * dense.abs().max().item())
    with pytest.raises(ValueError, match="use forward_dense"):
        model(x)
    square = x[..., : rf + s, : rf + s]  # the 2 x 2 logit map of a square input turns with it
    assert equivariance_error(model.forward_dense, square, model.group, "planar").max() <= 1e-4


# seed 000 Table 1: (K, weights)
TABLE_1 = {"p4m_densenet": (64, 119e3), "p4m_densenet_m": (24, 19e3), "p4_densenet": (48, 125e3),
           "densenet": (24, 128e3), "densenet_m": (64, 902e3)}


def test_parameter_table_matches_the_papers():
    for name, (K, weights) in TABLE_1.items():
        assert create_model(name).growth == K
        assert abs(default_params(name) / weights - 1) <= 0.10, (name, default_params(name))


# (group model, its baseline, relative bound): seed 001 divides filters by sqrt(|G|); seed 004 reports
# 12.78M vs 12.75M (bound 2 %); seed 002 uses 110 isotropic vs 64 plain first-layer channels.
MATCHED = [("p4m_unet", "unet", 0.10), ("p4_unet", "unet", 0.10), ("p4m_gerunet", "resunet", 0.02),
           ("iso_unet", "iso_unet_baseline", 0.10)]


@pytest.mark.parametrize("model_name, baseline_name, bound", MATCHED)
def test_group_models_match_their_baselines(model_name, baseline_name, bound):
    assert small_model(baseline_name).group.name == "z2" and small_model(model_name).group.name != "z2"
    ratio = default_params(model_name) / default_params(baseline_name)
    assert abs(ratio - 1) <= bound, (default_params(model_name), default_params(baseline_name))


def test_resunet_has_the_size_of_seed_004():
    assert abs(default_params("resunet") / 12.75e6 - 1) <= 0.02


def test_cli_models_prints_every_model(capsys):
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert sorted(lines) == list_models()
    for name, line in lines.items():
        group, task, count = line.split()[1:4]
        model = small_model(name)
        assert (group, task) == (model.group.name, model.task)
        assert int(count.replace(",", "")) > 0
        assert line.endswith(str(model.size_rule))
    for name in list_models():
        assert f" {default_params(name):,} " in lines[name]
