"""Stain normalisation: Macenko and Reinhard against values fixed by construction (Beer-Lambert images of
known stain vectors; LAB values chosen by hand), and a fitted reference stored in and applied from a
checkpoint."""

import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab

from equipath.checkpoint import load_checkpoint, save_checkpoint
from equipath.data.stain import (MacenkoNormalizer, StainTransform, fit_stain_normalizer, stain_from_checkpoint,
                                 stain_from_state)
from equipath.models import create_model

H = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])  # Ruifrok & Johnston's haematoxylin
E = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])  # and eosin
H2 = np.array([0.55, 0.78, 0.30]) / np.linalg.norm([0.55, 0.78, 0.30])  # another scanner's stains
E2 = np.array([0.15, 0.95, 0.27]) / np.linalg.norm([0.15, 0.95, 0.27])


def beer_lambert(concentrations: np.ndarray, h: np.ndarray, e: np.ndarray) -> np.ndarray:
    """RGB in (0, 1] of ``(H, W, 2)`` concentrations: ``exp(-(c_H h + c_E e))``."""
    return np.exp(-(concentrations[..., :1] * h + concentrations[..., 1:] * e))


def concentrations() -> np.ndarray:
    """A 20 x 20 image: a quarter pure haematoxylin, a quarter pure eosin, the rest mixtures."""
    rng = np.random.default_rng(0)
    c = rng.uniform(0.3, 1.2, (20, 20, 2))
    c[:5, :, 1] = 0.0
    c[:5, :, 0] = rng.uniform(2.5, 3.0, (5, 20))
    c[5:10, :, 0] = 0.0
    c[5:10, :, 1] = rng.uniform(2.5, 3.0, (5, 20))
    return c


def test_macenko_recovers_the_stain_vectors_and_maps_one_scanner_onto_another():
    c = concentrations()
    reference = beer_lambert(c, H, E)
    norm = MacenkoNormalizer().fit(reference)
    np.testing.assert_allclose(norm.stain_matrix, np.stack([H, E]), atol=1e-3)  # haematoxylin first
    np.testing.assert_allclose(norm.max_concentrations, np.percentile(c.reshape(-1, 2), 99, axis=0), rtol=1e-3)
    # the same tissue through other stains at 1.5 x the concentration: normalised back onto the reference
    source = beer_lambert(1.5 * c, H2, E2)
    np.testing.assert_allclose(norm(source), reference, atol=2e-3)
    assert np.abs(source - reference).max() > 0.2  # the normalisation did something


def test_reinhard_moves_lab_statistics_to_the_reference():
    # hand-picked LAB: source L 40/60 (mean 50, sd 10), a 10/20 (15, 5), b -10/10 (0, 10);
    # reference L 50/70 (60, 10), a 0/10 (5, 5), b 0/4 (2, 2)  =>  normalised source = reference exactly
    source_lab = np.array([[[40.0, 10.0, -10.0], [60.0, 20.0, 10.0]]])
    reference_lab = np.array([[[50.0, 0.0, 0.0], [70.0, 10.0, 4.0]]])
    source, reference = lab2rgb(source_lab), lab2rgb(reference_lab)
    norm = fit_stain_normalizer("reinhard", reference)
    np.testing.assert_allclose(norm.mean, [60.0, 5.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(norm.std, [10.0, 5.0, 2.0], atol=1e-6)
    out = norm(source)
    np.testing.assert_allclose(rgb2lab(out), reference_lab, atol=1e-6)
    np.testing.assert_allclose(out, reference, atol=1e-9)


def test_uint8_and_tensor_inputs_keep_their_kind():
    reference = (beer_lambert(concentrations(), H, E) * 255).round().astype(np.uint8)
    for method in ("macenko", "reinhard"):
        norm = fit_stain_normalizer(method, reference)
        out = norm(reference)
        assert out.dtype == np.uint8 and out.shape == reference.shape
        assert np.abs(out.astype(int) - reference.astype(int)).max() <= 3  # the reference maps onto itself
        tensor = torch.from_numpy(reference.transpose(2, 0, 1).astype(np.float32) / 255)
        image, mask = StainTransform(norm)(tensor, "mask")
        assert image.dtype == torch.float32 and image.shape == tensor.shape and mask == "mask"
        np.testing.assert_allclose(image.numpy(), out.transpose(2, 0, 1) / 255, atol=1 / 255 + 1e-6)
    with pytest.raises(ValueError, match="unknown method"):
        fit_stain_normalizer("vahadane", reference)
    with pytest.raises(ValueError, match="blank"):
        fit_stain_normalizer("macenko", np.full((8, 8, 3), 255, np.uint8))


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_reference_travels_in_the_checkpoint(tmp_path, method):
    reference = beer_lambert(concentrations(), H, E)
    image = beer_lambert(1.5 * concentrations()[::-1], H2, E2)
    norm = fit_stain_normalizer(method, reference)
    model = create_model("p4m_densenet", growth=8)
    path = save_checkpoint(tmp_path / "model.pt", model, name="p4m_densenet", kwargs={"growth": 8},
                           normalization={"mean": [0.5] * 3, "std": [0.2] * 3}, task="classification",
                           stain=norm.state_dict())
    loaded = stain_from_checkpoint(load_checkpoint(path))  # torch.load(weights_only=True) inside
    assert type(loaded) is type(norm)
    np.testing.assert_array_equal(loaded(image), norm(image))
    assert stain_from_checkpoint({"model": {}}) is None
    with pytest.raises(ValueError, match="unknown method"):
        stain_from_state({"method": "x"})


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_fixed_source_applies_one_mapping_to_every_tile(method):
    """from_source(whole image) then tile by tile equals normalising the whole image at once."""
    reference = beer_lambert(concentrations(), H, E)
    image = beer_lambert(1.5 * concentrations()[:, ::-1], H2, E2)
    norm = fit_stain_normalizer(method, reference)
    fixed = norm.from_source(image)
    tiles = np.concatenate([fixed(image[:10]), fixed(image[10:])])
    np.testing.assert_allclose(tiles, norm(image), atol=1e-12)
    assert np.abs(norm(image[10:]) - tiles[10:]).max() > 1e-3  # a tile without pure stains, measured alone


def test_predict_slide_applies_the_checkpoint_stain(tmp_path):
    """A checkpoint carrying a Reinhard reference: predict_slide's map equals the map of the image normalised
    beforehand with the mapping measured on the slide's tissue (cells whose patch lies inside the image)."""
    from equipath.data.synthetic import synthetic_tile
    from equipath.wsi.inference import Grid, tissue_cells
    from equipath.wsi.pipeline import PredictOptions, predict_slide
    from equipath.wsi.reader import SlideView, open_slide

    torch.manual_seed(0)
    model = create_model("p4m_densenet", growth=8).eval()
    image = synthetic_tile(1, size=(224, 288)).image
    norm = fit_stain_normalizer("reinhard", (beer_lambert(concentrations(), H, E) * 255).astype(np.uint8))
    options = PredictOptions(mpp=None, progress=False, device="cpu")
    with open_slide(image) as reader:
        view = SlideView.at(reader, mpp=None)
        thumbnail, mask, _ = tissue_cells(view, Grid.for_view(view, model), options.tissue)
    expected_image = norm.from_source(thumbnail[mask][None])(image)
    predict_slide(image, tmp_path / "stained", model, {"stain": norm.state_dict()}, options)
    predict_slide(expected_image, tmp_path / "expected", model, {}, options)
    predict_slide(image, tmp_path / "raw", model, {}, options)
    got, want, raw = (np.load(tmp_path / f / "probability.npy") for f in ("stained", "expected", "raw"))
    inside = (slice(1, (224 - 64) // 32 + 1), slice(1, (288 - 64) // 32 + 1))  # patches fully inside the image
    assert np.isfinite(got[inside]).all() and np.isfinite(want[inside]).all()
    np.testing.assert_allclose(got[inside], want[inside], atol=1e-5)
    assert np.abs(got[inside] - raw[inside]).max() > 1e-4  # the stain changed the input
