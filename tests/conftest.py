import os
import sys

sys.path.insert(0, os.path.dirname(__file__))   # tests/mpirun.py


def _segments():
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


_SEGMENTS_BEFORE = _segments()   # before this process initializes MPI


def pytest_sessionfinish(session):
    # Open MPI leaves an sm_segment in /dev/shm for every singleton process (this pytest process,
    # and the single-rank subprocesses some tests start) that no launcher cleans up. No job of
    # this session runs any more: remove what appeared while it ran.
    from mpirun import IS_OPEN_MPI, mpi_segments
    if IS_OPEN_MPI:
        for name in mpi_segments() - _SEGMENTS_BEFORE:
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except OSError:
                pass
