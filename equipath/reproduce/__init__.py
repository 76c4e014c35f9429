"""Every table of the papers as one command: ``equipath reproduce TABLE --data-root R --out O [--synthetic]``.

A table is a declared plan of runs (:mod:`~equipath.reproduce.plan`): configs from the repository, one
folder per cell, resumable, and a markdown + CSV table beside the paper's own numbers.

Tables: ``pcam-table1`` (seed 000 Table 1), ``camelyon16-table2`` (seed 000 Table 2: data regime -> train
-> slide maps -> NMS chosen on validation maps -> FROC), ``gunet-dice`` (seed 001 Table 1), ``ocelot-mf1``
(seed 002), ``gerunet-table1`` (seed 004 Table 1, ablation rows), ``breakhis`` (seed 000 section 3.3:
pre-training, patient-wise folds, resolution-matched fine-tuning, max over crops), ``cells`` (seed 003:
cell VAEs at 256 px, six-fold cross-validation, probe F1).
"""

from equipath.reproduce.breakhis import BREAKHIS
from equipath.reproduce.camelyon16 import CAMELYON16_TABLE2
from equipath.reproduce.cells import CELLS
from equipath.reproduce.gunet import GERUNET_TABLE1, GUNET_DICE
from equipath.reproduce.ocelot import OCELOT_MF1
from equipath.reproduce.pcam import PCAM_TABLE1
from equipath.reproduce.plan import Cell, Context, Table, run_table

TABLES = {t.name: t for t in (PCAM_TABLE1, CAMELYON16_TABLE2, BREAKHIS, GUNET_DICE, OCELOT_MF1, GERUNET_TABLE1,
                              CELLS)}

__all__ = ["TABLES", "Table", "Cell", "Context", "run_table"]
