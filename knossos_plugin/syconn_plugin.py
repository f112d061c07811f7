#KNOSSOS_PLUGIN	Version	0.1.0
#KNOSSOS_PLUGIN	Description	syconn_ng: compartments, cell types and synapses of a `syconn-ng serve` analysis in your trees
"""syconn_ng KNOSSOS plugin: brings a `syconn-ng serve` analysis into the trees a tracer works on.

One file, Python 3 standard library only (KNOSSOS's embedded Python may have no numpy or requests).
`Controller` holds all logic and never touches Qt; `apply_to_knossos` writes into the `knossos` module
(the API of KNOSSOS's `knossos` module, docs/reference/knossos.md §4.2); the Qt widget at the bottom only
wires buttons to them and is built only when PythonQt and `knossos` are importable.

Tree id = cell id. Coordinates are 0-based voxels in the API and in KNOSSOS (no offset anywhere); only the NML
that "Send skeleton" uploads is 1-based, as KNOSSOS writes its files.
Errors (server unreachable, wrong token, unknown cell, skeleton outside the volume) come back as message
strings, never exceptions.
"""

import json
import time
import urllib.error
import urllib.request

PLUGIN_VERSION = "0.1.0"
COMPARTMENTS = ("axon", "dendrite", "soma", "spine_head", "spine_neck")  # DESIGN vocabulary = node comments
DECISIONS = ("accept", "reject", "flip")
# fallback type colours (the server's `health` sends its own `type_colours`, which win)
TYPE_RGB = {"EA": (0.2, 0.7, 0.2), "MSN": (0.85, 0.2, 0.2), "GP": (0.3, 0.3, 0.9), "INT": (0.9, 0.6, 0.1)}
SYNAPSE_COLUMNS = ("partner", "direction", "area_um2", "probability", "type")


class Controller:
    """The plugin's logic against one server: plain data in and out, message strings for errors."""

    def __init__(self, server_url, token="", timeout_s=10.0, reviewer="knossos"):
        url = str(server_url).strip().rstrip("/")
        if url and "://" not in url:
            url = "http://" + url
        if url.endswith("/api/v1"):
            url = url[: -len("/api/v1")]
        self.base = url + "/api/v1"
        self.token = (token or "").strip()
        self.timeout_s = timeout_s
        self.reviewer = reviewer
        self.type_colours = {}

    # ------------------------------------------------------------------ HTTP

    def _request(self, path, body=None, raw=None):
        """(json, None) on success, (None, message) on any failure. `body`: JSON to POST; `raw`: NML bytes to POST."""
        headers = {"Accept": "application/json"}
        data = None
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw
            headers["Content-Type"] = "application/xml"
        try:
            req = urllib.request.Request(self.base + "/" + path, data=data, headers=headers,
                                         method="POST" if data is not None else "GET")
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read().decode("utf-8")), None
        except urllib.error.HTTPError as err:
            detail = ""
            try:
                detail = json.loads(err.read().decode("utf-8")).get("error", "")
            except Exception:
                pass
            if err.code == 401:
                return None, "The server refused the token (401): copy the token `syconn-ng serve` printed."
            if err.code == 404:
                return None, "Not found (404): " + (detail or path)
            if err.code in (400, 413, 422):
                return None, "The server refused the request (%d): %s" % (err.code, detail or err.reason)
            return None, "Server error %d: %s" % (err.code, detail or err.reason)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            return None, "Cannot reach the server at %s: %s" % (self.base, reason)

    # ------------------------------------------------------------------ reading

    def health(self):
        """(health dict, None) or (None, message). Remembers the server's type colours."""
        got, msg = self._request("health")
        if got is not None:
            for t, hexc in (got.get("type_colours") or {}).items():
                try:
                    h = hexc.lstrip("#")
                    self.type_colours[t] = tuple(int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
                except (ValueError, AttributeError):
                    pass
        return got, msg

    def fetch_cell(self, tree_id):
        """The analysis of the cell traced as tree `tree_id`: (analysis dict, None) or (None, message).

        analysis = {"id", "type", "probability", "nodes": {node_id: {"x","y","z","compartment","probability"}},
        "synapses": [synapse json...], "rows": synapse_rows(...)}; a cell without skeleton has empty nodes."""
        cid = str(int(tree_id))
        cell, msg = self._request("cells/" + cid)
        if cell is None:
            if msg.startswith("Not found"):
                return None, "Tree %s: no cell with this id in the analysis." % cid
            return None, msg
        skel, msg = self._request("cells/%s/skeleton" % cid)
        nodes = {}
        if skel is not None:
            for n in skel.get("nodes", []):
                nodes[int(n["node"])] = {"x": n["x"], "y": n["y"], "z": n["z"],
                                         "compartment": n.get("compartment") or "", "probability": n.get("probability")}
        elif not msg.startswith("Not found"):
            return None, msg
        syns, msg = self._request("cells/%s/synapses" % cid)
        if syns is None:
            return None, msg
        ctype = cell.get("type") or ""
        prob = (cell.get("probabilities") or {}).get(ctype, cell.get("type_probability"))
        analysis = {"id": cid, "type": ctype, "probability": prob, "nodes": nodes, "synapses": syns,
                    "typeable": cell.get("typeable", True), "untypeable_reason": cell.get("untypeable_reason") or ""}
        analysis["rows"] = synapse_rows(cid, syns)
        return analysis, None

    # ------------------------------------------------------------------ reviewing

    def review(self, synapse_id, decision):
        """accept / reject / flip a synapse: (synapse dict after the decision, None) or (None, message)."""
        if decision not in DECISIONS:
            return None, "Unknown decision %r (accept, reject or flip)." % (decision,)
        if not self.token:
            return None, "Reviewing needs the server's token."
        got, msg = self._request("synapses/%s/review" % int(synapse_id), {"decision": decision, "reviewer": self.reviewer})
        return (got["synapse"], None) if got is not None else (None, msg)

    # ------------------------------------------------------------------ re-analysis

    def submit_skeleton(self, tree_id, nml_bytes):
        """Upload tree `tree_id`'s skeleton (NML bytes, e.g. from `tree_to_nml`) for re-analysis of that cell:
        (job dict, None) or (None, message). The job runs on the server; follow it with `job(job_id)`."""
        if not self.token:
            return None, "Sending a skeleton needs the server's token."
        cid = str(int(tree_id))
        got, msg = self._request("cells/%s/reanalyse" % cid, raw=nml_bytes)
        if got is None:
            if msg.startswith("Not found"):
                return None, "Tree %s: no cell with this id in the analysis." % cid
            if msg.startswith("The server refused the request"):
                return None, "Tree %s: the server refused the skeleton: %s" % (cid, msg.split(": ", 1)[-1])
            return None, msg
        return got, None

    def job(self, job_id):
        """A re-analysis job's state: (job dict with "state", "progress", "message", None) or (None, message)."""
        return self._request("jobs/%s" % job_id)

    def send_skeleton(self, tree_id, nml_bytes, progress=None, poll_s=0.5, timeout_s=900.0):
        """Upload the skeleton and wait for the re-analysis: (finished job dict, None) or (None, message).

        `progress(job)` is called after every poll (job["progress"]["fraction"] from 0 to 1, job["message"])."""
        job, msg = self.submit_skeleton(tree_id, nml_bytes)
        if job is None:
            return None, msg
        deadline = time.time() + timeout_s
        while True:
            if progress is not None:
                progress(job)
            if job["state"] == "done":
                return job, None
            if job["state"] == "failed":
                return None, "Re-analysis of cell %s failed: %s" % (job["cell"], job["message"])
            if time.time() > deadline:
                return None, "Re-analysis of cell %s is still %s after %d s (job %s)." % (job["cell"], job["state"], timeout_s, job["id"])
            time.sleep(poll_s)
            job, msg = self.job(job["id"])
            if job is None:
                return None, msg

    def colour_of(self, cell_type):
        """(r, g, b) floats 0..1 for a cell type (None if unknown)."""
        return self.type_colours.get(cell_type) or TYPE_RGB.get(cell_type)


UNTYPEABLE = {"short": "too short to judge", "bare_axon": "bare axon, type unreliable"}


def tree_comment(analysis):
    """'<type> (p=0.87)' (just the type if no probability); a cell the server flags as not typeable says why,
    e.g. 'MSN (p=0.41; too short to judge)'."""
    p = analysis.get("probability")
    text = "%s (p=%.2f)" % (analysis["type"], p) if p is not None else analysis["type"]
    if analysis.get("typeable", True):
        return text
    why = UNTYPEABLE.get(analysis.get("untypeable_reason"), "not typeable")
    return text[:-1] + "; %s)" % why if text.endswith(")") else "%s (%s)" % (text, why)


def synapse_rows(cell_id, synapses):
    """Table rows of a cell's synapses: dicts with id, partner, direction ('out' if the cell is pre, else 'in'),
    area_um2, probability, type, status, x, y, z (0-based voxels)."""
    rows = []
    for s in synapses:
        out = str(s["pre_cell"]) == str(cell_id)
        rows.append({"id": str(s["id"]), "partner": str(s["post_cell"] if out else s["pre_cell"]),
                     "direction": "out" if out else "in", "area_um2": s.get("area_um2"),
                     "probability": s.get("probability"), "type": s.get("type", ""), "status": s.get("status", ""),
                     "x": s["x"], "y": s["y"], "z": s["z"]})
    return rows


def _colour(rgb):
    """A QColor under PythonQt, else the (r, g, b, a) tuple."""
    try:
        from PythonQt.QtGui import QColor
        return QColor.fromRgbF(rgb[0], rgb[1], rgb[2], 1.0)
    except ImportError:
        return (float(rgb[0]), float(rgb[1]), float(rgb[2]), 1.0)


def _voxel(c):
    return [int(round(float(v))) for v in c]


def apply_to_knossos(kn, tree_id, analysis, colour_of=None):
    """Write a cell's analysis into KNOSSOS tree `tree_id`: each node's compartment as its comment (nodes
    matched by id at the same 0-based position, else by exact 0-based position; a tracer's own comment, i.e. one
    that is not a compartment word, is kept), the tree comment '<type> (p=..)', the tree colour by type.
    Signals are blocked during the edit and `resetData()` redraws once. Returns a message string."""
    sk = kn.skeleton
    tree = sk.find_tree_by_id(int(tree_id))
    if tree is None:
        return "Tree %s is not in this annotation." % tree_id
    by_pos = {tuple(_voxel((n["x"], n["y"], n["z"]))): n for n in analysis["nodes"].values()}
    done = 0
    relay = kn.knossos_global_skeletonizer
    relay.blockSignals(True)
    try:
        for node in tree.nodes():
            info = analysis["nodes"].get(int(node.node_id()))
            pos = tuple(node.coordinate().list())
            if info is None or tuple(_voxel((info["x"], info["y"], info["z"]))) != pos:
                info = by_pos.get(pos)
            mine = node.comment() or ""
            if info and info["compartment"] and (not mine or mine in COMPARTMENTS):  # keep the tracer's own comments
                if mine != info["compartment"]:
                    sk.set_comment(node.node_id(), info["compartment"])
                done += 1
        if analysis["type"]:
            sk.set_tree_comment(int(tree_id), tree_comment(analysis))
            rgb = (colour_of or TYPE_RGB.get)(analysis["type"])
            if rgb:
                sk.set_tree_color(int(tree_id), _colour(rgb))
    finally:
        relay.blockSignals(False)
        relay.resetData()
    return "Tree %s: %s, %d nodes labelled, %d synapses." % (tree_id, tree_comment(analysis) or "no type", done,
                                                          len(analysis["synapses"]))


def fetch_and_apply(kn, controller, tree_ids):
    """Fetch and apply the analysis of each tree (the active one, or all of `kn.skeleton.trees()`): returns
    ({tree_id: analysis} of the trees that worked, [one message per tree])."""
    health, msg = controller.health()
    if health is None:
        return {}, [msg]
    done, msgs = {}, []
    for tid in tree_ids:
        analysis, msg = controller.fetch_cell(tid)
        if analysis is None:
            msgs.append(msg)
            continue
        msgs.append(apply_to_knossos(kn, tid, analysis, controller.colour_of))
        done[int(tid)] = analysis
    return done, msgs


def tree_to_nml(kn, tree_id):
    """KNOSSOS tree `tree_id` as NML text, read through the documented API (§4.2): (text, None) or (None, message).

    The API's coordinates are 0-based voxels; the file is 1-based like every NML KNOSSOS writes, so each
    coordinate gets +1 here and only here. `<scale>` is the dataset's mag-1 voxel size (`get_scale()`);
    edges come from each node's segments, radii from `radius()`."""
    tree = kn.skeleton.find_tree_by_id(int(tree_id))
    if tree is None:
        return None, "Tree %s is not in this annotation." % tree_id
    nodes = tree.nodes()
    if not nodes:
        return None, "Tree %s has no nodes: nothing to send." % tree_id
    scale = [float(v) for v in kn.knossos.get_scale()]
    ids = set(n.node_id() for n in nodes)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<things>", "    <parameters>",
             '        <experiment name="syconn_ng plugin %s"/>' % PLUGIN_VERSION,
             '        <scale x="%r" y="%r" z="%r"/>' % tuple(scale), "    </parameters>",
             '    <thing id="%d">' % int(tree_id), "        <nodes>"]
    edges = []
    for n in nodes:
        x, y, z = n.coordinate().list()
        lines.append('            <node id="%d" radius="%r" x="%d" y="%d" z="%d"/>'
                     % (n.node_id(), float(n.radius()), int(x) + 1, int(y) + 1, int(z) + 1))
        for seg in n.segments():
            if seg.source_id() == n.node_id() and seg.target_id() in ids:
                edges.append((seg.source_id(), seg.target_id()))
    lines += ["        </nodes>", "        <edges>"]
    lines += ['            <edge source="%d" target="%d"/>' % e for e in edges]
    lines += ["        </edges>", "    </thing>", "</things>", ""]
    return "\n".join(lines), None


def send_tree(kn, controller, tree_id, progress=None, poll_s=0.5, timeout_s=900.0):
    """Export tree `tree_id`, send it for re-analysis, wait for the job and apply the new analysis to the tree:
    (analysis dict, [messages]) or (None, [message])."""
    text, msg = tree_to_nml(kn, tree_id)
    if text is None:
        return None, [msg]
    job, msg = controller.send_skeleton(tree_id, text.encode("utf-8"), progress, poll_s, timeout_s)
    if job is None:
        return None, [msg]
    done, msgs = fetch_and_apply(kn, controller, [tree_id])
    return done.get(int(tree_id)), [job["message"]] + msgs


def add_synapse_node(kn, row, tree_id):
    """Add a node at a synapse (0-based voxels, as the API gives them) to tree `tree_id`, comment 'synapse <id>',
    and jump to it. Returns the new node's id."""
    sk = kn.skeleton
    node = sk.add_node(_voxel((row["x"], row["y"], row["z"])), int(tree_id), {})
    nid = node.node_id() if hasattr(node, "node_id") else int(node)
    sk.set_comment(nid, "synapse %s" % row["id"])
    sk.jump_to_node(sk.find_node_by_id(nid))
    return nid


# ---------------------------------------------------------------------- Qt widget (inside KNOSSOS only)

def _build_widget():  # pragma: no cover - needs KNOSSOS' PythonQt
    import knossos
    from PythonQt import Qt, QtCore, QtGui

    class SyconnPlugin(QtGui.QWidget):
        def __init__(self, parent=knossos.knossos_global_mainwindow):
            super(SyconnPlugin, self).__init__(parent)
            self.setAttribute(Qt.Qt.WA_DeleteOnClose)
            try:
                knossos.scripting.registerPlugin(self, PLUGIN_VERSION)
            except Exception:
                pass
            self.setWindowFlags(Qt.Qt.Window)
            self.windowTitle = "syconn_ng"
            self.settings = QtCore.QSettings()
            self.settings.beginGroup("syconn_ng_plugin")
            lay = QtGui.QVBoxLayout(self)
            self.url = QtGui.QLineEdit(str(self.settings.value("url", "http://127.0.0.1:8787")))
            self.tok = QtGui.QLineEdit(str(self.settings.value("token", "")))
            self.status = QtGui.QLabel("")
            self.table = QtGui.QTableWidget(0, len(SYNAPSE_COLUMNS) + 1)
            self.table.setHorizontalHeaderLabels(list(SYNAPSE_COLUMNS) + ["status"])
            for w in (QtGui.QLabel("Server URL"), self.url, QtGui.QLabel("Token"), self.tok):
                lay.addWidget(w)
            buttons = QtGui.QHBoxLayout()
            for label, fn in (("Active tree", self.fetch_active), ("All trees", self.fetch_all), ("Add node", self.add_node),
                              ("Accept", lambda: self.review("accept")), ("Reject", lambda: self.review("reject")),
                              ("Flip", lambda: self.review("flip")), ("Send skeleton", self.send_skeleton)):
                b = QtGui.QPushButton(label)
                b.clicked.connect(fn)
                buttons.addWidget(b)
            lay.addLayout(buttons)
            lay.addWidget(self.table)
            lay.addWidget(self.status)
            self.table.cellClicked.connect(self.jump)
            self.rows, self.tree = [], None
            self.job, self.job_tree, self.job_controller = None, None, None
            self.poll = QtCore.QTimer(self)  # polls the re-analysis job without blocking KNOSSOS
            self.poll.setInterval(500)
            self.poll.timeout.connect(self.poll_job)
            self.show()

        def controller(self):
            self.settings.setValue("url", self.url.text)
            self.settings.setValue("token", self.tok.text)
            return Controller(self.url.text, self.tok.text)

        def show_rows(self, rows):
            self.rows = rows
            self.table.setRowCount(len(rows))
            for i, r in enumerate(rows):
                vals = (r["partner"], r["direction"], "%.3f" % (r["area_um2"] or 0), "%.2f" % (r["probability"] or 0), r["type"], r["status"])
                for j, v in enumerate(vals):
                    self.table.setItem(i, j, QtGui.QTableWidgetItem(str(v)))

        def fetch(self, tree_ids):
            done, msgs = fetch_and_apply(knossos, self.controller(), tree_ids)
            if done:
                self.tree = list(done)[-1]
                self.show_rows(done[self.tree]["rows"])
            self.status.text = "\n".join(msgs[-5:])

        def fetch_active(self):
            node = knossos.skeleton.active_node()
            if node is None:
                self.status.text = "No active node/tree."
                return
            self.fetch([node.parent_tree().tree_id()])

        def fetch_all(self):
            self.fetch([t.tree_id() for t in knossos.skeleton.trees()])

        def selected(self):
            i = self.table.currentRow()
            return self.rows[i] if 0 <= i < len(self.rows) else None

        def jump(self, row, col):
            r = self.rows[row]
            knossos.knossos.set_position(_voxel((r["x"], r["y"], r["z"])))

        def add_node(self):
            r = self.selected()
            if r is not None and self.tree is not None:
                add_synapse_node(knossos, r, self.tree)

        def send_skeleton(self):
            node = knossos.skeleton.active_node()
            tree_id = node.parent_tree().tree_id() if node is not None else self.tree
            if tree_id is None:
                self.status.text = "No active tree to send."
                return
            text, msg = tree_to_nml(knossos, tree_id)
            if text is None:
                self.status.text = msg
                return
            controller = self.controller()
            job, msg = controller.submit_skeleton(tree_id, text.encode("utf-8"))
            if job is None:
                self.status.text = msg
                return
            self.job, self.job_tree, self.job_controller = job, tree_id, controller
            self.status.text = "Tree %s sent: job %s %s." % (tree_id, job["id"], job["state"])
            self.poll.start()

        def poll_job(self):
            job, msg = self.job_controller.job(self.job["id"])
            if job is None or job["state"] in ("done", "failed"):
                self.poll.stop()
            if job is None:
                self.status.text = msg
            elif job["state"] == "failed":
                self.status.text = "Re-analysis of cell %s failed: %s" % (job["cell"], job["message"])
            elif job["state"] == "done":
                self.fetch([self.job_tree])  # the tree's comments, type and synapse table from the new analysis
                self.status.text = job["message"] + "\n" + self.status.text
            else:
                self.status.text = "Cell %s: %s (%d%%)" % (job["cell"], job["message"], 100 * job["progress"]["fraction"])

        def review(self, decision):
            r = self.selected()
            if r is None:
                self.status.text = "Select a synapse first."
                return
            syn, msg = self.controller().review(r["id"], decision)
            if msg:
                self.status.text = msg
                return
            new = synapse_rows(self.tree, [syn])[0]
            self.rows[self.table.currentRow()] = new
            self.show_rows(self.rows)
            self.status.text = "Synapse %s: %s" % (r["id"], syn["status"])

    return SyconnPlugin()


try:  # run inside KNOSSOS (Scripting → Run File or the plugin folder); a no-op elsewhere
    import knossos as _kn  # noqa: F401
    from PythonQt import QtGui as _qt  # noqa: F401
    _HAVE_KNOSSOS = True
except ImportError:
    _HAVE_KNOSSOS = False

if _HAVE_KNOSSOS and __name__ == "__main__":  # pragma: no cover
    main_class = _build_widget
    plugin = _build_widget()
