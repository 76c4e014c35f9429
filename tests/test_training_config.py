"""Config validation and command-line overrides, the shipped configs, losses against hand values and MONAI,
and the seeded batch sampling."""

import math
from pathlib import Path

import pytest
import torch

from equipath.cli._options import parse_sets
from equipath.cli.train import resolve_config
from equipath.configs import CONFIG_DIR
from equipath.models import create_model
from equipath.training import TrainConfig, build_loss
from equipath.training.sampling import EpochBatches, fixed_sample

# every `equipath train` config; equipath/configs/cells_*.yaml belong to `equipath cells` (equipath.cells)
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("cells_"))


# ----------------------------------------------------------------------------------------------------- config
def test_defaults_are_seed_000_training_details():
    config = TrainConfig.from_dict({"model": "p4m_densenet"})
    assert (config.lr, config.lr_factor, config.lr_patience) == (1e-3, 0.5, 20)
    assert (config.batch_size, config.batches_per_epoch, config.data.val_samples) == (64, 312, 40000)


@pytest.mark.parametrize("values, message", [
    ({"model": "densenet", "learning_rate": 0.1}, r"unknown key 'learning_rate'; valid keys: model, "),
    ({"model": "densenet", "data": {"rooot": "x"}}, r"unknown key 'data.rooot'"),
    ({"model": "densenet", "lr": "fast"}, r"lr must be a number, got 'fast'"),
    ({"model": "densenet", "epochs": 2.5}, r"epochs must be an integer, got 2.5"),
    ({"model": "densenet", "epochs": True}, r"epochs must be an integer, got True"),
    ({"model": "densenet", "amp": "yes"}, r"amp must be true or false"),
    ({"model": "densenet", "loss": "mse"}, r"loss must be one of 'bce', 'ce', 'dice_ce', 'heatmap_mse' or null"),
    ({"model": "densenet", "data": {"augment": ["d4", "flip"]}}, r"unknown augmentation 'flip'"),
    ({"model": "densenet", "data": {"fraction": 1.5}}, r"data.fraction must be a finite number in \[1e-06, 1\], got 1.5"),
    ({"model": "densenet", "normalization_mean": [0.5, 0.5]}, r"normalization_mean must be a list of 3 numbers"),
    ({"model": "densenet", "data": "pcam"}, r"data must be a mapping"),
    ({"epochs": 3}, r"missing required key\(s\) model"),
])
def test_config_rejects_unknown_and_ill_typed_keys(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_config_round_trips_through_a_plain_dict():
    config = TrainConfig.from_dict({"model": "densenet", "data": {"augment": ["d4"], "val_samples": None},
                                    "normalization_mean": [0.1, 0.2, 0.3], "lr": 2})
    assert config.lr == 2.0 and isinstance(config.lr, float)
    assert config.data.augment == ("d4",) and config.data.val_samples is None
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_command_line_overrides(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: densenet\nlr: 1e-3\ndata:\n  dataset: synthetic_pcam\n")
    overrides = parse_sets(["lr=1e-4", "data.augment=d4,noise", "model_kwargs.growth=8",
                            "data.root=/data/x y", "data.val_samples=null", "progress=false"])
    config = resolve_config(yaml_file, overrides)
    assert config.lr == 1e-4 and config.data.augment == ("d4", "noise") and config.model_kwargs == {"growth": 8}
    assert config.data.root == "/data/x y" and config.data.val_samples is None and config.progress is False
    assert resolve_config(yaml_file, {}).lr == 1e-3  # YAML 1.2 floats: 1e-3 is a number
    with pytest.raises(ValueError, match=r"--set learning_rate: unknown config key 'learning_rate'"):
        resolve_config(yaml_file, {"learning_rate": "1"})
    with pytest.raises(ValueError, match=r"--set lr: expected KEY=VALUE"):
        parse_sets(["lr"])
    with pytest.raises(ValueError, match=r"epochs must be an integer, got 'ten'"):
        resolve_config(yaml_file, {"epochs": "ten"})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_is_valid_and_names_a_model_that_builds(path):
    config = resolve_config(path, {})
    model = create_model(config.model, **config.model_kwargs)
    kind = "classification" if config.data.dataset in ("pcam", "synthetic_pcam") else "segmentation"
    assert model.task == kind
    if kind == "segmentation" and config.data.dataset != "ocelot":
        model.check_input_size(config.data.patch_size, config.data.patch_size)


# ------------------------------------------------------------------------------------------------------ losses
def test_bce_and_ce_hand_computed():
    bce = build_loss("bce")(torch.tensor([[0.0], [2.0]]), torch.tensor([1.0, 0.0]))
    assert float(bce) == pytest.approx((math.log(2) + math.log1p(math.exp(2))) / 2)
    ce = build_loss("ce")(torch.tensor([[0.0, math.log(3)]]), torch.tensor([1]))  # p = 3/4
    assert float(ce) == pytest.approx(-math.log(0.75))


def test_dice_ce_hand_computed():
    # one pixel, two classes, logits giving p = (1/4, 3/4), target class 1; eps = 1e-5
    logits = torch.tensor([0.0, math.log(3)]).view(1, 2, 1, 1)
    target = torch.ones(1, 1, 1, dtype=torch.long)
    eps = 1e-5
    dice_bg = 1 - (0 + eps) / (0.25 + 0 + eps)
    dice_fg = 1 - (2 * 0.75 + eps) / (0.75 + 1 + eps)
    expected = (dice_bg + dice_fg) / 2 - math.log(0.75)
    assert float(build_loss("dice_ce")(logits, target)) == pytest.approx(expected, rel=1e-6)
    weighted = build_loss("dice_ce", dice_weight=0.3, ce_weight=2.0)(logits, target)
    assert float(weighted) == pytest.approx(0.3 * (dice_bg + dice_fg) / 2 - 2 * math.log(0.75), rel=1e-6)


def test_dice_ce_matches_monai():
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = torch.randn(3, 4, 9, 7), torch.randint(0, 4, (3, 9, 7))
    reference = monai_losses.DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.7, lambda_ce=1.3)
    ours = build_loss("dice_ce", dice_weight=0.7, ce_weight=1.3)
    assert float(ours(logits, target)) == pytest.approx(float(reference(logits, target[:, None])), rel=1e-5)


def test_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"dice_ce: expected logits \(B, C, H, W\) and target \(B, H, W\)"):
        build_loss("dice_ce")(torch.randn(2, 3, 8, 8), torch.zeros(2, 8, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"bce: expected logits \(B, 1\) and target \(B,\)"):
        build_loss("bce")(torch.randn(2, 1), torch.zeros(3))
    with pytest.raises(ValueError, match=r"unknown loss 'l2'"):
        build_loss("l2")


# ---------------------------------------------------------------------------------------------------- sampling
def test_epoch_batches_are_seeded_per_epoch_and_shared_between_ranks():
    epoch1 = list(EpochBatches(50, 8, 4, seed=3, epoch=1))
    assert epoch1 == list(EpochBatches(50, 8, 4, seed=3, epoch=1))
    assert epoch1 != list(EpochBatches(50, 8, 4, seed=3, epoch=2))
    flat = [i for batch in epoch1 for i in batch]
    assert len(set(flat)) == len(flat)  # no repeats within one pass over the data
    shares = [list(EpochBatches(50, 8, 4, seed=3, epoch=1, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*shares)] == epoch1  # ranks split each global batch
    assert sum(len(b) for b in EpochBatches(50, 8, None, 0, 0)) == 48  # one pass, full batches only
    with pytest.raises(ValueError, match="divisible"):
        EpochBatches(50, 9, 4, 0, 0, world_size=2)


def test_fixed_sample_is_a_fixed_subset():
    a = fixed_sample(1000, 40, seed=0)
    assert len(a) == 40 and len(set(a.tolist())) == 40 and (a == fixed_sample(1000, 40, seed=0)).all()
    assert (fixed_sample(10, None, 0) == range(10)).all() and len(fixed_sample(10, 40, 0)) == 10
