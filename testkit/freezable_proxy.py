"""A TCP proxy in front of PostgreSQL that can stop answering without closing anything:
what a partitioned or frozen host looks like to a client holding a connection (its bytes
are taken and never answered), unlike a server that ends the connection."""

from __future__ import annotations

import socket
import threading


class FreezableProxy:
    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._sockets: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def freeze(self) -> None:
        """From now on nothing is forwarded either way and new connections hang."""
        self._frozen.set()

    def close(self) -> None:
        self._listener.close()
        for s in self._sockets:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self._frozen.is_set():
                continue  # accepted, never answered
            upstream = socket.create_connection(self._upstream)
            self._sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self._frozen.is_set():
                continue  # taken, never delivered
            try:
                dst.sendall(data)
            except OSError:
                return
