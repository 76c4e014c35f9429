"""A report section for the quick-start demo (and any report): the rotation-stability figure of seed 000
Fig. 3 / seed 001 Fig. 2 and the equivariance table, for an equivariant model next to its baseline.

Example:
    >>> import tempfile, torch
    >>> from equipath.models import create_model
    >>> models = {"p4m_densenet": create_model("p4m_densenet", growth=8, stem=1).eval(),
    ...           "densenet": create_model("densenet", growth=2, stem=2).eval()}
    >>> text = stability_section(models, torch.rand(3, 128, 128), tempfile.mkdtemp(), rotations=4)
    >>> "stability.png" in text and "| densenet |" in text
    True
"""

import logging
from pathlib import Path

import torch

from equipath.analysis.equivariance import format_error, layer_report
from equipath.analysis.io import SYNTHETIC_LABEL
from equipath.atomic import save_figure, write_json
from equipath.analysis.maps import ProbabilityMap
from equipath.analysis.stability import group_stability, image_tissue, rotation_stability, stability_figure
from equipath.groups import get_group

__all__ = ["stability_section", "stability_table", "equivariance_table", "common_size"]

log = logging.getLogger(__name__)


def common_size(models, target: int, below: bool = False) -> int:
    """The smallest square side ``>= target`` (the largest ``<= target`` with ``below``) that every model's
    ``size_rule`` admits (models without one take any size); ``ValueError`` when there is none nearby."""
    rules = [m.size_rule for m in models if hasattr(m, "size_rule")]
    sides = range(target, 0, -1) if below else range(target, target + 4096)
    for n in sides:
        if all(rule.admits(n) for rule in rules):
            return n
    raise ValueError(f"no square side {'up to' if below else 'from'} {target} suits every model "
                     f"({', '.join(map(str, rules))}): analyse them separately or give the size")


def stability_table(results: dict) -> list[dict]:
    """One row per model: the mean std over tissue for each set of transformations."""
    return [{"model": name, **{f"{r.transforms}_{r.count}_mean_std": r.summary for r in rs}}
            for name, rs in results.items()]


def equivariance_table(models: dict, group="p4m", local: bool = False) -> list[dict]:
    """One row per model: its equivariance error over every element of ``group`` at its ``input_size``
    (float64, random input in [0, 1], which a checkpoint's model normalises itself) and where exactness is
    lost."""
    group = get_group(group)
    rows = []
    for name, model in models.items():
        size = getattr(model, "input_size", (96, 96))
        x = torch.rand(1, 3, *size, dtype=torch.float64)
        report = layer_report(model, x, group, local=local)
        rows.append({"model": name, "model_group": getattr(getattr(model, "group", None), "name", None),
                     **report.summary()})
    return rows


def stability_section(models: dict, image: torch.Tensor, out_dir, *, synthetic: bool = True, rotations: int = 32, group="p4m", batch_size: int = 8,
                      heading: str = "##") -> str:
    """Compute, draw and describe the stability of ``models`` on one region, and their equivariance.

    Writes ``stability.png`` and ``stability.json`` into ``out_dir`` and returns the markdown of the
    section (figure link relative to ``out_dir``, stability table, equivariance table).

    Args:
        models: ``{name: model}`` in eval mode, e.g. the equivariant model and its baseline, taking RGB in
            [0, 1] (checkpoints' models from :func:`equipath.models.load_model` normalise their input).
        image: ``(3, H, H)`` RGB in [0, 1], a size every model takes (e.g. 160 x 160 for the DenseNets).
        out_dir: the report's folder.
        synthetic: the region is synthetic (label the figure and the text). Defaults to True.
        rotations: sub-90-degree rotations. Defaults to 32 (seed 000 Fig. 3).
        group: the exact transformations, and the group of the equivariance check. Defaults to ``"p4m"``.
        batch_size: images per forward pass. Defaults to 8.
        heading: markdown heading level of the section. Defaults to ``"##"``.
    """
    out_dir = Path(out_dir)
    group = get_group(group)
    tissue = image_tissue(image)
    results = {}
    for name, model in models.items():
        predictor = ProbabilityMap(model)
        log.info("stability of %s: %d rotations and %d %s elements", name, rotations, group.order, group.name)
        results[name] = [rotation_stability(predictor, image, rotations, tissue, batch_size),
                         group_stability(predictor, image, group, tissue, batch_size)]
    save_figure(stability_figure(image, results, synthetic), out_dir / "stability.png")
    stability = stability_table(results)
    equivariance = equivariance_table(models, group)
    write_json(out_dir / "stability.json", {"synthetic": synthetic, "image_size": list(image.shape[1:]),
                                            "tissue_fraction": float(tissue.float().mean()),
                                            "stability": stability, "equivariance": equivariance})
    label = f" ({SYNTHETIC_LABEL})" if synthetic else ""
    rot_key, grp_key = f"rotations_{rotations}_mean_std", f"{group.name}_{group.order}_mean_std"
    lines = [f"{heading} Rotation stability{label}", "",
             f"One {image.shape[-2]} x {image.shape[-1]} region predicted under {rotations} rotations in "
             f"[0, 90) degrees and under the {group.order} roto-reflections of {group.name}, each prediction "
             "rotated back; mean and standard deviation of the tumour probability per pixel (seed 000 Fig. 3, "
             "seed 001 Fig. 2). Summary: mean standard deviation over tissue.", "",
             "![stability](stability.png)", "",
             f"| model | mean std, {rotations} rotations | mean std, {group.order} {group.name} elements |",
             "|---|---|---|"]
    lines += [f"| {r['model']} | {r[rot_key]:.2e} | {r[grp_key]:.2e} |" for r in stability]
    lines += ["", f"{heading} Equivariance{label}", "",
              f"Relative error max |f(g x) - g f(x)| / max |f(x)| over the {group.order} elements of {group.name}, "
              "float64, at each model's input size (`equipath analyze equivariance` gives it layer by layer).", "",
              "| model | group | max error | mean error | exact | first layer that is not |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['model_group']} | {format_error(r['max_error'])} | {format_error(r['mean_error'])} "
              f"| {'yes' if r['exact'] else 'no'} | {r['first_broken'] or '-'} |" for r in equivariance]
    return "\n".join(lines) + "\n"
