"""Settings of the Python process itself, applied by the CLI's long-running commands.

Library code (the app factory, the store) leaves the interpreter alone; the
commands that own a process (``serve``, ``worker``) call ``tune_process`` once,
before they start any thread.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import platform
import sys

log = logging.getLogger(__name__)

# CPython runs a young-generation collection every 700 container allocations
# (3.11's default). A request that builds tens of thousands of dicts and lists
# (a 1,000-run ingest body validated into its rows, a page of 50 runs rendered)
# then triggers dozens of collections, and each survivor is traversed again as
# it is promoted: 14% of the bulk ingest path's time (bench/store.py). Every
# 10,000 allocations keeps cycles collected promptly at a few MB more memory.
YOUNG_GENERATION_THRESHOLD = 10_000


# glibc gives each thread that allocates while another holds the main heap's
# lock an arena of its own, up to 8 per core, and an arena returns memory to
# the system only from its top. The server's worker threads (database calls,
# page rendering) each allocate and free request-sized blocks, so every arena
# keeps its own high-water mark and fragments on its own. In the soak
# (bench/soak.py, docs/PERFORMANCE.md) two arenas hold ~20 MB less at the
# same throughput. Two is the usual setting for threaded servers
# (MALLOC_ARENA_MAX=2). (A periodic malloc_trim on top ended at the same RSS,
# so it is not done.)
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8   # mallopt's parameter number, from glibc's malloc.h

# A thread that wants the GIL waits this long before it makes the holder let
# go (CPython's default is 5 ms). The server's writes run in worker threads
# and release the GIL around every SQLite call, so a write transaction takes
# the GIL back several times while it holds the one write connection (and,
# with `serve --workers`, the file's write lock), and each time it may wait
# up to 5 ms behind the event loop's CPU work (rendering a page, fanning out
# to 200 streams): the write holds what others queue for far longer than its
# own work takes, and under the soak's load the writes queued into 503s (the
# GIL "convoy"). The soak's full load, 2-minute runs on one machine: 781 and
# 7,040 writes refused at 5 ms, 0 and 213 at 0.5 ms; with two worker
# processes, ingest p99 318 -> 65 ms (docs/PERFORMANCE.md). Server CPU stayed
# within the runs' spread (95-107% of a core): more switches, less waiting.
GIL_SWITCH_INTERVAL_S = 0.0005


def tune_process() -> None:
    """Everything this module tunes, for a long-running command."""
    limit_malloc_arenas()
    tune_gc()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` would); True when
    applied. Elsewhere (musl, macOS) there is nothing to cap: False."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        applied = ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas) == 1
    except (OSError, AttributeError):
        applied = False
    if not applied:
        log.warning("could not cap malloc arenas at %d; memory may grow with threads", arenas)
    return applied


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
