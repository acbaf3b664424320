"""A TCP proxy on loopback that adds a fixed delay to every request and counts them (the data benchmark's link).

A request starts when the client sends after the server has answered (or on a connection's first bytes): the proxy
then waits ``delay_s`` before forwarding, once per request, which is what a distant object store adds to each
request's round trip. Bounded and self-stopping: it listens on 127.0.0.1 only, refuses to start with a delay above
one second, and closes itself after ``lifetime_s`` or when its ``with`` block ends.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType


class LatencyProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream`` with ``delay_s`` added to every request.

    Examples:
        >>> with LatencyProxy(("127.0.0.1", 9), delay_s=0.0) as proxy:  # doctest: +SKIP
        ...     url = f"http://127.0.0.1:{proxy.port}"
    """

    def __init__(self, upstream: tuple[str, int], delay_s: float = 0.02, lifetime_s: float = 4 * 3600) -> None:
        if not 0 <= delay_s <= 1:
            raise ValueError(f"delay_s must be in [0, 1], got {delay_s}")
        self.upstream, self.delay_s, self.lifetime_s = upstream, delay_s, lifetime_s
        self.requests = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> LatencyProxy:
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and end every connection."""
        self._stop.set()
        self._server.close()

    def count(self) -> int:
        """Return the requests forwarded so far."""
        with self._lock:
            return self.requests

    def _accept(self) -> None:
        self._server.settimeout(0.5)
        started = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - started < self.lifetime_s:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            upstream = socket.create_connection(self.upstream)
            turn = {"client": False}  # whether the client spoke last: its next bytes after an answer are a request
            for args in ((client, upstream, True, turn), (upstream, client, False, turn)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()
        self.close()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool, turn: dict[str, bool]) -> None:
        try:
            while not self._stop.is_set():
                data = source.recv(256 * 1024)
                if not data:
                    break
                if from_client and not turn["client"]:
                    with self._lock:
                        self.requests += 1
                    if self.delay_s:
                        time.sleep(self.delay_s)
                turn["client"] = from_client
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
