"""The quick-start job behind ``equipath demo`` (the README's first command): a small experiment on
SYNTHETIC data that can tell an equivariant model from its planar baselines.

1. Write the procedural data (:mod:`equipath.data.synthetic`, at its default difficulty, chosen so that
   the baseline is well below saturation): a PCam-format set and segmentation tiles, under
   ``<out_dir>/data`` (reused when its recipe is unchanged).
2. For each task, train every model at every data fraction (down to a few dozen items) with several
   seeds (:mod:`equipath.demo.run`): ``p4m_densenet`` vs ``densenet`` with and without D4 augmentation,
   ``p4m_unet`` vs ``unet`` likewise; test each best-validation checkpoint on the held-out split.
3. Report (:mod:`equipath.demo.report`): mean and spread over seeds per cell, metric-vs-fraction curves
   with error bars, a paired comparison per fraction with its bootstrap interval and sentences generated
   from it, rotation-stability maps and the equivariance table, example predictions, timings; written to
   ``<out_dir>/report.md`` and ``report.json``, every number labelled synthetic.

The defaults take about 10 minutes on a 2-core CPU; ``DemoConfig().full()`` (``equipath demo --full``)
is longer and more decisive. Every run retrains from scratch (``<out_dir>/runs`` is replaced); each run
folder keeps its test records, so ``report_only=True`` (``equipath demo --report-only``) rewrites the
report from a finished experiment without training.

Example:
    >>> from equipath.demo import DemoConfig, run_demo
    >>> run = run_demo(DemoConfig(out_dir="runs/demo"))  # doctest: +SKIP
    >>> run.report_path  # doctest: +SKIP
    PosixPath('runs/demo/report.md')
"""

from equipath.demo.report import SECTIONS, stability_maps_section, write_report
from equipath.demo.run import CLASSIFIERS, SEGMENTERS, DemoConfig, DemoRun, RunRecord, load_experiment, run_experiment

__all__ = ["DemoConfig", "DemoRun", "RunRecord", "run_demo", "run_experiment", "load_experiment", "write_report",
           "SECTIONS", "CLASSIFIERS", "SEGMENTERS", "stability_maps_section"]


def run_demo(config: DemoConfig = DemoConfig(), report_only: bool = False, resume: bool = False,
             partial: bool = False) -> DemoRun:
    """Run the experiment (with ``resume``, keep the finished runs of the same settings; with
    ``report_only``, read back the one in ``config.out_dir``, only its finished runs with ``partial``) and
    write its report; returns the :class:`DemoRun` with ``report_path`` set."""
    run = load_experiment(config, partial) if report_only else run_experiment(config, resume)
    write_report(run)
    return run
