"""The JSON API under `/api/v1/` (documented in docs/api.md) and the review websocket.

Ids travel as strings (uint64 does not fit a JS number). GETs are open on a loopback server; every
POST, and every request on a server bound elsewhere, needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import json
import math

import numpy as np
import tornado.web
import tornado.websocket

from syconn_ng.serve.review import DECISIONS

SYNAPSE_FIELDS = ("id", "pre_cell", "post_cell", "x", "y", "z", "x_nm", "y_nm", "z_nm", "area_um2", "probability", "type",
                  "pre_compartment", "post_compartment", "sj_id", "status", "key")
ID_FIELDS = {"id", "pre_cell", "post_cell", "sj_id"}


def _plain(v):
    """A JSON-able scalar (numpy → Python; NaN → None)."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def synapse_json(row) -> dict:
    """One synapse row as JSON (ids as strings)."""
    out = {}
    for f in SYNAPSE_FIELDS:
        if f in row:
            v = _plain(row[f])
            out[f] = str(int(v)) if f in ID_FIELDS and v is not None else v
    return out


class BaseHandler(tornado.web.RequestHandler):
    """Shared plumbing: JSON replies, token checks, body size limit, id parsing."""

    def initialize(self, ctx):
        self.ctx = ctx

    def set_default_headers(self):
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def prepare(self):
        length = int(self.request.headers.get("Content-Length", 0) or 0)
        if max(length, len(self.request.body or b"")) > self.ctx.max_request_bytes:
            raise tornado.web.HTTPError(413, f"request body over {self.ctx.max_request_bytes} bytes")
        if self.request.method != "GET" or self.ctx.token_for_reads:
            self.require_token()

    def require_token(self):
        header = self.request.headers.get("Authorization", "")
        given = header[7:].strip() if header.startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), self.ctx.token.encode()):
            self.set_header("WWW-Authenticate", "Bearer")
            raise tornado.web.HTTPError(401, "missing or wrong token (Authorization: Bearer <token>)")

    def write_json(self, obj, status: int = 200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(obj, separators=(",", ":")) if not isinstance(obj, bytes) else obj)

    def write_error(self, status_code, **kwargs):
        reason = self._reason
        if "exc_info" in kwargs and isinstance(kwargs["exc_info"][1], tornado.web.HTTPError) and kwargs["exc_info"][1].log_message:
            reason = kwargs["exc_info"][1].log_message
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": reason, "status": status_code}))

    def body_json(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise tornado.web.HTTPError(400, "body is not JSON")
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, "body must be a JSON object")
        return body

    @staticmethod
    def parse_id(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise tornado.web.HTTPError(400, f"not an id: {text!r}")
        if not 0 <= value < 2 ** 64:
            raise tornado.web.HTTPError(400, f"id out of uint64 range: {text}")
        return value

    def int_argument(self, name: str, default: int) -> int:
        text = self.get_argument(name, str(default))
        if not text.isdigit():
            raise tornado.web.HTTPError(400, f"{name} must be a non-negative integer")
        return int(text)

    def reviewer(self, body: dict) -> str:
        who = str(body.get("reviewer") or self.request.headers.get("X-Reviewer") or "anonymous")
        return who[:100]


class HealthHandler(BaseHandler):
    def get(self):
        r = self.ctx.reviewed
        self.write_json({"status": "ok", "analysis": str(r.analysis.root), "cells": len(r.cells),
                         "synapses": len(r.synapses), "decisions": r.store.count(), "version": r.version,
                         "viewer_url": self.ctx.viewer_url, "layers": sorted(self.ctx.layers), "type_colours": type_colours()})


def type_colours() -> dict[str, str]:
    """{cell type: '#rrggbb'}: the colours Neuroglancer gives cells of each type, so the matrix labels match."""
    from syconn_ng.compartments.outputs import TYPE_RGBA

    return {t: "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3]) for t, rgba in TYPE_RGBA.items()}


def _cell_json(r, row, full: bool) -> dict:
    cid = int(row["id"])
    out = {"id": str(cid), "type": r.cell_types.get(cid, ""), "pipeline_type": r.pipeline_types.get(cid, ""),
           "reviewed": r.cell_types.get(cid, "") != r.pipeline_types.get(cid, "")}
    for k, v in row.items():
        if k in ("id", "type"):
            continue
        if k.startswith("p_"):
            out.setdefault("probabilities", {})[k[2:]] = _plain(v)
        elif k == "typeable":  # enough skeleton to judge the type (see [celltypes] min_typeable_um)
            out[k] = bool(v)
        elif full or k in ("type_probability", "n_in", "n_out", "sign"):
            out[k] = _plain(v)
    return out


class CellsHandler(BaseHandler):
    def get(self):
        r = self.ctx.reviewed
        with r.lock:
            self.write_json([_cell_json(r, row, False) for row in r.cells.to_dict("records")])


class CellHandler(BaseHandler):
    def get(self, cell):
        cid = self.parse_id(cell)
        r = self.ctx.reviewed
        rows = r.cells[r.cells["id"] == np.uint64(cid)]
        if rows.empty:
            raise tornado.web.HTTPError(404, f"no cell {cid}")
        self.write_json(_cell_json(r, rows.iloc[0].to_dict(), True))


class CellSkeletonHandler(BaseHandler):
    def get(self, cell):
        cid = self.parse_id(cell)
        nodes = self.ctx.nodes_of(cid)
        if nodes is None:
            raise tornado.web.HTTPError(404, f"no skeleton for cell {cid}")
        self.write_json({"id": str(cid), "voxel_size_nm": list(self.ctx.reviewed.analysis.voxel_size_nm),
                         "nodes": [{k: _plain(v) for k, v in n.items()} for n in nodes.to_dict("records")]})


class CellSynapsesHandler(BaseHandler):
    def get(self, cell):
        cid = np.uint64(self.parse_id(cell))
        r = self.ctx.reviewed
        with r.lock:
            s = r.synapses
            rows = s[(s["pre_cell"] == cid) | (s["post_cell"] == cid)]
            self.write_json([synapse_json(row) for row in rows.to_dict("records")])


class SynapsesHandler(BaseHandler):
    """GET synapses?pre=ID&post=ID (the synapses of one directed pair, as the matrix shows them)."""

    def get(self):
        r = self.ctx.reviewed
        pre, post = self.get_argument("pre", None), self.get_argument("post", None)
        with r.lock:
            s = r.synapses
            keep = np.ones(len(s), bool)
            if pre is not None:
                keep &= (s["pre_cell"] == np.uint64(self.parse_id(pre))).to_numpy()
            if post is not None:
                keep &= (s["post_cell"] == np.uint64(self.parse_id(post))).to_numpy()
            rows = s[keep].head(self.int_argument("limit", 10000))
            self.write_json([synapse_json(row) for row in rows.to_dict("records")])


class SynapseHandler(BaseHandler):
    def get(self, syn):
        r = self.ctx.reviewed
        with r.lock:
            try:
                i = r.synapse_row(self.parse_id(syn))
            except KeyError:
                raise tornado.web.HTTPError(404, f"no synapse {syn}")
            self.write_json(synapse_json(r.synapses.iloc[i].to_dict()))


class MatrixHandler(BaseHandler):
    def get(self):
        self.write_json(self.ctx.matrix_bytes())


class SynapseReviewHandler(BaseHandler):
    def post(self, syn):
        body = self.body_json()
        decision = body.get("decision")
        if decision not in DECISIONS:
            raise tornado.web.HTTPError(400, f"decision must be one of {list(DECISIONS)}")
        r = self.ctx.reviewed
        try:
            done = r.decide_synapse(self.parse_id(syn), decision, self.reviewer(body))
        except KeyError:
            raise tornado.web.HTTPError(404, f"no synapse {syn}")
        row = self.ctx.review_event(done, decision)
        self.write_json({"seq": done["seq"], "version": r.version, "synapse": row})


class CellReviewHandler(BaseHandler):
    def post(self, cell):
        body = self.body_json()
        cell_type = body.get("type")
        if not isinstance(cell_type, str) or not cell_type.strip() or len(cell_type) > 64:
            raise tornado.web.HTTPError(400, 'body must be {"type": "<cell type>"}')
        r = self.ctx.reviewed
        cid = self.parse_id(cell)
        try:
            done = r.decide_cell(cid, cell_type.strip(), self.reviewer(body))
        except KeyError:
            raise tornado.web.HTTPError(404, f"no cell {cid}")
        self.ctx.hub.broadcast({"type": "matrix", "version": r.version, "cell": str(cid), "cell_type": cell_type.strip()})
        self.write_json({"seq": done["seq"], "version": r.version, "id": str(cid), "type": cell_type.strip(),
                         "previous": done["previous"]})


MAX_UPLOAD_BYTES = 16 * 1024 * 1024  # a skeleton upload: ~100,000 nodes of NML; every other request keeps the small limit


@tornado.web.stream_request_body
class ReanalyseHandler(BaseHandler):
    """POST cells/{id}/reanalyse: the cell's skeleton (NML or k.zip bytes, 1-based as KNOSSOS writes them) → a
    background job re-running the per-cell stages (202 with the job); bad input is a 4xx and nothing is written."""

    def prepare(self):
        self.require_token()  # before a byte of the body is read
        length = int(self.request.headers.get("Content-Length", 0) or 0)
        if length > MAX_UPLOAD_BYTES:
            raise tornado.web.HTTPError(413, f"skeleton upload over {MAX_UPLOAD_BYTES} bytes")
        self.request.connection.set_max_body_size(MAX_UPLOAD_BYTES)
        self.chunks, self.size = [], 0

    def data_received(self, chunk):
        self.size += len(chunk)
        if self.size > MAX_UPLOAD_BYTES:
            raise tornado.web.HTTPError(413, f"skeleton upload over {MAX_UPLOAD_BYTES} bytes")
        self.chunks.append(chunk)

    def post(self, cell):
        from syconn_ng.errors import InputError
        from syconn_ng.layers import layer_box, open_layer
        from syconn_ng.reanalyse import SkeletonContentError, read_upload
        from syconn_ng.stages.hulls import hull_path

        cid = self.parse_id(cell)
        analysis = self.ctx.reviewed.analysis
        if not hull_path(analysis, cid).is_file():  # a traced cell of this analysis has a hull
            raise tornado.web.HTTPError(404, f"no cell {cid} in the analysis (tree id = cell id)")
        try:
            bounds = layer_box(open_layer(analysis.layer_path("cells")))
            upload = read_upload(b"".join(self.chunks), cid, voxel_size_nm=analysis.voxel_size_nm, bounds=bounds)
        except SkeletonContentError as err:
            raise tornado.web.HTTPError(422, str(err))
        except InputError as err:
            raise tornado.web.HTTPError(400, str(err))
        job = self.ctx.jobs.submit(upload)
        self.set_header("Location", f"/api/v1/jobs/{job['id']}")
        self.write_json(job, status=202)


class JobsHandler(BaseHandler):
    """GET jobs: every re-analysis job of this server run, oldest first."""

    def get(self):
        self.write_json(self.ctx.jobs.list())


class JobHandler(BaseHandler):
    """GET jobs/{id}: state (queued / running / done / failed), progress, message, result."""

    def get(self, job_id):
        job = self.ctx.jobs.get(job_id)
        if job is None:
            raise tornado.web.HTTPError(404, f"no job {job_id}")
        self.write_json(job)


class ReviewsHandler(BaseHandler):
    """GET reviews?limit=N: the decision log, newest first (who, when, what, previous value)."""

    def get(self):
        self.write_json(self.ctx.reviewed.store.decisions(self.int_argument("limit", 1000)))


class ExportHandler(BaseHandler):
    """GET export/synapses.csv | export/matrix.csv | export/matrix_counts.csv | export/cells.csv."""

    def get(self, what):
        from syconn_ng.connectome.matrix import matrix_to_csv

        r = self.ctx.reviewed
        with r.lock:
            if what == "synapses":
                text = r.reviewed_synapses().to_csv(index=False)
            elif what == "cells":
                text = r.reviewed_cells().to_csv(index=False)
            else:
                area, count = r.dense_matrices()
                text = matrix_to_csv(area) if what == "matrix" else matrix_to_csv(count, None)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="reviewed_{what}.csv"')
        self.finish(text)


class SelectHandler(BaseHandler):
    """POST select {"pre": id, "post": id} or {"synapse": id}: move the Neuroglancer view (what the page's websocket does)."""

    def post(self):
        try:
            self.write_json(self.ctx.handle_action(self.body_json()))
        except KeyError as err:
            raise tornado.web.HTTPError(404, f"no synapse or field {err}")
        except (ValueError, TypeError) as err:
            raise tornado.web.HTTPError(400, str(err))


class ReviewSocket(tornado.websocket.WebSocketHandler):
    """Live updates to every open page; pages send {"action": "select" | "goto", ...} (with ?token= on connect)."""

    def initialize(self, ctx):
        self.ctx = ctx

    def prepare(self):
        token = self.get_argument("token", "")
        self.authorised = bool(token) and hmac.compare_digest(token.encode(), self.ctx.token.encode())
        if self.ctx.token_for_reads and not self.authorised:
            raise tornado.web.HTTPError(401, "missing or wrong token")

    def open(self):
        self.ctx.hub.add(self)
        self.write_message(json.dumps({"type": "hello", "version": self.ctx.reviewed.version,
                                       "segments": [str(s) for s in self.ctx.selected_segments]}))

    def on_close(self):
        self.ctx.hub.discard(self)

    def on_message(self, message):
        if len(message) > self.ctx.max_request_bytes:
            self.close(1009, "message too big")
            return
        if not self.authorised:
            self.write_message(json.dumps({"type": "error", "error": "actions need ?token= on connect"}))
            return
        try:
            reply = self.ctx.handle_action(json.loads(message))
        except (ValueError, KeyError, TypeError) as err:
            reply = {"type": "error", "error": str(err)}
        self.write_message(json.dumps(reply))


def routes(ctx) -> list:
    """(pattern, handler, kwargs) for the API."""
    p = r"/api/v1/"
    n = r"([0-9]+)"
    table = [("health", HealthHandler), ("cells", CellsHandler), (f"cells/{n}", CellHandler),
             (f"cells/{n}/skeleton", CellSkeletonHandler), (f"cells/{n}/synapses", CellSynapsesHandler),
             (f"cells/{n}/review", CellReviewHandler), ("matrix", MatrixHandler), ("synapses", SynapsesHandler),
             (f"synapses/{n}", SynapseHandler), (f"synapses/{n}/review", SynapseReviewHandler),
             ("reviews", ReviewsHandler), ("export/(synapses|cells|matrix|matrix_counts).csv", ExportHandler),
             ("select", SelectHandler), (f"cells/{n}/reanalyse", ReanalyseHandler), ("jobs", JobsHandler),
             (f"jobs/{n}", JobHandler), ("ws", ReviewSocket)]
    return [(p + pat + "$", h, {"ctx": ctx}) for pat, h in table]
