# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""rdq's Cython core: the multi-ring and replay protocols over MPI-3 RMA windows, Queue,
ReplayBuffer, Message and Batch.

MPI is called through mpi4py's libmpi declarations with the GIL released.
"""
cimport cython
from cpython.buffer cimport (PyObject_CheckBuffer, PyObject_GetBuffer, PyBuffer_Release,
                             PyBUF_C_CONTIGUOUS, PyBUF_F_CONTIGUOUS, PyBUF_ANY_CONTIGUOUS,
                             PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES)
from cpython.bytearray cimport PyByteArray_FromStringAndSize, PyByteArray_AS_STRING
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.pycapsule cimport PyCapsule_New, PyCapsule_IsValid, PyCapsule_GetPointer, PyCapsule_SetName
from cpython.ref cimport PyObject, Py_XINCREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, INT64_MAX
from libc.stdlib cimport malloc, free
from libc.string cimport memcmp, memcpy, memset, strcmp

from mpi4py cimport MPI
from mpi4py.libmpi cimport *

import itertools
import math
import operator
import os

import numpy as np
from mpi4py import MPI
from rdq.errors import RDQError, Full, Empty, Closed, MPIError

include "errors.pxi"
include "layout.pxi"
include "ring.pxi"
include "memory.pxi"
include "dlpack.pxi"
include "message.pxi"
include "queue.pxi"
include "replay.pxi"
