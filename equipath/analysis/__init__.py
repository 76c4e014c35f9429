"""Analyses of equivariance, stability, test-time augmentation, sample efficiency and filter redundancy:
the papers' figures and tables as functions (``equipath analyze ...`` on the command line).

- :func:`layer_report` (:mod:`~equipath.analysis.equivariance`): maximum and mean equivariance error over
  every group element, layer by layer, and the layers that lose exactness.
- :func:`rotation_stability`, :func:`group_stability` (:mod:`~equipath.analysis.stability`): mean and
  standard-deviation maps of predictions under 32 sub-90-degree rotations and the 8 roto-reflections
  (seed 000 Fig. 3, seed 001 Fig. 2); :func:`stability_section` draws them for a report.
- :class:`GroupTTA`, :func:`compare_tta` (:mod:`~equipath.analysis.tta`): 8x D4 test-time augmentation
  against an equivariant model: accuracy, stability, seconds per image.
- :class:`EfficiencyPlan`, :func:`run_efficiency` (:mod:`~equipath.analysis.efficiency`): models x data
  regimes x seeds, resumable, metric vs data fraction with error bars (seed 000 Table 2, seed 001 Table 1).
- :func:`model_redundancy` (:mod:`~equipath.analysis.redundancy`): the fraction of filters close to a
  rotated or mirrored copy of another filter.
"""

from equipath.analysis.efficiency import EfficiencyPlan, ModelRun, run_efficiency, summarize
from equipath.analysis.equivariance import EquivarianceReport, LayerError, layer_report
from equipath.analysis.maps import ProbabilityMap
from equipath.analysis.redundancy import RedundancyReport, model_redundancy
from equipath.analysis.report import stability_section
from equipath.analysis.stability import StabilityResult, group_stability, rotation_stability
from equipath.analysis.tta import GroupTTA, compare_tta

__all__ = ["layer_report", "EquivarianceReport", "LayerError", "ProbabilityMap", "rotation_stability",
           "group_stability", "StabilityResult", "stability_section", "GroupTTA", "compare_tta",
           "EfficiencyPlan", "ModelRun", "run_efficiency", "summarize", "model_redundancy", "RedundancyReport"]
