"""Preloaded by the build's fork server (:mod:`rawpairs.pool`): importing this module imports
the sample makers and loads their compiled kernels once, in the server, so that every worker
forked from it starts warm (milliseconds instead of seconds of imports and kernel loading).

Nothing else imports it. The server runs no OpenCV or OpenMP code before it forks, so its children
inherit no thread pools (rawpy's OpenMP can deadlock in a child forked after it ran). The server
exits when the build does, also after ``kill -9``; it then removes its listening socket and the
private temporary folder holding it, which the killed build could not.
"""

import atexit
import contextlib
import os
from multiprocessing import forkserver

from rawpairs.pool import warm_up


def _remove_listener() -> None:
    address = getattr(forkserver._forkserver, "_forkserver_address", None)
    if not isinstance(address, str) or not os.path.isabs(address):
        return  # an abstract socket: nothing on disk
    with contextlib.suppress(OSError):
        os.unlink(address)
    folder = os.path.dirname(address)
    if os.path.basename(folder).startswith("pymp-"):
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when empty: multiprocessing's own folder for this socket


warm_up()
atexit.register(_remove_listener)
