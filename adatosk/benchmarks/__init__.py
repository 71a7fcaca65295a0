"""The benchmarks, one module each: ``efficiency`` (``adatosk bench``: FLOPs, throughput and memory of the models)
and ``data_loader`` (``adatosk bench-data``: clips per second per data-loader worker)."""
