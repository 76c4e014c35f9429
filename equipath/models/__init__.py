"""The papers' models, registered by name: ``create_model(name, **kwargs)``, ``list_models()``.

| family | seed | names |
|---|---|---|
| G-CNN DenseNet patch classifier | 000 | p4m_densenet, p4m_densenet_m, p4_densenet, densenet, densenet_m |

Every model has ``group``, ``task``, ``num_classes``, ``input_size`` (an exactly equivariant size),
``size_rule`` and ``check_input_size(h, w)``.
"""

from equipath.models import densenet  # noqa: F401  (registers the models)
from equipath.models.base import ModelBase, SizeRule
from equipath.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "ModelBase", "SizeRule"]
