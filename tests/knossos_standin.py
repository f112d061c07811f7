"""A stand-in for KNOSSOS' embedded `knossos` module (docs/reference/knossos.md §4.2), for testing the plugin
without KNOSSOS. It implements EXACTLY the documented calls the plugin uses — same names, same argument counts,
0-based internal mag1 voxel coordinates, no offset — and raises AttributeError on any other name (undocumented
or not implemented here), so a plugin calling something KNOSSOS lacks fails its tests. It records every
edit and whether signals were blocked at the time, so tests can check bulk edits are wrapped."""

from __future__ import annotations


class Coordinate:
    def __init__(self, xyz):
        self._xyz = [int(v) for v in xyz]

    def x(self):
        return self._xyz[0]

    def y(self):
        return self._xyz[1]

    def z(self):
        return self._xyz[2]

    def list(self):
        return list(self._xyz)


class Segment:
    def __init__(self, source, target):
        self._source, self._target = source, target

    def source(self):
        return self._source

    def target(self):
        return self._target

    def source_id(self):
        return self._source.node_id()

    def target_id(self):
        return self._target.node_id()


class Node:
    def __init__(self, node_id, xyz, tree):
        self._id, self._coord, self._tree, self._comment = int(node_id), Coordinate(xyz), tree, ""
        self._radius, self._segments = 1.5, []  # KNOSSOS' defaultNodeRadius (mag-1 voxels)

    def node_id(self):
        return self._id

    def radius(self):
        return self._radius

    def segments(self):
        return list(self._segments)

    def coordinate(self):
        return self._coord

    def comment(self):
        return self._comment

    def parent_tree(self):
        return self._tree


class Tree:
    def __init__(self, tree_id):
        self._id, self._nodes, self._comment, self._color = int(tree_id), [], "", None

    def tree_id(self):
        return self._id

    def nodes(self):
        return list(self._nodes)

    def comment(self):
        return self._comment

    def color(self):
        return self._color


class _Strict:
    """Raises on any attribute not defined by the class (an undocumented or unimplemented call)."""

    def __getattr__(self, name):
        raise AttributeError(f"knossos stand-in: {type(self).__name__}.{name} is not a documented call (§4.2) "
                             "implemented here")


class SkeletonProxy(_Strict):
    def __init__(self, module):
        self._m, self._trees, self._nodes, self._next_id = module, {}, {}, 1

    def _log(self, *event):
        self._m.events.append((*event, self._m.knossos_global_skeletonizer.blocked))

    # --- documented slots used by the plugin (and by the tests to build a skeleton)
    def add_tree(self, tree_id, properties={}):
        self._trees[int(tree_id)] = Tree(tree_id)
        return self._trees[int(tree_id)]

    def find_tree_by_id(self, tree_id):
        return self._trees.get(int(tree_id))

    def trees(self):
        return list(self._trees.values())

    def add_node(self, *args):
        """add_node([x,y,z], parent_tree, properties={}) or add_node(node_id, [x,y,z], parent_tree, properties={})."""
        if args and isinstance(args[0], (list, tuple)):
            node_id, (xyz, tree_id, *props) = None, args
        else:
            node_id, xyz, tree_id, *props = args
        if len(props) > 1 or len(xyz) != 3:
            raise TypeError("add_node: wrong arguments")
        node_id = self._next_id if node_id is None else int(node_id)
        self._next_id = max(self._next_id, node_id + 1)
        tree = self._trees[int(tree_id)]
        node = Node(node_id, xyz, tree)
        tree._nodes.append(node)
        self._nodes[node_id] = node
        self._log("add_node", node_id, list(node.coordinate().list()))
        return node

    def add_segment(self, source_id, target_id):
        seg = Segment(self._nodes[int(source_id)], self._nodes[int(target_id)])
        seg.source()._segments.append(seg)
        seg.target()._segments.append(seg)
        self._log("add_segment", int(source_id), int(target_id))
        return True

    def set_radius(self, node_id, radius):
        self._nodes[int(node_id)]._radius = float(radius)
        return True

    def find_node_by_id(self, node_id):
        return self._nodes.get(int(node_id))

    def set_comment(self, node_id, comment):
        self._nodes[int(node_id)]._comment = str(comment)
        self._log("set_comment", int(node_id), str(comment))
        return True

    def set_tree_comment(self, tree_id, comment):
        self._trees[int(tree_id)]._comment = str(comment)
        self._log("set_tree_comment", int(tree_id), str(comment))
        return True

    def set_tree_color(self, tree_id, color):
        self._trees[int(tree_id)]._color = color
        self._log("set_tree_color", int(tree_id), color)
        return True

    def jump_to_node(self, node):
        self._m.knossos.position = node.coordinate().list()

    def active_node(self):
        return None


class PythonProxy(_Strict):
    def __init__(self, scale=(10.0, 10.0, 20.0)):
        self.position = [0, 0, 0]
        self.scale = list(scale)

    def get_scale(self):
        """mag-1 nm per voxel of the loaded dataset."""
        return list(self.scale)

    def get_position(self):
        return list(self.position)

    def set_position(self, xyz):
        self.position = [int(v) for v in xyz]


class Skeletonizer(_Strict):
    """Signals only (§4.2): the plugin may block them and emit resetData()."""

    def __init__(self):
        self.blocked, self.resets = False, 0

    def blockSignals(self, flag):
        old, self.blocked = self.blocked, bool(flag)
        return old

    def resetData(self):
        self.resets += 1


class KnossosModule(_Strict):
    """`import knossos` as the plugin sees it: knossos.knossos, knossos.skeleton, knossos.knossos_global_skeletonizer."""

    def __init__(self, scale=(10.0, 10.0, 20.0)):
        self.events = []
        self.knossos = PythonProxy(scale)
        self.knossos_global_skeletonizer = Skeletonizer()
        self.skeleton = SkeletonProxy(self)
