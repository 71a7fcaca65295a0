"""Benchmarks of the pipeline's stages: speed measured on this machine, printed as Markdown tables."""
