"""Network stand-ins for client tests: a connection-dropping TCP proxy in front of the
real server, and a scripted HTTP server for status codes the real one rarely sends."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class DroppingProxy:
    """Loopback TCP proxy to ``127.0.0.1:target_port``.

    The first ``drops`` requests whose bytes contain ``match`` are forwarded to the
    server, but once the server starts answering, the client's connection is closed
    instead of receiving the response: the call ran, the client never heard back.
    """

    def __init__(self, target_port: int, match: bytes = b"POST /execute", drops: int = 1):
        self.target_port = target_port
        self.match = match
        self.drops_left = drops
        self.dropped = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        state = {"drop": False}

        def client_to_server():
            try:
                while chunk := client.recv(65536):
                    if self.match in chunk:
                        with self._lock:
                            if self.drops_left > 0:
                                self.drops_left -= 1
                                state["drop"] = True
                    upstream.sendall(chunk)
            except OSError:
                pass

        threading.Thread(target=client_to_server, daemon=True).start()
        try:
            while chunk := upstream.recv(65536):
                if state["drop"]:
                    with self._lock:
                        self.dropped += 1
                    break
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


class ScriptedServer:
    """HTTP server answering each request with the next ``(status, body, delay)`` of
    ``script`` (the last entry repeats). Records every request's path and headers."""

    def __init__(self, script: list[tuple[int, object, float]]):
        self.script = list(script)
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append((self.command, self.path, dict(self.headers)))
                n = len(outer.requests) - 1
                status, body, delay = outer.script[min(n, len(outer.script) - 1)]
                if delay:
                    time.sleep(delay)
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
