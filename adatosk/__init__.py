"""AdaTosk: adaptive temporal soft mask for efficient dynamic facial expression recognition.

The package itself imports neither torch nor timm, so that ``adatosk --help`` and every command start with only
what they use. ``import adatosk.models`` registers the models in timm::

    import adatosk.models, timm
    model = timm.create_model("adatosk_vit_base_patch16_160", num_classes=7)
"""

__version__ = "0.1.0"
