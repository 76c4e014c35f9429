"""Fine-tuning (``init_from``), stain normalisation from the config, and the Gaussian cell target."""

import numpy as np
import pytest
import torch

from equipath.checkpoint import load_checkpoint, save_checkpoint
from equipath.data import write_synthetic_pcam
from equipath.models import create_model
from equipath.training import TrainConfig, train


@pytest.fixture(scope="module")
def pcam_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcam")
    write_synthetic_pcam(root, {"train": 32, "valid": 16, "test": 16}, seed=0, progress=False)
    return root


def _config(out, root, **extra):
    values = {"model": "densenet", "model_kwargs": {"growth": 2}, "epochs": 1, "batch_size": 8,
              "batches_per_epoch": 1, "eval_batch_size": 16, "progress": False, "out_dir": str(out),
              "data": {"dataset": "pcam", "root": str(root), "val_samples": 16}}
    data = extra.pop("data", {})
    values.update(extra)
    values["data"].update(data)
    return TrainConfig.from_dict(values)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_init_from_starts_from_the_checkpoint_weights(pcam_root, tmp_path):
    source = create_model("densenet", growth=2)
    with torch.no_grad():
        for p in source.parameters():
            p.fill_(0.0125)
    path = save_checkpoint(tmp_path / "source.pt", source, name="densenet", kwargs={"growth": 2},
                           normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, task="classification")
    # lr tiny: after one step the weights are still those of the checkpoint, not a random initialisation
    result = train(_config(tmp_path / "run", pcam_root, init_from=str(path), lr=1e-9))
    weights = load_checkpoint(result.last)["state_dict"]
    conv = next(k for k, v in weights.items() if v.dim() == 4)
    assert torch.allclose(weights[conv], torch.full_like(weights[conv], 0.0125), atol=1e-6)
    assert load_checkpoint(result.last)["config"]["init_from"] == str(path)
    assert load_checkpoint(result.last)["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}


def test_init_from_a_checkpoint_of_another_shape_fails_in_one_line(pcam_root, tmp_path):
    other = create_model("densenet", growth=4)
    path = save_checkpoint(tmp_path / "other.pt", other, name="densenet", kwargs={"growth": 4},
                           normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, task="classification")
    with pytest.raises(ValueError, match=r"the weights do not fit the model: .* has shape") as info:
        train(_config(tmp_path / "run", pcam_root, init_from=str(path)))
    assert "\n" not in str(info.value) and "other.pt" in str(info.value)


def test_init_from_a_missing_file_is_named(pcam_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        train(_config(tmp_path / "run", pcam_root, init_from=str(tmp_path / "nothing.pt")))


def _reference(path):
    from PIL import Image

    rng = np.random.default_rng(3)
    image = np.stack([rng.integers(120, 200, (48, 48)), rng.integers(40, 110, (48, 48)),
                      rng.integers(130, 220, (48, 48))], -1).astype(np.uint8)
    Image.fromarray(image).save(path)
    return path


def test_stain_config_is_validated():
    with pytest.raises(ValueError, match="data.stain.method must be one of macenko, reinhard"):
        TrainConfig.from_dict({"model": "densenet", "data": {"stain": {"method": "vahadane", "reference": "r.png"}}})
    with pytest.raises(ValueError, match="data.stain must have exactly the keys method and reference"):
        TrainConfig.from_dict({"model": "densenet", "data": {"stain": {"method": "reinhard"}}})


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_stain_is_fitted_saved_in_the_checkpoint_and_applied_by_predict(tmp_path, method):
    from equipath.data.stain import fit_stain_normalizer, stain_from_checkpoint
    from equipath.models import load_model
    from equipath.wsi.segment_pipeline import SegmentOptions, segment_slide

    reference = _reference(tmp_path / "reference.png")
    config = TrainConfig.from_dict({
        "model": "iso_unet", "model_kwargs": {"width": 2}, "epochs": 1, "batch_size": 2, "batches_per_epoch": 1,
        "progress": False, "out_dir": str(tmp_path / "run"),
        "data": {"dataset": "synthetic_segmentation", "patch_size": 32, "augment": ["d4"],
                 "synthetic_size": {"train": 4, "valid": 2, "test": 2},
                 "stain": {"method": method, "reference": str(reference)}}})
    result = train(config)
    state = load_checkpoint(result.last)
    assert state["stain"] == fit_stain_normalizer(method, reference).state_dict()
    assert load_checkpoint(result.best)["stain"]["method"] == method
    model, checkpoint = load_model(result.best)
    image = np.random.default_rng(1).integers(30, 230, (40, 44, 3), dtype=np.uint8)
    options = SegmentOptions(tissue=None, progress=False, device="cpu", dtype="float32")
    segment_slide(image, tmp_path / "stained", model, checkpoint, options)
    # by hand: the image normalised by the checkpoint's stain (measured on the whole image), no stain stored
    by_hand = stain_from_checkpoint(checkpoint).from_source(image[None].reshape(1, -1, 3))(image)
    assert not np.array_equal(by_hand, image)
    plain = {k: v for k, v in checkpoint.items() if k != "stain"}
    segment_slide(by_hand, tmp_path / "by_hand", model, plain, options)
    raw = tmp_path / "raw"
    segment_slide(image, raw, model, plain, options)
    stained = np.load(tmp_path / "stained" / "probabilities.npy")
    np.testing.assert_allclose(stained, np.load(tmp_path / "by_hand" / "probabilities.npy"), atol=1e-6)
    assert not np.allclose(stained, np.load(raw / "probabilities.npy"), atol=1e-4)


def test_stain_transform_passes_a_blank_patch_unchanged():
    from equipath.data.stain import StainTransform, fit_stain_normalizer

    norm = fit_stain_normalizer("macenko", np.random.default_rng(0).integers(40, 200, (32, 32, 3), dtype=np.uint8))
    blank = torch.ones(3, 16, 16)
    image, _ = StainTransform(norm)(blank, None)
    assert torch.equal(image, blank)
    with pytest.raises(ValueError, match="tissue pixels"):
        norm(blank)


def test_heatmap_mse_against_a_hand_value():
    from equipath.training.losses import build_loss

    # one pixel, 3 classes: logits (0, ln 2, ln 1) -> softmax (1/4, 2/4, 1/4); heatmap (1, 0)
    logits = torch.tensor([0.0, np.log(2.0), 0.0]).reshape(1, 3, 1, 1)
    target = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    loss = build_loss("heatmap_mse")
    expected = ((0.5 - 1.0) ** 2 + (0.25 - 0.0) ** 2) / 2  # 0.15625
    assert float(loss(logits, target)) == pytest.approx(expected, abs=1e-7)
    labels = loss.labels(torch.tensor([[[[0.9, 0.2]], [[0.6, 0.4]]]]))  # (1, 2, 1, 2)
    assert labels.tolist() == [[[1, 0]]]
    with pytest.raises(ValueError, match="heatmap target"):
        loss(logits, torch.zeros(1, 3, 1, 1))


def test_gaussian_cell_target_config_is_checked():
    with pytest.raises(ValueError, match="does not fit data.cell_target 'gaussian'"):
        TrainConfig.from_dict({"model": "iso_unet", "loss": "dice_ce",
                               "data": {"dataset": "ocelot", "cell_target": "gaussian"}})
    with pytest.raises(ValueError, match="does not fit data.cell_target 'disk'"):
        TrainConfig.from_dict({"model": "iso_unet", "loss": "heatmap_mse", "data": {"dataset": "ocelot"}})
    with pytest.raises(ValueError, match="is for data.dataset ocelot"):
        TrainConfig.from_dict({"model": "iso_unet", "data": {"dataset": "synthetic_segmentation",
                                                             "cell_target": "gaussian"}})


def test_a_gaussian_cell_target_trains(tmp_path):
    from equipath.data.synthetic_sets import write_synthetic_ocelot

    root = write_synthetic_ocelot(tmp_path / "ocelot", 2, size=32, seed=0, progress=False)
    config = TrainConfig.from_dict({
        "model": "iso_unet", "model_kwargs": {"width": 2, "num_classes": 3}, "epochs": 2, "batch_size": 2,
        "batches_per_epoch": 2,
        "lr": 1e-2, "progress": False, "out_dir": str(tmp_path / "run"),
        "data": {"dataset": "ocelot", "root": str(root), "cell_target": "gaussian", "cell_sigma": 3.0,
                 "augment": ["d4"]}})
    result = train(config)
    assert load_checkpoint(result.last)["config"]["data"]["cell_target"] == "gaussian"
    first, last = result.history
    assert 0.0 < last["train_loss"] < 1.0 and {"val_loss", "val_dice"} <= set(last)
    assert last["val_loss"] < first["val_loss"] or last["train_loss"] < first["train_loss"]


def test_evaluate_applies_the_checkpoints_stain_normalisation(tmp_path):
    """``equipath evaluate`` sees the inputs the model was trained on: the stored stain normaliser is applied
    to every item, exactly as applying it by hand to the data set does."""
    from equipath.data import write_synthetic_tiles
    from equipath.data.stain import StainTransform, stain_from_checkpoint
    from equipath.evaluation.evaluate import evaluate_checkpoint, evaluate_model, open_dataset
    from equipath.models import load_model

    reference = _reference(tmp_path / "reference.png")
    result = train(TrainConfig.from_dict({
        "model": "iso_unet", "model_kwargs": {"width": 2}, "epochs": 1, "batch_size": 2, "batches_per_epoch": 1,
        "progress": False, "out_dir": str(tmp_path / "run"),
        "data": {"dataset": "synthetic_segmentation", "patch_size": 32, "synthetic_size": {"train": 4, "valid": 2},
                 "stain": {"method": "reinhard", "reference": str(reference)}}}))
    write_synthetic_tiles(tmp_path / "seg" / "test", 2, (32, 32), split="test", progress=False)
    state = load_checkpoint(result.best)
    torch.save({k: v for k, v in state.items() if k != "stain"}, tmp_path / "plain.pt")
    common = dict(patch_size=32, progress=False, n_bootstrap=0)
    stained = evaluate_checkpoint(result.best, tmp_path / "seg", "segmentation", "test", **common)
    plain = evaluate_checkpoint(tmp_path / "plain.pt", tmp_path / "seg", "segmentation", "test", **common)
    model, _ = load_model(tmp_path / "plain.pt")
    data = open_dataset("segmentation", tmp_path / "seg", "test", 32,
                        transform=StainTransform(stain_from_checkpoint(state)))
    by_hand = evaluate_model(model, data, progress=False, n_bootstrap=0)
    assert stained["metrics"] == pytest.approx(by_hand["metrics"], abs=1e-9)
    assert stained["metrics"] != pytest.approx(plain["metrics"], abs=1e-9)
