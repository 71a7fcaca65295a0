"""The benchmarks, one module each, printed as Markdown tables: ``efficiency`` (``adatosk bench``: FLOPs, throughput
and memory of the models), ``data_loader`` (``adatosk bench-data``: clips per second per data-loader worker) and
``facecrop`` (``adatosk face-crop --bench``: frames per second and coverage of the face tracker)."""
