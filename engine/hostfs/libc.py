"""The C library through ctypes, loaded on the first call that needs it: most CLI verbs (ps,
inspect, logs) make no raw system call, and importing ctypes would cost each of them 2 ms.

``call()`` is the one CDLL of this process, with the prototypes the engine relies on set once;
``errno()`` is the errno its last call left (ctypes keeps a private copy per thread).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes


@functools.cache
def call() -> ctypes.CDLL:
    import ctypes

    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    lib.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.inotify_init1.argtypes = [ctypes.c_int]
    lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return lib


def errno() -> int:
    import ctypes

    return ctypes.get_errno()
