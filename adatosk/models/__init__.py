"""Models: AdaTosk and the VideoMAE baseline, registered in timm on import (see ``registry``).

``import adatosk.models`` makes ``timm.create_model("adatosk_vit_base_patch16_160", num_classes=7)`` work.
"""

from adatosk.models.adatosk import AdaTosk, AdaToskFeatures
from adatosk.models.masking import tube_mask
from adatosk.models.output import ModelOutput
from adatosk.models.registry import create_model, create_model_from_config
from adatosk.models.videomae import VideoMAEClassifier

__all__ = ["AdaTosk", "AdaToskFeatures", "ModelOutput", "VideoMAEClassifier", "create_model",
           "create_model_from_config", "tube_mask"]
