"""A small local HTTP server for the viewer (standard library only), bound to 127.0.0.1.

Routes:

| path | content |
|---|---|
| ``/`` | the page (``static/index.html``) |
| ``/static/...`` | the page's script and style and the vendored OpenSeadragon (BSD-3-Clause, its LICENSE.txt beside it) |
| ``/api/runs.json`` | one manifest per run folder: slide size, DeepZoom tile source, layers, model, options |
| ``/runs/{i}/tiles/{level}/{col}_{row}.jpeg`` | DeepZoom tiles of run ``i``'s slide (:class:`~equipath.viewer.deepzoom.DeepZoom`) |
| ``/runs/{i}/layers/{id}`` | one overlay: a PNG (heatmap, tissue) or GeoJSON (regions, detections, cell points) |

Nothing is fetched from the network: the page loads only these routes.

Example:
    >>> import numpy as np, json, tempfile, pathlib, urllib.request
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "cells.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    >>> server = ViewerServer([Run(folder, slide=np.zeros((50, 60, 3), np.uint8))], port=0)
    >>> server.start()
    >>> runs = json.load(urllib.request.urlopen(server.url + "api/runs.json"))
    >>> runs[0]["slide"]["width"], [layer["id"] for layer in runs[0]["layers"]]
    (60, ['cells'])
    >>> server.stop()
"""

import json
import logging
import mimetypes
import re
import threading
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

from equipath.atomic import json_text
from equipath.viewer.deepzoom import DeepZoom
from equipath.viewer.layers import Run

__all__ = ["ViewerServer", "STATIC"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
_TILE = re.compile(r"^/runs/(\d+)/tiles/(\d+)/(\d+)_(\d+)\.(jpeg|png)$")
_LAYER = re.compile(r"^/runs/(\d+)/layers/([\w.-]+)$")


class ViewerServer:
    """Serve ``runs`` (a list of :class:`~equipath.viewer.layers.Run`) on ``host:port``.

    Args:
        runs: the run folders to show, in the page's order.
        host: the address to bind; only ``"127.0.0.1"`` (this machine) is accepted. Defaults to it.
        port: the port; 0 picks a free one. Defaults to 0.
    """

    def __init__(self, runs: list[Run], host: str = "127.0.0.1", port: int = 0):
        if host != "127.0.0.1":
            raise ValueError(f"the viewer binds only to this machine (127.0.0.1), not {host!r}")
        self.runs = runs
        self.zooms = [DeepZoom(run.reader) for run in runs]
        self._locks = [threading.Lock() for _ in runs]
        # the coarse DeepZoom levels read much of the slide: keep the latest tiles (at most ~1024 x 20 KB)
        self._tile = lru_cache(maxsize=1024)(self._read_tile)
        self.manifests = [run.manifest(i) for i, run in enumerate(runs)]
        for manifest, zoom in zip(self.manifests, self.zooms):
            source = zoom.descriptor()
            source["Image"]["Url"] = f"/runs/{manifest['index']}/tiles/"
            manifest["tile_source"] = source
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> None:
        """Serve in a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="equipath-viewer", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve until interrupted (the CLI)."""
        self.httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the slides."""
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        for run in self.runs:
            run.close()

    def _read_tile(self, index: int, level: int, col: int, row: int) -> bytes:
        with self._locks[index]:  # one read at a time per slide handle
            return self.zooms[index].tile_bytes(level, col, row)

    def _handler(self):
        server = self
        layer_cache = lru_cache(maxsize=64)(lambda index, layer_id: server.runs[index].layer_bytes(layer_id))

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
                log.debug("viewer: " + format, *args)

            def _send(self, body: bytes, content_type: str, status=HTTPStatus.OK, cache: bool = False):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _not_found(self, why: str = "not found"):
                self._send(why.encode(), "text/plain; charset=utf-8", HTTPStatus.NOT_FOUND)

            def do_GET(self):  # noqa: N802 - the stdlib's name
                path = unquote(urlparse(self.path).path)
                try:
                    if path in ("/", "/index.html"):
                        return self._static("index.html")
                    if path.startswith("/static/"):
                        return self._static(path[len("/static/"):])
                    if path == "/api/runs.json":
                        return self._send(json_text(server.manifests).encode(), "application/json")
                    if match := _TILE.match(path):
                        index, level, col, row = (int(g) for g in match.groups()[:4])
                        if index >= len(server.runs) or match.group(5) != server.zooms[index].format:
                            return self._not_found()
                        return self._send(server._tile(index, level, col, row), f"image/{match.group(5)}", cache=True)
                    if match := _LAYER.match(path):
                        index = int(match.group(1))
                        if index >= len(server.runs):
                            return self._not_found()
                        body, content_type = layer_cache(index, match.group(2))
                        return self._send(body, content_type)
                    return self._not_found()
                except (KeyError, ValueError) as exc:
                    return self._not_found(str(exc))
                except (BrokenPipeError, ConnectionResetError):
                    return None

            def _static(self, name: str):
                target = (STATIC / name).resolve()
                if not target.is_relative_to(STATIC.resolve()) or not target.is_file():
                    return self._not_found()
                content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                return self._send(target.read_bytes(), content_type, cache=name.startswith("openseadragon/"))

        return Handler
