"""The label of the analyses' synthetic outputs. Their files are written by :mod:`equipath.atomic`
(``write_json``, ``write_csv``, ``save_figure``): every file appears whole or not at all.
"""

__all__ = ["SYNTHETIC_LABEL"]

SYNTHETIC_LABEL = "SYNTHETIC DATA"
