"""The Neuroglancer side of the review page: a `neuroglancer.Viewer` (the package's bundled client, offline)
whose layers come from `syconn_ng.viewer_state`, their data from the review server's `/layers/` routes.

Linked both ways: the page asks for a pair (`select_pair`: both cells selected, only their synapses shown in
the `pair` layer, view on the first) or a synapse (`goto`); a change of the selected cells in Neuroglancer
is reported to the pages (`Context.segments_changed`); shift+A / shift+R / shift+F accept / reject / flip
the synapse under the cursor.
"""

from __future__ import annotations

import json

import numpy as np

PAIR_LAYER = "pair"
PAIR_RGB = "#ffff00"  # the selected pair's synapses: yellow, apart from the type colours of `synapses`
PAIR_SHADER = "void main() {\n  setColor(defaultColor());\n  setPointMarkerSize(14.0);\n  setPointMarkerBorderWidth(0.0);\n}\n"
KEYS = {"shift+keya": "accept", "shift+keyr": "reject", "shift+keyf": "flip"}
CURSOR_RADIUS_VX = 4.0  # without an annotation under the cursor, the nearest synapse this close to it is meant


class ReviewViewer:
    """A Neuroglancer viewer showing the analysis' layers from `data_url` (`http://host:port` of the review server)."""

    def __init__(self, ctx, *, data_url: str, bind: str = "127.0.0.1", layout: str = "xy-3d"):
        import neuroglancer

        from syconn_ng.viewer_state import layer_specs, viewer_state

        self.ctx = ctx
        analysis = ctx.reviewed.analysis
        neuroglancer.set_server_bind_address("127.0.0.1" if bind in ("localhost", "::1") else bind)
        self.viewer = neuroglancer.Viewer()
        specs = layer_specs(analysis.root, lambda name: f"precomputed://{data_url}/layers/{name}", names=list(ctx.layers))
        vs = analysis.voxel_size_nm
        specs.append({"type": "annotation", "name": PAIR_LAYER, "visible": True,
                      "source": {"url": "local://annotations", "transform": {"outputDimensions": {a: [v * 1e-9, "m"] for a, v in zip("xyz", vs)}}},
                      "annotationColor": PAIR_RGB, "shader": PAIR_SHADER, "annotations": []})
        state = viewer_state(specs, position_vx=self._centre(), voxel_size_nm=vs, layout=layout, cross_section_scale=0.3)
        self.viewer.set_state(neuroglancer.ViewerState(state))
        self._segments: list[int] = []
        self.pair: tuple[int, int] | None = None  # the (pre, post) pair whose synapses the `pair` layer shows
        self.viewer.shared_state.add_changed_callback(lambda: self.viewer.defer_callback(self._changed))
        for key, decision in KEYS.items():
            self.viewer.actions.add(f"review-{decision}", lambda s, d=decision: self._review_under_cursor(s, d))
        with self.viewer.config_state.txn() as cs:
            for key, decision in KEYS.items():
                cs.input_event_bindings.viewer[key] = f"review-{decision}"

    @property
    def url(self) -> str:
        return self.viewer.get_viewer_url()

    def _centre(self):
        """Start at the first synapse, else the middle of the cells layer."""
        s = self.ctx.reviewed.synapses
        if len(s):
            return [float(s.x.iloc[0]), float(s.y.iloc[0]), float(s.z.iloc[0])]
        info_dir = self.ctx.layers.get("cells") or self.ctx.layers.get("raw")
        if info_dir is None:
            return [0.0, 0.0, 0.0]
        scale = json.loads((info_dir / "info").read_text())["scales"][0]
        return [o + n / 2 for o, n in zip(scale.get("voxel_offset", [0, 0, 0]), scale["size"])]

    def state_json(self) -> dict:
        return self.viewer.state.to_json()

    def select_pair(self, pre: int, post: int, points, *, move: bool = True):
        """Select both cells, show only their synapses (`pair` layer) and move to the first one (if `move`).
        points: [[id, x, y, z], ...] in voxels."""
        import neuroglancer

        self.pair = (int(pre), int(post))

        def edit(s):
            s.layers["cells"].segments = {int(pre), int(post)}
            s.layers[PAIR_LAYER].annotations = [
                neuroglancer.PointAnnotation(id=str(int(p[0])), point=[float(p[1]) + 0.5, float(p[2]) + 0.5, float(p[3]) + 0.5])
                for p in points]
            if move and len(points):
                s.position = [float(points[0][1]) + 0.5, float(points[0][2]) + 0.5, float(points[0][3]) + 0.5]

        with self.viewer.txn(overwrite=True) as s:  # the page's request wins over a camera move in flight
            edit(s)

    def goto(self, xyz):
        def edit(s):
            s.position = [float(v) + 0.5 for v in xyz]

        with self.viewer.txn(overwrite=True) as s:  # the page's request wins over a camera move in flight
            edit(s)

    def _changed(self):
        try:
            segments = self.viewer.state.layers["cells"].segments
        except (KeyError, ValueError, AttributeError):  # no cells layer (yet)
            return
        ids = sorted(int(i) for i in segments)
        if ids != self._segments:
            self._segments = ids
            self.ctx.segments_changed(ids)

    def _review_under_cursor(self, action_state, decision: str):
        syn = self._synapse_under_cursor(action_state)
        if syn is None:
            self._status(f"no synapse under the cursor to {decision}")
            return
        done = self.ctx.reviewed.decide_synapse(syn, decision, "neuroglancer")
        self.ctx.review_event(done, decision)
        self._status(f"synapse {syn}: {decision}")

    def _synapse_under_cursor(self, action_state) -> int | None:
        for layer in (PAIR_LAYER, "synapses"):
            sel = action_state.selected_values.get(layer) if action_state.selected_values else None
            if sel is not None:
                ann = sel.to_json().get("annotationId")
                if ann and str(ann).isdigit():
                    return int(ann)
        pos = action_state.mouse_voxel_coordinates
        s = self.ctx.reviewed.synapses
        if pos is None or not len(s):
            return None
        d = np.linalg.norm(s[["x", "y", "z"]].to_numpy(float) + 0.5 - np.asarray(pos, float)[:3], axis=1)
        i = int(np.argmin(d))
        return int(s.id.iloc[i]) if d[i] <= CURSOR_RADIUS_VX else None

    def _status(self, text: str):
        with self.viewer.config_state.txn() as cs:
            cs.status_messages["review"] = text
