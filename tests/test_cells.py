"""Rotation-invariant cell representations (seed 003): losses, procedural cells, VAEs, training, evaluation, CLI."""

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from equipath.cells.train import recalibrate_batch_norm
from equipath.cells import (CELL_TYPES, VARIANTS, CellExperimentConfig, CellTrainConfig, CellVAE, centre_weights,
                            gaussian_kl, load_cell_vae, make_cell_patches, prior_kl, probe_f1, read_cell_folder,
                            reconstruction_ssim, render_cell_patch, rotation_kl, run_experiment, save_cell_vae,
                            symmetric_kl, train_cell_vae, weighted_reconstruction, write_cell_folder)
from equipath.cli import main
from equipath.groups import get_group
from equipath.testing import assert_equivariant

P4 = get_group("p4")
TINY = {"size": 16, "latent_dim": 4, "width": 2}


# ---- losses -------------------------------------------------------------------------------------------------

def test_symmetric_kl_is_zero_for_identical_posteriors():
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.equal(symmetric_kl(mu, logvar, mu, logvar), torch.zeros(5))
    assert torch.equal(gaussian_kl(mu, logvar, mu, logvar), torch.zeros(5))


def test_symmetric_kl_matches_hand_computed_value():
    # dim 1: N(0, 1) vs N(1, 2):  KL(1||2) = (log 2 + 2/2 - 1) / 2 = log(2) / 2,  KL(2||1) = (-log 2 + 3 - 1) / 2
    #        sum = 1 exactly.
    # dim 2: N(1, 4) vs N(-1, 4): each KL = ((4 + 4) / 4 - 1) / 2 = 1/2, sum = 1.
    mu1, var1 = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 4.0]])
    mu2, var2 = torch.tensor([[1.0, -1.0]]), torch.tensor([[2.0, 4.0]])
    kl12 = gaussian_kl(mu1, var1.log(), mu2, var2.log())
    assert torch.allclose(kl12, torch.tensor([math.log(2) / 2 + 0.5]))
    assert torch.allclose(symmetric_kl(mu1, var1.log(), mu2, var2.log()), torch.tensor([2.0]))


def test_kl_terms_agree_with_torch_distributions():
    mu1, lv1, mu2, lv2 = (torch.randn(3, 6, dtype=torch.float64) for _ in range(4))
    q1, q2 = Normal(mu1, (0.5 * lv1).exp()), Normal(mu2, (0.5 * lv2).exp())
    expected = (kl_divergence(q1, q2) + kl_divergence(q2, q1)).sum(1)
    assert torch.allclose(symmetric_kl(mu1, lv1, mu2, lv2), expected)
    prior = Normal(torch.zeros_like(mu1), torch.ones_like(mu1))
    assert torch.allclose(prior_kl(mu1, lv1), kl_divergence(q1, prior).sum(1))
    with pytest.raises(ValueError, match="one shape"):
        symmetric_kl(mu1, lv1, mu2[:, :3], lv2)


def test_centre_weights_and_weighted_reconstruction():
    w = centre_weights(16, 0.25)
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    assert w[7:9, 7:9].min() == w.max() and w[0, 0] < 0.05 * w.max()  # neighbours near the border count little
    for g in range(8):
        assert torch.allclose(get_group("p4m").transform(w, g), w)
    target = torch.zeros(2, 3, 16, 16)
    recon = torch.zeros(2, 3, 16, 16)
    recon[1, :, 8, 8] = 2.0  # one pixel, all channels, error 2
    assert torch.allclose(weighted_reconstruction(recon, target, w), torch.tensor([0.0, 3 * 4 * float(w[8, 8])]))


# ---- procedural cells ---------------------------------------------------------------------------------------

def test_cell_patches_are_deterministic_balanced_and_in_range():
    images, labels = make_cell_patches(24, size=32, seed=3)
    again, _ = make_cell_patches(24, size=32, seed=3)
    other, _ = make_cell_patches(24, size=32, seed=4)
    assert images.shape == (24, 3, 32, 32) and images.dtype == np.float32
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    assert np.bincount(labels).tolist() == [4] * len(CELL_TYPES)
    assert 0 <= images.min() and images.max() <= 1
    # patch i depends only on (seed, i)
    assert np.array_equal(make_cell_patches(30, size=32, seed=3)[0][:24], images)


def test_render_cell_patch_turns_only_the_cell():
    a = render_cell_patch(3, 48, seed=(1, 2), angle=0.0)
    b = render_cell_patch(3, 48, seed=(1, 2), angle=math.pi / 3)
    assert np.array_equal(a, render_cell_patch(3, 48, seed=(1, 2), angle=0.0))
    centre = (slice(None), slice(14, 34), slice(14, 34))
    assert np.abs(a[centre] - b[centre]).mean() > 0.02
    with pytest.raises(ValueError, match="cell_type"):
        render_cell_patch(len(CELL_TYPES), 32)


def test_cell_types_differ_in_size_and_texture():
    images, labels = make_cell_patches(120, size=32, seed=0)
    centre = images[:, :, 4:28, 4:28]
    background = np.array([0.93, 0.89, 0.90]).reshape(1, 3, 1, 1)
    area = (np.abs(centre - background).sum(1) > 0.12).mean((1, 2))  # stained (non-background) fraction
    orange = (centre[:, 0] - centre[:, 2] > 0.3).mean((1, 2))  # eosinophilic granules
    per_type = {name: (area[labels == c].mean(), orange[labels == c].mean()) for c, name in enumerate(CELL_TYPES)}
    assert min(per_type, key=lambda n: per_type[n][0]) == "lymphocyte"
    assert max(per_type, key=lambda n: per_type[n][0]) == "myelocyte"
    assert max(per_type, key=lambda n: per_type[n][1]) == "eosinophil"
    assert per_type["eosinophil"][1] > 5 * max(v[1] for n, v in per_type.items() if n != "eosinophil")


def test_cell_folder_round_trip_and_errors(tmp_path):
    images, labels = make_cell_patches(12, size=16)
    root = write_cell_folder(tmp_path / "cells", images, labels)
    x, y, classes = read_cell_folder(root)
    assert classes == tuple(sorted(CELL_TYPES))
    order = np.argsort([CELL_TYPES[i] for i in labels], kind="stable")
    assert np.array_equal([classes[i] for i in y], [CELL_TYPES[i] for i in labels[order]])
    assert torch.allclose(x, torch.from_numpy(images[order]), atol=0.5 / 255 + 1e-6)
    with pytest.raises(ValueError, match="does not exist"):
        read_cell_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PNG"):
        read_cell_folder(tmp_path / "empty")
    write_cell_folder(tmp_path / "mixed", make_cell_patches(1, size=24)[0], np.array([0]))
    write_cell_folder(tmp_path / "mixed", make_cell_patches(1, size=16)[0], np.array([1]))
    with pytest.raises(ValueError, match="16x16 patch like the others|24x24 patch like the others"):
        read_cell_folder(tmp_path / "mixed")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="x.png: not a readable image"):
        read_cell_folder(tmp_path / "bad")


# ---- models -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_cell_vae_shapes_and_backward(variant):
    model = CellVAE(variant, **TINY)
    out = model(torch.rand(3, 3, 16, 16))
    assert out.recon.shape == (3, 3, 16, 16) and out.mu.shape == out.logvar.shape == (3, 4)
    assert 0 <= out.recon.min() and out.recon.max() <= 1
    (out.recon.sum() + out.mu.sum()).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        model(torch.rand(3, 3, 24, 24))


def test_spatial_transformer_starts_at_the_identity():
    model = CellVAE("only-STN", **TINY).eval()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(model.stn(x), torch.zeros(2))
    assert torch.allclose(model.encode(x)[0], model.encoder(x)[0], atol=1e-5)


def test_inv_hnet_encoder_is_invariant_and_equ_hnet_features_follow_the_law():
    inv = CellVAE("inv-HNet", size=32, latent_dim=4, width=3).double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    assert_equivariant(lambda t: inv.encoder(t)[0], x, "p4")  # (B, D) output: demands invariance
    equ = CellVAE("equ-HNet", size=32, latent_dim=4, width=3).double().eval()
    pooled = equ.encoder.features(x).mean((-2, -1))  # (B, C, M, 2) with orders (0, 2)
    for r in range(4):
        turned = equ.encoder.features(P4.transform(x, r)).mean((-2, -1))
        c, s = math.cos(math.pi * r), math.sin(math.pi * r)  # order 2: phase turns by 2 * r * 90 degrees
        assert torch.allclose(turned[:, :, 0], pooled[:, :, 0], atol=1e-12)
        assert torch.allclose(turned[:, :, 1, 0], c * pooled[:, :, 1, 0] - s * pooled[:, :, 1, 1], atol=1e-12)
    with pytest.raises(ValueError, match="variant"):
        CellVAE("hnet")
    with pytest.raises(ValueError, match="multiple of 8"):
        CellVAE("baseline", size=20)


# ---- training and evaluation --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_cells():
    images, labels = make_cell_patches(96, size=16, seed=0)
    return torch.from_numpy(images), labels


def test_training_lowers_the_loss_is_deterministic_and_keeps_the_best_epoch(tiny_cells):
    images, _ = tiny_cells
    config = CellTrainConfig(variant="inv-HNet", rotation_weight=0.5, epochs=3, batch_size=32, lr=3e-3, **TINY)
    result = train_cell_vae(images[:64], images[64:], config, progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert result.best_epoch == 1 + int(np.argmin([row["val_loss"] for row in result.history]))
    assert not result.model.training
    again = train_cell_vae(images[:64], images[64:], config, progress=False)
    assert again.history == result.history


def test_early_stopping_and_config_validation(tiny_cells):
    images, _ = tiny_cells
    config = CellTrainConfig(variant="baseline", rotation_weight=0, epochs=30, batch_size=32, lr=0.5, patience=1, **TINY)
    result = train_cell_vae(images[:64], images[64:], config, progress=False)
    assert len(result.history) < 30 and len(result.history) == result.best_epoch + 1
    with pytest.raises(ValueError, match="0 for the baseline"):
        CellTrainConfig(variant="baseline", rotation_weight=0.5)
    with pytest.raises(ValueError, match="epochs must be an integer"):
        CellTrainConfig(epochs="3")
    with pytest.raises(ValueError, match=r"training images of shape \(N, 3, 16, 16\)"):
        train_cell_vae(images[:4, :, :8], images, CellTrainConfig(**TINY), progress=False)


def test_recalibrated_batch_norm_holds_the_plain_average_of_the_batches():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 2))
    images = torch.rand(12, 3, 16, 16) + torch.arange(12).view(12, 1, 1, 1)
    model.eval()
    recalibrate_batch_norm(model, images, batch_size=4)
    with torch.no_grad():
        features = model[0](images)
    batch_means = torch.stack([features[i:i + 4].mean((0, 2, 3)) for i in range(0, 12, 4)]).mean(0)
    assert torch.allclose(model[1].running_mean, batch_means, atol=1e-5)
    assert not model.training and model[1].momentum == 0.1


class _Encode(torch.nn.Module):
    """A stand-in model: posterior from a fixed function of the image, reconstruction = the image."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.p = fn, torch.nn.Parameter(torch.zeros(1))

    def encode(self, x):
        mu = self.fn(x)
        return mu, torch.zeros_like(mu)

    def forward(self, x):
        return type("Out", (), {"recon": x})


def test_rotation_kl_ssim_and_probe_on_known_cases(tiny_cells):
    images, labels = tiny_cells
    invariant = _Encode(lambda x: x.mean((2, 3)))  # mean colour: nearly invariant (reflection-padded corners)
    pixels = _Encode(lambda x: 10 * x.flatten(1))  # raw pixels: not invariant
    kl_inv = rotation_kl(invariant, images[:16], n_angles=4)
    kl_pix = rotation_kl(pixels, images[:16], n_angles=4)
    assert set(kl_inv["kl_per_angle"]) == {90.0, 180.0, 270.0}
    assert kl_inv["kl_rotation"] < 1e-3 < kl_pix["kl_rotation"]
    assert reconstruction_ssim(invariant, images[:8]) == pytest.approx(1.0)
    features = np.eye(6)[labels] + 0.05 * np.random.default_rng(0).normal(size=(len(labels), 6))
    assert probe_f1(features, labels, folds=3)["f1_mean"] == 1.0
    shuffled = probe_f1(np.random.default_rng(1).normal(size=(len(labels), 6)), labels, folds=3)
    assert shuffled["f1_mean"] < 0.5 and len(shuffled["f1_folds"]) == 3


def test_checkpoint_round_trip(tmp_path, tiny_cells):
    images, _ = tiny_cells
    config = CellTrainConfig(variant="equ-HNet", epochs=1, batch_size=32, **TINY)
    result = train_cell_vae(images[:32], images[32:48], config, progress=False)
    path = save_cell_vae(tmp_path / "model.pt", result.model, config, result.history)
    model, state = load_cell_vae(path)
    assert state["train_config"]["variant"] == "equ-HNet" and state["task"] == "cell-representation"
    assert torch.equal(model.encode(images[:4])[0], result.model.encode(images[:4])[0])


def test_experiment_runs_and_writes_a_synthetic_table(tmp_path):
    assert CellExperimentConfig(weights=(0.2, 0.9)).runs() == [("baseline", 0.0)] + [
        (v, w) for v in VARIANTS[1:] for w in (0.2, 0.9)]
    config = CellExperimentConfig(variants=("baseline", "inv-HNet"), weights=(0.2, 0.9), n_train=32, n_val=16,
                                  n_test=12, n_labelled=36, n_angles=3, folds=2,
                                  train=CellTrainConfig(epochs=1, batch_size=32, **TINY))
    rows = run_experiment(config, tmp_path, progress=False)
    assert [(r["variant"], r["rotation_weight"]) for r in rows] == [("baseline", 0.0), ("inv-HNet", 0.2), ("inv-HNet", 0.9)]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert "SYNTHETIC" in saved["label"] and len(saved["runs"]) == 3
    table = (tmp_path / "results.md").read_text()
    assert "SYNTHETIC" in table and "inv-HNet: KL" in table
    assert (tmp_path / "results.png").stat().st_size > 0 and len(list((tmp_path / "checkpoints").glob("*.pt"))) == 3
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        CellExperimentConfig(seed=-1)


# ---- command line -------------------------------------------------------------------------------------------

def test_cli_synth_train_evaluate(tmp_path, capsys):
    assert main(["cells", "synth", "--out", str(tmp_path / "cells"), "--n", "24", "--size", "16", "--no-progress"]) == 0
    assert (tmp_path / "cells" / "preview.png").is_file() and len(list((tmp_path / "cells").glob("*/*.png"))) == 24
    config = tmp_path / "cfg.yaml"
    config.write_text("variant: only-STN\nrotation_weight: 0.5\nsize: 16\nlatent_dim: 4\nwidth: 2\nepochs: 1\n"
                      f"out_dir: {tmp_path / 'run'}\ndata:\n  n_train: 32\n  n_val: 16\n")
    assert main(["cells", "train", "--config", str(config), "--set", "batch_size=16", "--no-progress"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"config.yaml", "model.pt", "history.csv"}
    assert main(["cells", "evaluate", "--checkpoint", str(tmp_path / "run" / "model.pt"), "--n-test", "8",
                 "--labelled", str(tmp_path / "cells"), "--angles", "3", "--folds", "2"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"kl_rotation", "ssim", "f1_mean"} <= set(metrics)


@pytest.mark.parametrize("argv, message", [
    (["cells", "train", "--set", "epochz=3"], "unknown config key 'epochz'"),
    (["cells", "train", "--set", "data.n_trian=3"], "unknown config key 'data.n_trian'"),
    (["cells", "train", "--set", "epochs=three"], "epochs must be an integer, got 'three'"),
    (["cells", "train", "--set", "lr=fast"], "lr must be a number, got 'fast'"),
    (["cells", "train", "--config", "missing.yaml"], "missing.yaml"),
    (["cells", "evaluate", "--checkpoint", "missing.pt"], "missing.pt does not exist"),
    (["cells", "experiment", "--set", "variants=[hnet]"], "variants must be"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
