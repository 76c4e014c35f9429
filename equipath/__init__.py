"""equipath: rotation- and reflection-equivariant deep learning for computational pathology."""

__version__ = "0.1.0"
