"""The review server: one tornado application (page, JSON API, websocket, the analysis' layers) on its own
event loop thread, optionally with a Neuroglancer viewer in the same process.

Only the layers an analysis has (`layers/<name>` with an `info`) and the local layers its config names
(raw EM, oracle inputs) are served, each under `/layers/<name>/`; a path that resolves (symlinks
included) outside its layer folder is refused with 403.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
import threading
from pathlib import Path

import numpy as np
import tornado.httpserver
import tornado.web

from syconn_ng.errors import SyconnError
from syconn_ng.serve.api import routes

PAGE_DIR = Path(__file__).parent / "page"
MIN_TOKEN_CHARS = 16


def served_layers(analysis) -> dict[str, Path]:
    """{name: folder} of every layer the server may serve: the analysis' own layers and the local layers its
    config names (raw EM, oracle barrier / organelles / myelin)."""
    from syconn_ng.layers import local_dir

    out: dict[str, Path] = {}
    layers = analysis.root / "layers"
    if layers.is_dir():
        for d in sorted(layers.iterdir()):
            if d.is_dir() and (d / "info").is_file():
                out[d.name] = d.resolve()
    named = {"raw": analysis.raw_layer}
    for name in ("barrier", "organelles", "myelin"):
        if name not in out:
            named[name] = analysis.input_layer(name)
    for name, path in named.items():
        d = local_dir(path)
        if d is not None and (d / "info").is_file():
            out[name] = d.resolve()
    return out


class StatETag:
    """ETag from a file's size and modification time instead of tornado's hash of its whole content: that hash
    reads the file on the event loop at its first request (a shard runs to gigabytes; past 64 MiB tornado logs an
    error and sends none) and is cached for the process's life, so a rewritten file kept its old ETag."""

    def compute_etag(self):
        st = os.stat(self.absolute_path)
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


class LayerHandler(StatETag, tornado.web.StaticFileHandler):
    """Precomputed files of one served layer: CORS for the viewer's origin, Range requests (tornado), no caching.

    On a server bound beyond loopback the URL carries the token (`/t/<token>/layers/...`): the viewer's client
    cannot send an Authorization header with its data requests."""

    def initialize(self, ctx):
        self.ctx = ctx
        super().initialize(path="/nonexistent")

    def set_default_headers(self):
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Allow-Headers", "range")
        self.set_header("Access-Control-Expose-Headers", "Content-Range")

    def set_extra_headers(self, path):
        self.set_header("Cache-Control", "no-store")

    def options(self, *args):
        self.set_status(204)
        self.finish()

    async def get(self, token, name, path, include_body=True):
        if self.ctx.token_for_reads and not (token and hmac.compare_digest(token.encode(), self.ctx.token.encode())):
            raise tornado.web.HTTPError(401)
        if name not in self.ctx.layers:
            raise tornado.web.HTTPError(404)
        self.root = str(self.ctx.layers[name])
        plain, packed = os.path.join(self.root, path), os.path.join(self.root, path + ".gz")
        if not os.path.exists(plain) and os.path.isfile(packed):
            # a layer written with gzip'd chunk files (CloudVolume compress=True): the browser inflates it
            self.set_header("Content-Encoding", "gzip")
            path += ".gz"
        await super().get(path, include_body)

    async def head(self, token, name, path):
        await self.get(token, name, path, include_body=False)

    def validate_absolute_path(self, root, absolute_path):
        real_root, real = os.path.realpath(root), os.path.realpath(absolute_path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise tornado.web.HTTPError(403, "outside the layer")
        if os.path.isdir(real) or not os.path.isfile(real):
            raise tornado.web.HTTPError(404)
        return real


class PageHandler(tornado.web.StaticFileHandler):
    """The review page's own files (index.html, review.js, review.css)."""

    def set_extra_headers(self, path):
        self.set_header("Cache-Control", "no-store")


class Hub:
    """Open websockets; `broadcast` may be called from any thread."""

    def __init__(self):
        self.sockets: set = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, ws):
        self.sockets.add(ws)

    def discard(self, ws):
        self.sockets.discard(ws)

    def broadcast(self, event: dict):
        text = json.dumps(event, separators=(",", ":"))

        def send():
            for ws in list(self.sockets):
                try:
                    ws.write_message(text)
                except Exception:  # a page closed mid-send: it is removed by on_close
                    self.sockets.discard(ws)

        if self.loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            send()
        else:
            self.loop.call_soon_threadsafe(send)


class Context:
    """What the handlers share: the reviewed tables, the token, the hub, the viewer (optional), limits."""

    def __init__(self, reviewed, *, token: str, layers: dict[str, Path], max_request_bytes: int, token_for_reads: bool):
        self.reviewed = reviewed
        self.token = token
        self.layers = layers
        self.max_request_bytes = max_request_bytes
        self.token_for_reads = token_for_reads
        self.hub = Hub()
        self.viewer = None
        self.viewer_url = None
        self.selected_segments: list[int] = []
        self._matrix_cache = (None, b"")
        self._nodes = None
        from syconn_ng.serve.jobs import JobRunner

        self.jobs = JobRunner(self)

    def matrix_bytes(self) -> bytes:
        """The matrix JSON, encoded once per version."""
        r = self.reviewed
        with r.lock:
            if self._matrix_cache[0] != r.version:
                self._matrix_cache = (r.version, json.dumps(r.matrix(), separators=(",", ":")).encode())
            return self._matrix_cache[1]

    def pair_entries(self, pairs) -> list:
        """Current matrix entries [post_index, pre_index, count, area] of the given (pre, post) pairs (count 0 if gone)."""
        r = self.reviewed
        with r.lock:
            return [r.pair_entry(pre, post) for pre, post in pairs if pre in r.index and post in r.index]

    def review_event(self, done: dict, decision: str) -> dict:
        """Tell every page about a synapse decision (the changed matrix entries, or a full reload if the axes
        changed); returns the synapse as JSON."""
        from syconn_ng.serve.api import synapse_json

        r = self.reviewed
        with r.lock:
            row = synapse_json(r.synapses.iloc[done["row"]].to_dict())
            event = {"type": "review", "version": r.version, "synapse": row, "decision": decision,
                     "entries": self.pair_entries(done["pairs"])}
        self.hub.broadcast(event)
        if done["reordered"]:
            self.hub.broadcast({"type": "matrix", "version": event["version"]})
        if self.viewer is not None and self.viewer.pair in done["pairs"]:  # the shown pair changed: redraw its synapses
            self.viewer.select_pair(*self.viewer.pair, self.pair_points(*self.viewer.pair), move=False)
        return row

    def nodes_of(self, cell_id: int):
        """The traced nodes of a cell with their compartments (None if the cell has none)."""
        import pandas as pd

        if self._nodes is None:
            tables = self.reviewed.analysis.tables_dir
            if not (tables / "nodes.csv").is_file():
                return None
            nodes = pd.read_csv(tables / "nodes.csv")
            if (tables / "compartments.csv").is_file():
                nodes = nodes.merge(pd.read_csv(tables / "compartments.csv"), on=["cell", "node"], how="left")
            self._nodes = {int(c): g.drop(columns="cell") for c, g in nodes.groupby("cell")}
        return self._nodes.get(int(cell_id))

    def pair_points(self, pre: int, post: int) -> list:
        """[[id, x, y, z], ...] (voxels) of the pair's synapses that are not rejected, in table order."""
        r = self.reviewed
        with r.lock:
            s = r.synapses
            rows = s[(s["pre_cell"] == np.uint64(pre)) & (s["post_cell"] == np.uint64(post)) & (s["status"] != "rejected")]
            # ids kept apart from the float coordinates: a uint64 id must not pass through float64
            return [[i, *xyz] for i, xyz in zip(rows["id"].tolist(), rows[["x", "y", "z"]].to_numpy(float).tolist())]

    def handle_action(self, msg: dict) -> dict:
        """A page's request to move the viewer: {"action": "select", "pre", "post"} or {"action": "goto", "synapse"}."""
        action = msg.get("action", "select" if "pre" in msg else "goto")
        r = self.reviewed
        if action == "select":
            pre, post = int(msg["pre"]), int(msg["post"])
            points = self.pair_points(pre, post)
            if self.viewer is not None:
                self.viewer.select_pair(pre, post, points)
            return {"type": "selected", "pre": str(pre), "post": str(post), "synapses": [str(int(p[0])) for p in points]}
        if action == "goto":
            with r.lock:
                row = r.synapses.iloc[r.synapse_row(int(msg["synapse"]))]
                xyz = [float(row.x), float(row.y), float(row.z)]
            if self.viewer is not None:
                self.viewer.goto(xyz)
            return {"type": "moved", "synapse": str(int(msg["synapse"])), "position_vx": xyz}
        raise ValueError(f"unknown action {action!r}")

    def reload(self):
        """Re-read the analysis after a re-analysis job rewrote its tables; every page reloads the matrix."""
        self.reviewed.reload()
        self._nodes = None
        self.hub.broadcast({"type": "matrix", "version": self.reviewed.version})

    def segments_changed(self, ids: list[int]):
        """Neuroglancer's selected cells changed (called from the viewer's thread): tell every page."""
        self.selected_segments = ids
        self.hub.broadcast({"type": "segments", "ids": [str(i) for i in ids]})


def make_app(ctx: Context) -> tornado.web.Application:
    return tornado.web.Application(
        routes(ctx) + [
            (r"/(?:t/([^/]+)/)?layers/([A-Za-z0-9_.-]+)/(.*)", LayerHandler, {"ctx": ctx}),
            (r"/()", PageHandler, {"path": str(PAGE_DIR), "default_filename": "index.html"}),
            (r"/page/(.*)", PageHandler, {"path": str(PAGE_DIR)}),
        ],
        websocket_max_message_size=ctx.max_request_bytes,
    )


class ReviewServer:
    """The server on its own thread and event loop: `start()`, `.url`, `.page_url`, `stop()`."""

    def __init__(self, analysis_dir, *, port: int | None = None, bind: str | None = None, token: str | None = None,
                 viewer: bool = False, viewer_layout: str = "xy-3d", max_request_bytes: int | None = None, store_path=None):
        from syconn_ng.analysis import Analysis
        from syconn_ng.serve.review import ReviewedAnalysis

        analysis = Analysis.open(analysis_dir)
        cfg = analysis.config.serve
        self.bind = bind or cfg.bind
        self.port = cfg.port if port is None else port
        loopback = self.bind in ("127.0.0.1", "localhost", "::1")
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            raise SyconnError(f"--token must have at least {MIN_TOKEN_CHARS} characters")
        token = token or read_token_file(analysis.root, cfg.token_file)
        if not token and not loopback:
            from syconn_ng.errors import ConfigError

            raise ConfigError(analysis.root / "syconn.toml", f"binding to {self.bind} needs a token (--token or [serve] token_file)",
                              element="[serve] bind")
        self.token = token or secrets.token_urlsafe(24)
        reviewed = ReviewedAnalysis(analysis, store_path=store_path)
        self.ctx = Context(reviewed, token=self.token, layers=served_layers(analysis),
                           max_request_bytes=max_request_bytes or cfg.max_request_bytes, token_for_reads=not loopback)
        self.want_viewer, self.viewer_layout = viewer, viewer_layout
        self._thread = None

    def start(self) -> "ReviewServer":
        ready = threading.Event()
        failure = []

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                app = make_app(self.ctx)
                self.http = tornado.httpserver.HTTPServer(app, max_body_size=self.ctx.max_request_bytes * 4 + 4096)
                self.http.listen(self.port, address=self.bind)
                self.port = next(iter(self.http._sockets.values())).getsockname()[1]
            except Exception as err:  # reported to the caller of start()
                failure.append(err)
                ready.set()
                return
            self.ctx.hub.loop = loop
            self.loop = loop
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="syconn-serve")
        self._thread.start()
        ready.wait(30)
        if failure:
            self.ctx.reviewed.store.close()
            raise SyconnError(f"cannot listen on {self.bind}:{self.port}: {failure[0]}") from failure[0]
        if self.want_viewer:
            from syconn_ng.serve.viewer import ReviewViewer

            data_url = f"{self.url}/t/{self.token}" if self.ctx.token_for_reads else self.url
            self.ctx.viewer = ReviewViewer(self.ctx, data_url=data_url, bind=self.bind, layout=self.viewer_layout)
            self.ctx.viewer_url = self.ctx.viewer.url
        return self

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        return f"http://{host}:{self.port}"

    @property
    def page_url(self) -> str:
        return f"{self.url}/#token={self.token}"

    def stop(self):
        if self._thread is None:
            return

        def halt():
            self.http.stop()
            for ws in list(self.ctx.hub.sockets):
                ws.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(halt)
        self._thread.join(10)
        self._thread = None
        self.ctx.viewer = None  # the package's server holds viewers weakly: dropping it unregisters it
        self.ctx.reviewed.store.close()

    def wait(self):
        """Block until the server thread ends (Ctrl-C stops it)."""
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()


def read_token_file(root: Path, token_file: str) -> str | None:
    """The token from `[serve] token_file` (relative to the analysis), or None if unset."""
    if not token_file:
        return None
    path = Path(token_file) if Path(token_file).is_absolute() else root / token_file
    if not path.is_file():
        from syconn_ng.errors import InputError

        raise InputError(path, "token file named by [serve] token_file does not exist")
    token = path.read_text().strip()
    if len(token) < MIN_TOKEN_CHARS:
        from syconn_ng.errors import InputError

        raise InputError(path, f"token is shorter than {MIN_TOKEN_CHARS} characters")
    return token
