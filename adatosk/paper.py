"""The paper's quoted numbers and grids, as printed: the one place `adatosk tables` and `adatosk flops` read them.

Table 1 compares methods on DFEW, FERV39K and MAFW; Tables 2-4 are ablations on DFEW (hard mask ratio x excluded
tokens r; soft-mask strategies; distance functions). Values stay the strings the paper prints ("-": not reported),
so that a table quotes them digit for digit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DATASETS = ("dfew", "ferv39k", "mafw")  # Table 1's columns, in order
ABLATION_DATASET = "dfew"               # the dataset of Tables 2-4
NOT_REPORTED = "-"

# Table 1: method, backbone, #params (M), FLOPs (G), then UAR, WAR on DFEW, FERV39K, MAFW. The last row is
# AdaTosk-dagger (its name was lost in the text extraction: "(Ours)").
TABLE1: tuple[tuple[str, ...], ...] = (
    ("EC-STFL (MM'20)", "C3D / P3D", "78", "8", "45.35", "56.51", "-", "-", "-", "-"),
    ("Former-DFER (MM'21)", "Transformer", "18", "9", "53.69", "65.70", "37.20", "46.85", "31.16", "43.27"),
    ("T-ESFL (MM'22)", "Transformer", "-", "-", "-", "-", "-", "-", "33.28", "48.18"),
    ("Freq-HD (MM'23)", "VGG13-LSTM", "-", "9", "-", "-", "32.79", "44.54", "-", "-"),
    ("M3DFEL (CVPR'23)", "ResNet-18-3D", "-", "2", "56.10", "69.25", "35.94", "47.67", "-", "-"),
    ("IAL (AAAI'23)", "ResNet-18", "19", "10", "55.71", "69.24", "35.82", "48.54", "-", "-"),
    ("DFER-CLIP (BMVC'23)", "CLIP-ViT-B/32", "90", "-", "59.61", "71.25", "41.27", "51.65", "39.89", "52.55"),
    ("CLIPER (ICME'24)", "CLIP-ViT-B/16", "88", "-", "57.56", "70.84", "41.23", "51.34", "-", "-"),
    ("EmoCLIP (FG'24)", "CLIP-ViT-B/32", "-", "-", "58.04", "62.12", "31.41", "36.18", "34.24", "41.46"),
    ("A3lign-DFER (ArXiv'24)", "CLIP-ViT-L/14", "-", "-", "64.09", "74.20", "41.87", "51.77", "42.07", "53.24"),
    ("VideoMAE (NeurIPS'22)", "ViT-B/16", "86", "82", "63.60", "74.60", "-", "-", "42.87", "53.51"),
    ("MAE-DFER (MM'23)", "ViT-B/16", "85", "50", "62.59", "74.88", "43.12", "52.07", "41.62", "54.31"),
    ("SVFAP (TAC'24)", "ViT-B/16", "78", "44", "62.63", "74.81", "42.14", "52.29", "41.19", "54.28"),
    ("HICMAE (Fusion'24)", "ViT-B/16", "81", "46", "63.76", "75.01", "-", "-", "42.65", "56.17"),
    ("MMA-DFER (CVPRW'24)", "ViT-B/16", "-", "-", "67.01", "77.51", "-", "-", "44.11", "58.52"),
    ("AdaTosk (Ours)", "ViT-B/16", "74", "44", "64.93", "75.95", "44.34", "54.24", "42.26", "56.81"),
    ("AdaTosk† (Ours)", "ViT-B/16", "72", "40", "66.76", "77.54", "46.28", "56.52", "44.15", "57.92"),
)
# Our variant names of the Table 1 rows this code builds.
TABLE1_METHODS = {"videomae": "VideoMAE (NeurIPS'22)", "mae_dfer": "MAE-DFER (MM'23)", "adatosk": "AdaTosk (Ours)",
                  "adatosk_dagger": "AdaTosk† (Ours)"}


def table1_row(variant: str) -> tuple[str, ...] | None:
    """The printed Table 1 row of one of our variants; None for a variant the paper does not list."""
    method = TABLE1_METHODS.get(variant)
    return next((row for row in TABLE1 if row[0] == method), None)


def table1_score(variant: str, dataset: str, metric: str) -> str:
    """The quoted UAR or WAR (``metric``) of ``variant`` on ``dataset``; ``-`` where the paper reports none."""
    row = table1_row(variant)
    if row is None or dataset not in DATASETS:
        return NOT_REPORTED
    return row[4 + 2 * DATASETS.index(dataset) + ("uar", "war").index(metric)]


# Table 1's #params (M) and GFLOPs of our variants, as numbers.
TABLE1_SIZES: dict[str, tuple[float, float]] = {
    variant: (float(table1_row(variant)[2]), float(table1_row(variant)[3])) for variant in TABLE1_METHODS}

# Table 2: the grid of hard mask ratios x excluded tokens r, and the quoted (WAR, GFLOPs) of each reported cell;
# the paper leaves r = 4 and r = 6 out at 70% (the exclusion outgrows the visible tokens).
MASK_RATIOS = (0.25, 0.5, 0.7)
EXCLUSIONS = (0, 2, 4, 6)
SETTING = (0.7, 2)  # AdaTosk-dagger's (hard mask ratio, r)
TABLE2: dict[tuple[float, int], tuple[str, str]] = {
    (0.25, 0): ("76.74", "136.15"), (0.25, 2): ("76.68", "118.54"), (0.25, 4): ("76.57", "99.75"),
    (0.25, 6): ("76.08", "68.79"),
    (0.5, 0): ("77.06", "84.32"), (0.5, 2): ("77.02", "72.24"), (0.5, 4): ("76.97", "60.05"),
    (0.5, 6): ("76.45", "42.13"),
    (0.7, 0): ("77.63", "57.73"), (0.7, 2): ("77.54", "40.12"),
}
TABLE2_GFLOPS: dict[tuple[float, int], float] = {cell: float(gflops) for cell, (_, gflops) in TABLE2.items()}


@dataclass(frozen=True)
class AblationRow:
    """A row of Table 3 or 4: its label, our variant of it, the model keys it stands for (checked against the
    variant's config) and the quoted UAR, WAR."""
    label: str
    variant: str
    expect: Mapping[str, Any]
    quoted: tuple[str, str]


# Table 3. Rows 3-6 lost their score names in the text; the text orders them "redundant score or semantic score", so
# rows 3 and 5 are taken as redundancy, rows 4 and 6 as semantic.
TABLE3 = (
    AblationRow("CA", "adatosk_ca", {"soft_mask": "ca"}, ("65.55", "76.64")),
    AblationRow("CS (redundancy + semantic)", "adatosk_cs", {"soft_mask": "cs", "scores": "both"}, ("66.03", "77.11")),
    AblationRow("CS (redundancy)", "adatosk_cs_redundancy", {"soft_mask": "cs", "scores": "redundancy"},
                ("65.78", "76.67")),
    AblationRow("CS (semantic)", "adatosk_cs_semantic", {"soft_mask": "cs", "scores": "semantic"}, ("65.95", "76.93")),
    AblationRow("CA + CS (redundancy)", "adatosk_ca_cs_redundancy", {"soft_mask": "ca+cs", "scores": "redundancy"},
                ("66.41", "77.07")),
    AblationRow("CA + CS (semantic)", "adatosk_ca_cs_semantic", {"soft_mask": "ca+cs", "scores": "semantic"},
                ("66.62", "77.31")),
    AblationRow("CA + CS (redundancy + semantic)", "adatosk_dagger", {"soft_mask": "ca+cs", "scores": "both"},
                ("66.76", "77.54")),
)
# Table 4: distance functions of the class-agnostic soft mask.
TABLE4 = (
    AblationRow("classification", "adatosk_dagger_diff_classification", {"diff": "classification"},
                ("61.86", "72.67")),
    AblationRow("cosine", "adatosk_dagger_diff_cosine", {"diff": "cosine"}, ("62.77", "73.52")),
    AblationRow("L2", "adatosk_dagger_diff_l2", {"diff": "l2"}, ("64.83", "75.68")),
    AblationRow("L1", "adatosk_dagger", {"diff": "l1"}, ("66.76", "77.54")),
)
