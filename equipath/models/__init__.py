"""The papers' models, registered by name: ``create_model(name, **kwargs)``, ``list_models()``.

| family | seed | names | input sides |
|---|---|---|---|
| G-CNN DenseNet patch classifier | 000 | p4m_densenet, p4m_densenet_m, p4_densenet, densenet, densenet_m | 96 + 32k |
| GU-Net / P4M U-Net | 001 | p4m_unet, p4_unet, unet | 17 + 16k |
| GER-UNet / Res-UNet | 004 | p4m_gerunet, p4m_gerunet_concat, resunet | 9 + 8k |
| Isotropic U-Net | 002 | iso_unet, iso_unet_baseline | 16 + 16k |

Every model has ``group``, ``task``, ``num_classes``, ``input_size`` (an exactly equivariant size),
``size_rule`` and ``check_input_size(h, w)``; ``equipath models`` prints the table with parameter counts.

Example:
    >>> import torch
    >>> from equipath.models import create_model
    >>> model = create_model("p4m_unet", width=8).eval()
    >>> model(torch.rand(1, 3, *model.input_size)).shape
    torch.Size([1, 2, 33, 33])
"""

from equipath.models import densenet, gerunet, isounet, unet  # noqa: F401  (registers the models)
from equipath.models.base import ModelBase, SegmentationModel, SizeRule
from equipath.models.pretrained import Normalized, load_model
from equipath.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "load_model", "Normalized", "ModelBase", "SegmentationModel",
           "SizeRule"]
