"""AdaTosk: adaptive temporal soft mask for efficient dynamic facial expression recognition.

Importing the package registers the models in timm's registry, so that
``timm.create_model("adatosk_vit_base_patch16_160", num_classes=7)`` works after ``import adatosk``.
"""

__version__ = "0.1.0"

from adatosk import models  # noqa: E402,F401  (registers the timm models)
