# `cimport rdq` gives Cython code the extension types and their nogil methods.
from rdq._core cimport Queue, Message, Batch, Ring
