"""Normalisation travels with the model: ``load_model`` puts the checkpoint's mean and std in front of the
architecture, so every consumer feeds RGB in [0, 1]; the wrapper is transparent for everything else."""

import pytest
import torch

from equipath.checkpoint import save_checkpoint
from equipath.models import Normalized, create_model, load_model
from equipath.testing import assert_equivariant
from equipath.wsi.inference import Grid

NORM = {"mean": [0.7, 0.5, 0.6], "std": [0.15, 0.2, 0.25]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = create_model("p4m_densenet", growth=8)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return save_checkpoint(path, model, name="p4m_densenet", kwargs={"growth": 8}, normalization=NORM,
                           task=model.task)


def test_load_model_applies_the_checkpoint_normalisation(checkpoint):
    model, state = load_model(checkpoint)
    bare, _ = load_model(checkpoint, normalized=False)
    assert isinstance(model, Normalized) and not isinstance(bare, Normalized)
    for key in ("mean", "std"):
        assert model.normalization[key] == pytest.approx(state["normalization"][key])
    x = torch.rand(2, 3, 96, 96)
    by_hand = (x - torch.tensor(NORM["mean"]).view(1, 3, 1, 1)) / torch.tensor(NORM["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), bare(by_hand), rtol=0, atol=1e-6)
        big = torch.rand(1, 3, 128, 128)
        big_by_hand = (big - torch.tensor(NORM["mean"]).view(1, 3, 1, 1)) / torch.tensor(NORM["std"]).view(1, 3, 1, 1)
        torch.testing.assert_close(model.forward_dense(big), bare.forward_dense(big_by_hand), rtol=0, atol=1e-6)


def test_the_wrapper_forwards_what_other_code_reads(checkpoint):
    model, _ = load_model(checkpoint)
    bare, _ = load_model(checkpoint, normalized=False)
    for name in ("group", "task", "input_size", "receptive_field", "output_stride", "num_classes", "size_rule"):
        assert getattr(model, name) == getattr(bare, name), name
    assert model.dense_output_size(128, 128) == bare.dense_output_size(128, 128)
    model.check_input_size(96, 96)
    assert not hasattr(Normalized(create_model("p4m_unet", width=4), [0.5] * 3, [0.5] * 3), "forward_dense")
    assert set(model.state_dict()) == {f"model.{k}" for k in bare.state_dict()}  # mean/std are not weights
    assert Grid(shape=(1, 1), stride=model.output_stride, receptive_field=model.receptive_field, downsample=1.0).pad


def test_normalisation_keeps_equivariance_and_refuses_bad_statistics(checkpoint):
    model, _ = load_model(checkpoint)
    assert_equivariant(model.double(), torch.rand(1, 3, 96, 96, dtype=torch.float64), "p4m", output="invariant")
    with pytest.raises(ValueError, match="positive std"):
        Normalized(torch.nn.Identity(), [0.5, 0.5, 0.5], [0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match=r"expected images \(B, 3, H, W\)"):
        model(torch.rand(1, 4, 96, 96, dtype=torch.float64))
