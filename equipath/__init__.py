"""equipath: rotation- and reflection-equivariant deep learning for computational pathology."""

import os

__version__ = "0.1.0"

# PyTorch's CPU allocator backs blocks of 2 MB and more with transparent huge pages when this is set (read
# once, at the first such allocation, so it must be set before torch allocates). A fresh activation then
# costs one page fault per 2 MB instead of one per 4 KB: on the CPU an element-wise layer on a fresh
# 375 MB map ran 4x faster, and a p4m_densenet slide tile 1.3x (docs/benchmarks.md). The user's own
# setting, 0 included, is kept.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
