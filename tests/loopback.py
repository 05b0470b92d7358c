"""The serving part the test fakes share: an HTTP(S) server on 127.0.0.1 (a free port) run from a daemon thread.

A fake subclasses :class:`LoopbackServer` and says in `_bind` which server (handler, TLS) to run;
start/stop, the context manager and `url` come from here::

    class FakeThing(LoopbackServer):
        thread_name = "fake-thing"

        def _bind(self) -> ThreadingHTTPServer:
            return ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    with FakeThing() as fake:
        requests.get(fake.url + "/...")
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import Self


class LoopbackServer:
    """Start, stop and address one loopback server; a subclass builds it in `_bind`."""

    scheme = "http"
    """``https`` when `_bind` wraps the socket in TLS."""
    thread_name = "loopback-server"
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _bind(self) -> ThreadingHTTPServer:
        """The server to run, bound to ``("127.0.0.1", 0)``."""
        raise NotImplementedError

    def start(self) -> Self:
        """Listen on 127.0.0.1 on a free port, serving from a daemon thread."""
        self._server = self._bind()
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43121``."""
        assert self._server is not None, f"{type(self).__name__} is not started"
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"
