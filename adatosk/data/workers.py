"""Worker processes of the data stages and the data loaders, forked from a clean server process.

A plain fork of a process in which OpenCV's or torch's thread pools have run can deadlock in the child (the pools'
locks are copied, their threads are not), so every pool and data-loader worker of this package starts from a
forkserver: a process that ran nothing but the imports it preloads.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext


def worker_context(*preload: str) -> BaseContext:
    """The forkserver start method, its server importing the modules ``preload`` once for all workers."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context
