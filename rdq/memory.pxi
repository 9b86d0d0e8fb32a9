# The memory behind a shm queue: a POSIX shared-memory segment that rdq maps itself,
# instead of MPI_Win_allocate_shared, for two reasons a user meets:
#   - views of received messages stay valid after free(): the segment stays mapped on
#     the owner until the last view of it dies (Queue._unmap);
#   - a /dev/shm too small for the queue is a clear error at creation
#     (posix_fallocate reserves every page), not a SIGBUS at the first put.
# The owner creates the segment, every rank maps it, and the owner unlinks it as soon
# as all have, so nothing is left in /dev/shm.  It is page-aligned, so every 64-byte
# aligned offset is a 64-byte aligned address.

from posix.mman cimport (mmap, munmap, shm_open, shm_unlink, PROT_READ, PROT_WRITE,
                         MAP_SHARED, MAP_FAILED)
from posix.fcntl cimport O_CREAT, O_EXCL, O_RDWR, posix_fallocate
from posix.unistd cimport ftruncate, close
from libc.errno cimport errno, EEXIST
from libc.string cimport strerror

_segment_numbers = itertools.count()


cdef str _os_error(str what, int err):
    return f"{what}: {strerror(err).decode()}"


cdef char *map_segment(bytes name, size_t nbytes, bint create, list problems):
    """Create (owner) or open a shared-memory segment and map it; NULL with a problem appended."""
    cdef int fd, err
    cdef void *p
    fd = shm_open(name, O_RDWR | (O_CREAT | O_EXCL if create else 0), 0o600)
    if fd < 0:
        problems.append(_os_error(f"shm_open({name.decode()})", errno))
        return NULL
    if create:
        err = ftruncate(fd, nbytes)
        if err == 0:
            err = posix_fallocate(fd, 0, nbytes)
        else:
            err = errno
        if err:
            close(fd)
            shm_unlink(name)
            problems.append(_os_error(
                f"/dev/shm has no room for the queue's {nbytes} bytes (in a container, give it more "
                f"with docker run --shm-size)", err))
            return NULL
    p = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    err = errno
    close(fd)
    if p == MAP_FAILED:
        if create:
            shm_unlink(name)
        problems.append(_os_error(f"cannot map the shared-memory segment {name.decode()}", err))
        return NULL
    return <char *>p


cdef char *create_segment(size_t nbytes, list problems, list name_out):
    """The owner's new segment, under a name no other queue of this node uses
    (the owner's pid and a count; a name left by a crashed process is skipped)."""
    cdef char *p
    while True:
        name = f"/rdq-{os.getpid()}-{next(_segment_numbers)}".encode()
        p = map_segment(name, nbytes, True, problems)
        if p != NULL or not problems[len(problems) - 1].endswith(strerror(EEXIST).decode()):
            break
        problems.pop()
    name_out.append(name)
    return p


cdef void unlink_segment(bytes name) noexcept:
    shm_unlink(name)


cdef void unmap(char *p, size_t nbytes) noexcept nogil:
    if p != NULL:
        munmap(p, nbytes)
