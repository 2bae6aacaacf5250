"""The process tuning that ``serve`` and ``worker`` apply (``app.process``)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

# Counts glibc's malloc arenas after eight threads allocated at once, from the
# report glibc itself writes (malloc_info: one <heap nr=...> per arena).
ARENAS_AFTER_THREADS = textwrap.dedent("""
    import ctypes, os, sys, tempfile, threading
    from app.process import limit_malloc_arenas
    if sys.argv[1] == "capped":
        assert limit_malloc_arenas(2)
    start = threading.Barrier(8)
    def churn():
        start.wait()
        for _ in range(2000):
            blocks = [bytearray(4096) for _ in range(20)]
            del blocks
    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    path = os.path.join(tempfile.mkdtemp(), "info.xml")
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(open(path).read().count("<heap nr="))
""")


def _arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", ARENAS_AFTER_THREADS, mode],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_threads_share_at_most_two_malloc_arenas() -> None:
    # Without the cap the same threads spread over more arenas: the check below
    # would pass without limit_malloc_arenas doing anything otherwise.
    assert _arenas("uncapped") > 2
    assert _arenas("capped") <= 2


def test_tune_process_hands_the_gil_over_ten_times_sooner() -> None:
    # In a process of its own: the interval is the whole interpreter's.
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from app.process import tune_process; "
         "before = sys.getswitchinterval(); tune_process(); "
         "print(before, sys.getswitchinterval())"],
        capture_output=True, text=True, timeout=60, check=True)
    before, after = map(float, done.stdout.split())
    assert before == pytest.approx(0.005)   # CPython's default
    assert after == pytest.approx(0.0005)
