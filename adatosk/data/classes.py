"""Class orders of the three benchmarks (0-based labels in code), and the one mapping to DFER-CLIP's MAFW order.

DFEW's split files number the classes 1..7 in the order below; FERV39K and MAFW name them. Our MAFW order is
MAE-DFER's; DFER-CLIP lists MAFW's classes in another order, so its list files need the mapping below.
"""

from __future__ import annotations

CLASS_NAMES: dict[str, list[str]] = {
    "dfew": ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"],
    "ferv39k": ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"],
    "mafw": [
        "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
        "contempt", "anxiety", "helplessness", "disappointment",
    ],
}

# DFER-CLIP's class order per layout (its models/Text.py prompts and annotation/*.txt labels, 0-based).
DFER_CLIP_CLASS_NAMES: dict[str, list[str]] = {
    "dfew": CLASS_NAMES["dfew"],
    "ferv39k": CLASS_NAMES["ferv39k"],
    "mafw": [
        "happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear",
        "contempt", "anxiety", "helplessness", "disappointment",
    ],
}


def class_names(layout: str) -> list[str]:
    if layout not in CLASS_NAMES:
        raise KeyError(f"unknown dataset layout {layout!r}; expected one of {sorted(CLASS_NAMES)}")
    return CLASS_NAMES[layout]


def label_of(layout: str, name: str) -> int:
    """0-based label of a class name as written in a split file (case-insensitive); ``KeyError`` if unknown."""
    names = class_names(layout)
    key = name.strip().lower()
    if key not in names:
        raise KeyError(f"unknown {layout} class {name!r}; expected one of {names}")
    return names.index(key)


def to_dfer_clip_label(layout: str, label: int) -> int:
    """Our 0-based label -> DFER-CLIP's 0-based label of the same class."""
    return DFER_CLIP_CLASS_NAMES[layout].index(class_names(layout)[label])
