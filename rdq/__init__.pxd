# `cimport rdq` gives Cython code the extension types, their nogil methods
# (put_nogil, put_typed, close_nogil of Queue and ReplayBuffer) and the typed helpers put_1d/2d/3d.
from rdq._core cimport Queue, ReplayBuffer, Message, Batch, Ring, put_1d, put_2d, put_3d, rdq_now
