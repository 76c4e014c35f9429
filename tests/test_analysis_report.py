"""The quick-start report's stability section: the stability figure and the equivariance table of the
trained models, computed on a synthetic region and labelled synthetic."""

import json
from types import SimpleNamespace

import pytest

from equipath import demo
from equipath.analysis.report import common_size
from equipath.checkpoint import save_checkpoint
from equipath.models import create_model



def test_demo_report_has_the_stability_figure_and_equivariance_table(tmp_path):
    results = []
    for name, kwargs in (("p4m_densenet", {"growth": 8, "stem": 1}), ("densenet", {"growth": 2, "stem": 3})):
        for fraction in (1.0, 0.5):
            out = tmp_path / "runs" / f"{name}_{fraction:g}"
            save_checkpoint(out / "best.pt", create_model(name, **kwargs), name=name, kwargs=kwargs,
                            normalization={"mean": [0.7, 0.5, 0.7], "std": [0.2, 0.2, 0.2]}, task="classification")
            results.append(SimpleNamespace(arm="classification", label=name, fraction=fraction, seed=0,
                                           checkpoint=out / "best.pt"))
    config = SimpleNamespace(fractions=(1.0, 0.5), seeds=(0,), seed=0, difficulty=1.0, stability_cells=2)
    run = SimpleNamespace(config=config, out_dir=tmp_path, arms={"classification": None},
                          arm_runs=lambda arm: [r for r in results if r.arm == arm])
    assert demo.stability_maps_section in demo.SECTIONS
    section = demo.stability_maps_section(run)
    assert "data fraction 0.5" in section.title and "synthetic" in section.title
    assert "![stability](stability.png)" in section.body and (tmp_path / "stability.png").stat().st_size > 1000
    assert "### Equivariance (SYNTHETIC DATA)" in section.body
    saved = json.loads((tmp_path / "stability.json").read_text())
    assert saved["synthetic"] is True and saved["image_size"] == [192, 192]  # 4 cells across: a 2 x 2 square
    stability = {r["model"]: r for r in saved["stability"]}
    equivariance = {r["model"]: r for r in saved["equivariance"]}
    assert stability["p4m_densenet"]["p4m_8_mean_std"] < 1e-6 < stability["densenet"]["p4m_8_mean_std"]
    assert equivariance["p4m_densenet"]["exact"] and not equivariance["densenet"]["exact"]
    assert f"| p4m_densenet | {stability['p4m_densenet']['rotations_32_mean_std']:.2e} |" in section.body


def test_common_size():
    dense, unet = create_model("densenet", growth=2), create_model("unet", width=4)
    assert common_size([dense], 150) == 160 and common_size([dense], 150, below=True) == 128
    assert common_size([unet], 20) == 33 and common_size([], 7) == 7
    with pytest.raises(ValueError, match="no square side"):
        common_size([dense, unet], 100)
