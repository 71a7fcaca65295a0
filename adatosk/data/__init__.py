"""Datasets: class orders, the embedded demo set, manifests of the official splits, face crops and clip loading.

Submodules are imported where they are used (``adatosk.data.manifest``, ``adatosk.data.dataset``, ...), so that
importing the package stays light.
"""
