"""Writing WebSocket frames to many sockets from one thread without letting a slow one stall it.

The event bus's listener thread writes each batch of events to every socket of its process itself
(api/ws.py): a socket thread woken per batch was most of a process's time with hundreds of monitors.
For that the listener must never block: `SerialSocket.try_send` writes what the kernel takes at once
and keeps the rest pending, for the socket's own thread to finish with a blocking send."""
from __future__ import annotations

import select
import socket
import struct
import threading

from common.events import WireEvent, event_text


def text_frame(text: str) -> bytes:
    """An unmasked, uncompressed WebSocket text frame (a server's frames are never masked, and
    permessage-deflate lets any message go uncompressed)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def frame_of(event: dict) -> bytes:
    """The event's frame, made by the first socket that sends it and reused by every other: with
    hundreds of monitors, encoding (and compressing) per socket was most of a process's time."""
    frame = getattr(event, "frame", None)
    if frame is None:
        frame = text_frame(event_text(event))
        if isinstance(event, WireEvent):
            event.frame = frame
    return frame


class SerialSocket:
    """simple-websocket writes frames with one `socket.send` each, from the socket's thread and from
    its own (pings, pongs, the close): a frame larger than the send buffer was written in part, and
    the rest lost or interleaved with a ping (seen with 64 KiB branch_output events). Here frames are
    written whole and in order: a blocking `send` first finishes what `try_send` left pending."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._lock = threading.Lock()  # one writer at a time
        self._pending = bytearray()
        self._pending_lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Bytes accepted by `try_send` and not yet written."""
        return len(self._pending)

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(self._take_pending() + data)
        return len(data)

    def try_send(self, data: bytes) -> bool:
        """Write what the socket takes now; keep the rest pending. True when nothing is left."""
        if not self._lock.acquire(blocking=False):  # a blocking send is under way: after it
            with self._pending_lock:
                self._pending += data
            return False
        try:
            data = self._take_pending() + data
            written = self._write_now(data)
            if written < len(data):
                with self._pending_lock:
                    self._pending[:0] = data[written:]
                return False
            return True
        finally:
            self._lock.release()

    def _take_pending(self) -> bytes:
        with self._pending_lock:
            data = bytes(self._pending)
            self._pending.clear()
        return data

    def _write_now(self, data: bytes) -> int:
        try:
            if self._sock.gettimeout() is None:
                return self._sock.send(data, socket.MSG_DONTWAIT)
            # with a timeout Python waits for room before sending: look first
            if select.select([], [self._sock], [], 0)[1]:
                return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            pass
        except (OSError, ValueError):  # ValueError: a TLS socket takes no flags; its thread's send writes all
            pass  # the socket is gone: its thread finds out on its next blocking send
        return 0

    def __getattr__(self, name: str):
        return getattr(self._sock, name)
