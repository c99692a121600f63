"""
Writing straight to a file descriptor when Twisted has nothing buffered for it.
"""

from collections.abc import Callable
from typing import Any


def write_through(
    descriptor: Any,
    send: Callable[[bytes], int],
    data: bytes,
    write: Callable[[bytes], None],
) -> None:
    """
    Send C{data} with C{send} (a non-blocking write to C{descriptor}'s file
    descriptor) when C{descriptor}, a Twisted L{FileDescriptor}, has nothing
    queued before it; what is not taken, or everything otherwise, goes through
    C{write}, the transport's own.

    A transport's C{write} waits for the next reactor iteration and costs
    epoll registrations and a write event each time, as much as the work that
    produced the data; data that fits in the kernel's buffer (nearly all of
    it) needs none of that.  Ordering, buffering and flow control stay the
    transport's.
    """
    if not (
        descriptor._tempDataLen
        or len(descriptor.dataBuffer) > descriptor.offset
        or descriptor.disconnecting
    ):
        try:
            sent = send(data)
        except OSError:
            sent = 0  # full, or gone: the transport's write meets and reports it
        if sent == len(data):
            return
        data = data[sent:]
    write(data)
