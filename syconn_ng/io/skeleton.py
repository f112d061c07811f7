"""The in-memory skeleton model shared by every reader, writer and pipeline stage.

Coordinates are 0-based voxels at mag 1 in (x, y, z) order everywhere in this model; the
readers and writers convert to the 1-based KNOSSOS convention at the file boundary only.
Anything a file holds that the model has no field for is kept (``attrs``, ``extra``,
``members``) so a read → write round trip loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Node:
    """One skeleton node: id, 0-based voxel position, radius in voxels, comment and extras.

    Slotted: an annotation can hold millions of nodes. `attrs` keeps the file's other node
    attributes (e.g. webKnossos ``rotX``, KNOSSOS ``subobjectId``) as strings.
    """

    id: int
    x: float
    y: float
    z: float
    radius: float = 1.5
    comment: str = ""
    time: int | None = None
    in_vp: int | None = None
    in_mag: int | None = None
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def position(self) -> np.ndarray:
        """(3,) float64 position in 0-based voxels."""
        return np.array([self.x, self.y, self.z], dtype=np.float64)


@dataclass
class Tree:
    """One tree (`<thing>`): in syconn_ng one tree is one cell, tree id = cell id.

    `edges` are (source node id, target node id) pairs as listed under this tree in the
    file; a target may belong to another tree (an edge between trees).
    """

    id: int
    comment: str = ""
    color: tuple[float, float, float, float] | None = None
    visible: bool = True
    group_id: int | None = None
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)  # unknown child elements, serialised XML

    # -- numpy views for the pipeline -------------------------------------------------
    def node_ids(self) -> np.ndarray:
        """(N,) uint64 node ids in file order."""
        return np.fromiter((n.id for n in self.nodes), dtype=np.uint64, count=len(self.nodes))

    def positions(self) -> np.ndarray:
        """(N, 3) float64 node positions in 0-based voxels, x y z."""
        if not self.nodes:
            return np.zeros((0, 3), dtype=np.float64)
        return np.array([(n.x, n.y, n.z) for n in self.nodes], dtype=np.float64)

    def radii(self) -> np.ndarray:
        """(N,) float32 node radii in voxels."""
        return np.fromiter((n.radius for n in self.nodes), dtype=np.float32, count=len(self.nodes))

    def edge_index(self) -> np.ndarray:
        """(E, 2) int64 indices into `nodes` for the edges whose both ends are in this tree."""
        index = {n.id: i for i, n in enumerate(self.nodes)}
        pairs = [(index[a], index[b]) for a, b in self.edges if a in index and b in index]
        return np.array(pairs, dtype=np.int64).reshape(-1, 2)

    def path_length_um(self, voxel_size_nm) -> float:
        """Summed edge length in µm, with anisotropic voxels of `voxel_size_nm` (x, y, z)."""
        e = self.edge_index()
        if len(e) == 0:
            return 0.0
        p = self.positions() * np.asarray(voxel_size_nm, dtype=np.float64)
        return float(np.linalg.norm(p[e[:, 0]] - p[e[:, 1]], axis=1).sum() / 1000.0)


@dataclass
class Group:
    """A webKnossos tree group (`<group id name>`), nested."""

    id: int
    name: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    children: list["Group"] = field(default_factory=list)


@dataclass
class Parameters:
    """The `<parameters>` block: what the pipeline uses as fields, the rest kept verbatim.

    `scale_nm` is the file's voxel size (nm per mag-1 voxel, x y z); `time_ms` the
    annotation time (KNOSSOS: work time; webKnossos: Unix epoch of creation).
    """

    experiment: str | None = None
    scale_nm: tuple[float, float, float] | None = None
    time_ms: int | None = None
    edit_position: tuple[float, float, float] | None = None  # 0-based voxels
    active_node: int | None = None
    created_in: str | None = None
    last_saved_in: str | None = None
    extra: list[str] = field(default_factory=list)  # other parameter elements, serialised XML
    # other attributes of the elements above, by element name (e.g. experiment@organization)
    attrs: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Skeleton:
    """A whole annotation: trees, branchpoints (stack order), parameters and kept extras.

    `members` holds the other files of a `.k.zip` (e.g. ``mergelist.txt``) byte for byte;
    they are kept and written back, never executed. `dialect` names the writer the reader
    detected (``knossos``, ``knossos_utils``, ``webknossos``, ``syconn_ng``, ...).
    `orphan_comments` are `<comment>` entries naming no node, kept for the round trip.
    """

    trees: list[Tree] = field(default_factory=list)
    branchpoints: list[int] = field(default_factory=list)
    parameters: Parameters = field(default_factory=Parameters)
    groups: list[Group] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # unknown root elements (meta, volume, ...)
    members: dict[str, bytes] = field(default_factory=dict)
    orphan_comments: dict[int, str] = field(default_factory=dict)
    dialect: str = "syconn_ng"

    def tree(self, tree_id: int) -> Tree:
        """The tree with id `tree_id`; KeyError if absent."""
        for t in self.trees:
            if t.id == tree_id:
                return t
        raise KeyError(tree_id)

    def nodes(self):
        """Every node of every tree, in file order."""
        for t in self.trees:
            yield from t.nodes

    def num_nodes(self) -> int:
        return sum(len(t.nodes) for t in self.trees)

    def num_edges(self) -> int:
        return sum(len(t.edges) for t in self.trees)
