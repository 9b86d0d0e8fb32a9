"""rdq's exception tree.

    RDQError            everything rdq raises on purpose derives from it
    ├── Full            put(block=False) or put(timeout=...) found no free slot in time (also a queue.Full)
    ├── Empty           get(block=False) or get(timeout=...) found no message in time (also a queue.Empty)
    ├── Closed          put after close(), get after end of stream, use after free()
    └── MPIError        an MPI call returned an error code (.error_code, .error_string)

Bad arguments (wrong shape, dtype, size, layout) raise the builtin ValueError or
TypeError before anything is sent.
"""


import queue


class RDQError(Exception):
    """Base class of rdq's own errors."""


class Full(RDQError, queue.Full):
    """No free slot in the queue within the time allowed."""


class Empty(RDQError, queue.Empty):
    """No message arrived within the time allowed."""


class Closed(RDQError):
    """The queue is closed for this operation (put after close, get after end of stream, freed)."""


class MPIError(RDQError):
    """An MPI call failed; the window's error handler returned instead of aborting."""

    def __init__(self, error_code: int, error_string: str, call: str = "") -> None:
        self.error_code = error_code
        self.error_string = error_string
        self.call = call
        super().__init__(f"{call} failed: {error_string} (MPI error code {error_code})")
