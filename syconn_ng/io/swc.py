"""SWC skeleton files (`id type x y z radius parent`, positions and radii in nm).

SWC holds forests only: each tree is written from a root (its first node) outwards, so
edges that close a cycle and edges to other trees are not written. Node ids are renumbered
1..N with every parent before its children, which all SWC readers accept.
"""

from __future__ import annotations

from collections import deque

from syconn_ng.errors import InputError
from syconn_ng.io.skeleton import Node, Parameters, Skeleton, Tree

# SWC structure identifiers for syconn_ng's compartment vocabulary; spine parts are dendrite.
SWC_TYPES = {"soma": 1, "axon": 2, "dendrite": 3, "spine_head": 3, "spine_neck": 3}
_COMPARTMENTS = {1: "soma", 2: "axon", 3: "dendrite"}


def compartment_of(node: Node) -> str | None:
    """The node's compartment from its `compartment` attribute, else its comment; None if neither."""
    for label in (node.attrs.get("compartment", ""), node.comment):
        key = label.strip().lower().replace(" ", "_")
        if key in SWC_TYPES:
            return key
    return None


def _swc_type(node: Node) -> int:
    """The SWC type: from the compartment, else a kept `swc_type` attribute, else 0 (undefined)."""
    kind = SWC_TYPES.get(compartment_of(node))
    if kind is None:
        value = node.attrs.get("swc_type", "0")
        kind = int(value) if value.isdigit() else 0
    return kind


def swc_lines(skel: Skeleton, voxel_size_nm):
    """The lines of the SWC file of `skel`, positions and radii in nm (voxel size x, y, z)."""
    vx, vy, vz = (float(v) for v in voxel_size_nm)
    yield "# written by syconn_ng\n"
    yield f"# positions and radii in nm; voxel size {vx:g} {vy:g} {vz:g} nm\n"
    yield "# id type x y z radius parent\n"
    next_id = 1
    for tree in skel.trees:
        comment = " ".join(tree.comment.split())  # one line
        yield f"# tree {tree.id} {comment}".rstrip() + "\n"
        by_id = {n.id: n for n in tree.nodes}
        neighbours = {n.id: [] for n in tree.nodes}
        for s, t in tree.edges:
            if s in by_id and t in by_id and s != t:
                neighbours[s].append(t)
                neighbours[t].append(s)
        swc_id = {}
        for root in tree.nodes:  # every component gets a root, in file order
            if root.id in swc_id:
                continue
            queue = deque([(root.id, -1)])
            swc_id[root.id] = None
            while queue:
                nid, parent = queue.popleft()
                swc_id[nid] = next_id
                n = by_id[nid]
                kind = _swc_type(n)
                yield (f"{next_id} {kind} {n.x * vx:.6g} {n.y * vy:.6g} {n.z * vz:.6g} "
                       f"{n.radius * vx:.6g} {parent}\n")
                me = next_id
                next_id += 1
                for m in neighbours[nid]:
                    if m not in swc_id:
                        swc_id[m] = None
                        queue.append((m, me))


def read_swc(f, *, path, voxel_size_nm) -> Skeleton:
    """Parse SWC text from the text file object `f` into a Skeleton in voxels of `voxel_size_nm`.

    Each connected component (one root) becomes a tree with ids 1, 2, ...; node ids stay the
    SWC ids; SWC types 1-3 become the node attribute `compartment`, others `swc_type`.
    """
    vx, vy, vz = (float(v) for v in voxel_size_nm)
    rows = []
    seen = {}
    for lineno, line in enumerate(f, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            if len(fields) < 7:
                raise ValueError
            nid, kind, parent = int(fields[0]), int(fields[1]), int(fields[6])
            x, y, z, r = (float(v) for v in fields[2:6])
            total = x + y + z + r
            if nid < 0 or total - total != 0.0:
                raise ValueError
        except ValueError:
            raise InputError(path, "expected 'id type x y z radius parent' (id >= 0, finite numbers)",
                             element=f"row {fields[0]}", line=lineno) from None
        if nid in seen:
            raise InputError(path, f"duplicate node id {nid}", element=f"row {nid}", line=lineno)
        seen[nid] = len(rows)
        rows.append((nid, kind, x, y, z, r, parent, lineno))
    root_of = {}
    trees = {}
    for nid, kind, x, y, z, r, parent, lineno in rows:
        if parent not in (-1, nid) and parent not in seen:
            raise InputError(path, f"parent {parent} is not a node of the file", element=f"row {nid}", line=lineno)
    for nid, kind, x, y, z, r, parent, lineno in rows:
        root = _root(nid, rows, seen, root_of)
        tree = trees.get(root)
        if tree is None:
            tree = trees[root] = Tree(len(trees) + 1)
        attrs = {"compartment": _COMPARTMENTS[kind]} if kind in _COMPARTMENTS else {"swc_type": str(kind)}
        tree.nodes.append(Node(nid, x / vx, y / vy, z / vz, r / vx, attrs=attrs))
        if parent not in (-1, nid):
            tree.edges.append((parent, nid))
    params = Parameters(scale_nm=(vx, vy, vz))
    return Skeleton(trees=list(trees.values()), parameters=params, dialect="swc")


def _root(nid, rows, index, root_of):
    """The root id of `nid`'s component, following parents (iteratively, with memo)."""
    path = []
    on_path = set()
    while nid not in root_of:
        path.append(nid)
        on_path.add(nid)
        parent = rows[index[nid]][6]
        if parent in (-1, nid) or parent in on_path:  # a root, or a parent cycle
            root_of[nid] = nid
            break
        nid = parent
    root = root_of[nid]
    for p in path:
        root_of[p] = root
    return root
