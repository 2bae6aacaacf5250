"""Settings of the Python process itself, applied by the CLI's long-running commands.

Library code (the app factory, the store) leaves the interpreter alone; the
commands that own a process (``serve``, ``worker``) call ``tune_gc`` once.
"""

from __future__ import annotations

import gc

# CPython runs a young-generation collection every 700 container allocations
# (3.11's default). A request that builds tens of thousands of dicts and lists
# (a 1,000-run ingest body validated into its rows, a page of 50 runs rendered)
# then triggers dozens of collections, and each survivor is traversed again as
# it is promoted: 14% of the bulk ingest path's time (bench/store.py). Every
# 10,000 allocations keeps cycles collected promptly at a few MB more memory.
YOUNG_GENERATION_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect the youngest generation less often (see the module constant)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


def freeze_startup_objects() -> None:
    """Exclude everything allocated so far (modules, the app, templates, the
    schema) from future collections: they live as long as the process, and each
    full collection would traverse them again (14.5 -> 5.3 ms of GC per 20 page
    loads in ``bench/page_cpu.py``)."""
    gc.freeze()
