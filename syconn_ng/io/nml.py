"""NML (`annotation.xml`) reading and writing: KNOSSOS 3.x to current, knossos_utils, webKnossos.

The reader streams the file with a hardened lxml `iterparse` (no entities, no DTD, no network)
and clears elements as it goes; it converts every dialect to the model's 0-based voxels and
voxel radii. The writer emits what KNOSSOS writes (1-based coordinates, no `nodes_0_based`),
keeping every element and attribute the model carries. Details: docs/knossos_files.md.
"""

from __future__ import annotations

import gc
import hashlib
import math
import re
import struct

from syconn_ng.errors import InputError, SyconnError
from syconn_ng.io.skeleton import Group, Node, Parameters, Skeleton, Tree

# The hardened parser: entities are never expanded from a DTD, nothing is fetched, and
# libxml2's size and depth limits stay on (huge_tree=False).
PARSER_OPTIONS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)

WRITER_MARK = "<!-- written by syconn_ng -->"
HEAD_BYTES = 1 << 16

# Units webKnossos writes in `<scale unit=...>`, as nanometres per unit.
_UNIT_NM = {
    "nanometer": 1.0, "nm": 1.0, "micrometer": 1e3, "um": 1e3, "µm": 1e3,
    "millimeter": 1e6, "mm": 1e6, "picometer": 1e-3, "pm": 1e-3, "angstrom": 0.1, "å": 0.1,
}
_PLAIN_NODE = ["id", "radius", "x", "y", "z", "inVp", "inMag", "time"]
_PLAIN_NODE_COMMENTED = _PLAIN_NODE + ["comment"]
_NODE_KEYS = ("id", "x", "y", "z", "radius", "inVp", "inMag", "time", "comment")
_THING_KEYS = ("id", "visible", "isVisible", "color.r", "color.g", "color.b", "color.a",
               "colorr", "colorg", "colorb", "colora", "groupId", "comment")
_KNOWN_PARAMETERS = ("experiment", "scale", "time", "editPosition", "activeNode", "createdin",
                     "lastsavedin", "nodes_0_based", "node_position_numbering")
_WEBKNOSSOS_PARAMETERS = ("zoomLevel", "editRotation", "userBoundingBox", "taskBoundingBox")
_LEGACY_PARAMETERS = ("offset", "skeletonDisplayMode", "idleTime")
_EVENT_TAGS = ("node", "edge", "thing", "parameters", "comments", "branchpoints", "groups", "things")


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------

class _Head:
    """A binary reader that keeps its first bytes for sniffing, then serves them and the rest."""

    def __init__(self, f):
        self._f = f
        self.head = f.read(HEAD_BYTES)
        self._pos = 0

    def read(self, n=-1):
        if self._pos >= len(self.head):
            return self._f.read(n)
        if n is None or n < 0:
            out = self.head[self._pos:] + self._f.read()
        else:
            out = self.head[self._pos:self._pos + n]
        self._pos += len(out)
        return out


def _sniff(head: bytes, path) -> bool:
    """Refuse entity declarations before lxml sees them; True if syconn_ng wrote the file."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = head.decode("utf-16", errors="ignore")
    else:
        text = head.decode("latin-1")
    if "<!ENTITY" in text:
        raise InputError(path, "DOCTYPE with entity declarations refused (entity expansion)",
                         element="<!DOCTYPE>")
    return WRITER_MARK in text[:512]


def _describe(el) -> str:
    """`<tag a="1" ...>` for error messages (first attributes only)."""
    attrs = " ".join(f'{k}="{v[:40]}"' for k, v in list(el.attrib.items())[:3])
    return f"<{el.tag}{' ' + attrs if attrs else ''}>"


def _is_finite(v: float) -> bool:
    return v - v == 0.0


class _Reader:
    """One streaming pass over one NML document; holds the state between elements."""

    def __init__(self, path, voxel_size_nm, written_by_us: bool):
        self.path = path
        self.voxel_size_nm = None if voxel_size_nm is None else tuple(float(v) for v in voxel_size_nm)
        self.skel = Skeleton(dialect="nml")
        self.params = self.skel.parameters
        self.written_by_us = written_by_us
        self.seen = set()  # tags of parameters / root children that decide the dialect
        self.index_origin = None  # from nodes_0_based / node_position_numbering
        self.nodes: dict[int, Node] = {}
        self.edit_position_raw = None
        self.transform = None  # (scale xyz, origin, round?, radius factor) fixed at the first node
        self.pending_edges = []  # (source, target, line) whose ends were unknown when read
        self.comments = []  # (node id, content)
        self.branchpoints = []  # (node id, line)
        self.tree = None  # the Tree being filled
        self.tree_el = None
        self.tree_ids = set()
        self.root = None  # the <things> element, set at the first event

    # -- errors and numbers ---------------------------------------------------------
    def error(self, message, el):
        return InputError(self.path, message, element=_describe(el), line=el.sourceline)

    def int_attr(self, el, value, name, *, unsigned=True):
        """An integer attribute; a float string is truncated as KNOSSOS does (PyK compat)."""
        try:
            v = int(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                raise self.error(f"attribute {name}={value!r}: expected an integer", el) from None
            if not _is_finite(f):
                raise self.error(f"attribute {name}={value!r}: expected a finite number", el) from None
            v = int(f)
        if unsigned and not 0 <= v < 2**64:
            raise self.error(f"attribute {name}={value!r}: expected an id in 0..2^64-1", el)
        return v

    def float_attr(self, el, value, name):
        try:
            v = float(value)
        except ValueError:
            raise self.error(f"attribute {name}={value!r}: expected a number", el) from None
        if not _is_finite(v):
            raise self.error(f"attribute {name}={value!r}: expected a finite number", el)
        return v

    def required(self, el, attrs, name):
        try:
            return attrs.pop(name)
        except KeyError:
            raise self.error(f"attribute {name!r} missing", el) from None

    # -- dialect ----------------------------------------------------------------------
    def dialect(self) -> str:
        seen = self.seen
        if self.written_by_us:
            return "syconn_ng"
        if "nodes_0_based" in seen or "properties" in seen:
            return "knossos_utils"
        if "meta" in seen or seen.intersection(_WEBKNOSSOS_PARAMETERS):
            return "webknossos"
        if seen.intersection(_LEGACY_PARAMETERS):
            return "knossos_legacy"
        if seen.intersection(("createdin", "lastsavedin", "node_position_numbering")):
            return "knossos"
        return "nml"

    def fix_transform(self):
        """Decide, at the first node, how file values map to 0-based voxels and voxel radii.

        Markers live in `<meta>`/`<parameters>`, which every writer puts before the trees.
        """
        # unknown root elements (webKnossos <meta>) before this tree are not serialised yet
        for child in self.root:
            if child is self.tree_el:
                break
            self.seen.add(child.tag)
        dialect = self.dialect()
        webknossos = dialect == "webknossos"
        origin = self.index_origin
        if origin is None:
            origin = 0 if webknossos else 1
        file_scale = self.params.scale_nm
        factor = (1.0, 1.0, 1.0)
        rounding = False
        if self.voxel_size_nm is not None and file_scale is not None and file_scale != self.voxel_size_nm:
            factor = tuple(f / d for f, d in zip(file_scale, self.voxel_size_nm))
            rounding = True
        if webknossos:  # radius in nm
            target = self.voxel_size_nm or file_scale
            radius_factor = 1.0 / target[0] if target else 1.0
        else:
            radius_factor = factor[0]
        self.transform = (factor, origin, rounding, radius_factor)

    def to_voxel(self, value: float, axis: int, el) -> float:
        """A file coordinate as a 0-based voxel: rescaled (rounding halves away from 0), shifted."""
        factor, origin, rounding, _ = self.transform
        if rounding:
            scaled = abs(value * factor[axis])
            if scaled > 2.0**63:
                raise self.error(f"coordinate {value} too large to rescale", el)
            value = math.floor(scaled + 0.5) * (1.0 if value >= 0 else -1.0)
        return value - origin

    # -- elements ---------------------------------------------------------------------
    def node(self, el):
        """`<node>`: fast paths for plain values; anything unusual goes to `checked_node`."""
        if self.transform is None:
            self.fix_transform()
        _, origin, rounding, radius_factor = self.transform
        keys = el.keys()
        try:
            if keys == _PLAIN_NODE or keys == _PLAIN_NODE_COMMENTED:  # KNOSSOS' and our layout
                values = el.values()
                nid, radius, x, y, z, in_vp, in_mag, time = values[:8]
                comment = values[8] if len(values) == 9 else ""
                a = {}
                in_vp, in_mag, time, radius = int(in_vp), int(in_mag), int(time), float(radius) * radius_factor
            else:
                a = dict(zip(keys, el.values()))
                nid, x, y, z = a.pop("id"), a.pop("x"), a.pop("y"), a.pop("z")
                v = a.pop("radius", None)
                radius = 1.5 if v is None else float(v) * radius_factor
                v = a.pop("inVp", None)
                in_vp = None if v is None else int(v)
                v = a.pop("inMag", None)
                in_mag = None if v is None else int(v)
                v = a.pop("time", None)
                time = None if v is None else int(v)
                comment = a.pop("comment", "")
            nid = int(nid)
            x = float(x) - origin
            y = float(y) - origin
            z = float(z) - origin
        except (KeyError, ValueError):
            return self.checked_node(el)
        total = x + y + z + radius
        if rounding or total - total != 0.0 or not 0 <= nid < 2**64 or nid in self.nodes:
            return self.checked_node(el)
        node = Node(nid, x, y, z, radius, comment, time, in_vp, in_mag, a)
        self.nodes[nid] = node
        self.tree.nodes.append(node)

    def checked_node(self, el):
        """`<node>` with every value checked, float ids truncated and rescaling applied."""
        factor, origin, rounding, radius_factor = self.transform
        a = dict(el.attrib)
        f = self.float_attr
        nid = self.int_attr(el, self.required(el, a, "id"), "id")
        x = f(el, self.required(el, a, "x"), "x")
        y = f(el, self.required(el, a, "y"), "y")
        z = f(el, self.required(el, a, "z"), "z")
        if rounding:
            x, y, z = (self.to_voxel(v, i, el) for i, v in enumerate((x, y, z)))
        else:
            x -= origin
            y -= origin
            z -= origin
        r = a.pop("radius", None)
        radius = 1.5 if r is None else f(el, r, "radius") * radius_factor
        v = a.pop("inVp", None)
        in_vp = None if v is None else self.int_attr(el, v, "inVp", unsigned=False)
        v = a.pop("inMag", None)
        in_mag = None if v is None else self.int_attr(el, v, "inMag", unsigned=False)
        v = a.pop("time", None)
        time = None if v is None else self.int_attr(el, v, "time", unsigned=False)
        node = Node(nid, x, y, z, radius, a.pop("comment", ""), time, in_vp, in_mag, a)
        if nid in self.nodes:
            raise self.error(f"duplicate node id {nid}", el)
        self.nodes[nid] = node
        self.tree.nodes.append(node)

    def edge(self, el):
        a = el.attrib
        try:
            s = int(a["source"])
            t = int(a["target"])
            if not (0 <= s < 2**64 and 0 <= t < 2**64):
                raise ValueError
        except (KeyError, ValueError):
            s = self.int_attr(el, self.required(el, dict(a), "source"), "source")
            t = self.int_attr(el, self.required(el, dict(a), "target"), "target")
        nodes = self.nodes
        if s not in nodes or t not in nodes:
            self.pending_edges.append((s, t, el.sourceline))
        self.tree.edges.append((s, t))

    def keep_unknown(self, upto):
        """Keep (serialised) and free the root elements before `upto` (all when None): unknown ones."""
        for child in list(self.root):
            if child is upto:
                break
            if isinstance(child.tag, str):
                self.seen.add(child.tag)
                self.skel.extra.append(_serialise(child))
            self.root.remove(child)

    def enter(self, container, tag, root) -> bool:
        """True if `container` is the `<nodes>`/`<edges>` (for `tag`) of a `<thing>` under the root."""
        thing = container.getparent()
        if container.tag != tag + "s" or thing is None or thing.tag != "thing" or thing.getparent() is not root:
            return False
        if self.tree_el is not thing:
            self.open_tree(thing)
        return True

    def open_tree(self, thing_el):
        """Start the Tree of `<thing>` (at its first node or edge, or at its end)."""
        a = dict(thing_el.attrib)
        tid = self.int_attr(thing_el, self.required(thing_el, a, "id"), "id")
        if tid in self.tree_ids:
            raise self.error(f"duplicate tree id {tid}", thing_el)
        self.tree_ids.add(tid)
        comment = a.pop("comment", None)
        if comment is None:  # webKnossos calls it name
            comment = a.pop("name", "")
        color = self.color(a)
        visible = a.pop("visible", None)
        wk_visible = a.pop("isVisible", None)
        if visible is None:
            visible = wk_visible
        if visible is None:  # webKnossos: a transparent tree is hidden
            visible = color is None or color[3] != 0
        elif visible.strip().lower() in ("1", "true"):
            visible = True
        elif visible.strip().lower() in ("0", "false"):
            visible = False
        else:
            raise self.error(f"attribute visible={visible!r}: expected 0/1 or true/false", thing_el)
        group = a.pop("groupId", None)
        group_id = None if group is None else self.int_attr(thing_el, group, "groupId", unsigned=False)
        self.tree = Tree(tid, comment, color, visible, group_id, [], [], a)
        self.tree_el = thing_el
        self.skel.trees.append(self.tree)

    @staticmethod
    def color(a):
        """(r, g, b, a) in 0..1, or None when unset (KNOSSOS -1, webKnossos empty strings)."""
        values = [a.pop(k, None) for k in ("color.r", "color.g", "color.b", "color.a")]
        legacy = [a.pop(k, None) for k in ("colorr", "colorg", "colorb", "colora")]  # old webKnossos
        if values[0] is None:
            values = legacy
        try:
            rgba = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            return None
        if any(v == -1 or not _is_finite(v) for v in rgba):
            return None
        return rgba

    def close_tree(self, thing_el):
        if self.tree_el is not thing_el:
            self.open_tree(thing_el)
        for child in thing_el:
            if child.tag not in ("nodes", "edges"):
                self.tree.extra.append(_serialise(child))
        self.tree = self.tree_el = None

    def parameters(self, el):
        p = self.params
        for child in el:
            tag = child.tag
            if not isinstance(tag, str):
                continue
            self.seen.add(tag)
            if tag not in _KNOWN_PARAMETERS:
                p.extra.append(_serialise(child))
                continue
            a = dict(child.attrib)
            if tag == "experiment":
                p.experiment = a.pop("name", None)
            elif tag == "scale":
                unit = a.pop("unit", "nanometer")
                per_unit = _UNIT_NM.get(unit.strip().lower())
                if per_unit is None:
                    raise self.error(f"unit={unit!r}: expected one of {sorted(_UNIT_NM)}", child)
                xyz = tuple(self.float_attr(child, self.required(child, a, k), k) for k in "xyz")
                # webKnossos writes -1 when the voxel size is unknown
                p.scale_nm = tuple(v * per_unit for v in xyz) if min(xyz) > 0 else None
            elif tag == "time":
                p.time_ms = self.int_attr(child, self.required(child, a, "ms"), "ms", unsigned=False)
                a.pop("checksum", None)  # recomputed on write
            elif tag == "editPosition":
                xyz = tuple(self.float_attr(child, self.required(child, a, k), k) for k in "xyz")
                self.edit_position_raw = (xyz, child)  # converted once the origin is known
            elif tag == "activeNode":
                p.active_node = self.int_attr(child, self.required(child, a, "id"), "id")
            elif tag == "createdin":
                p.created_in = a.pop("version", "")
            elif tag == "lastsavedin":
                p.last_saved_in = a.pop("version", "")
            elif tag == "nodes_0_based":
                self.index_origin = 0
            elif tag == "node_position_numbering":
                origin = a.pop("index_origin", "1").strip()
                if origin not in ("0", "1"):
                    raise self.error(f"index_origin={origin!r}: expected 0 or 1", child)
                self.index_origin = int(origin)
            if a and tag not in ("nodes_0_based", "node_position_numbering"):
                p.attrs[tag] = a

    def comments_el(self, el):
        for child in el:
            if child.tag != "comment":
                raise self.error("expected <comment node=... content=...>", child)
            node = self.int_attr(child, self.required(child, dict(child.attrib), "node"), "node")
            self.comments.append((node, child.get("content", "")))

    def branchpoints_el(self, el):
        for child in el:
            if child.tag != "branchpoint":
                raise self.error("expected <branchpoint id=...>", child)
            bid = self.int_attr(child, self.required(child, dict(child.attrib), "id"), "id")
            self.branchpoints.append((bid, child.sourceline))

    def groups(self, el):
        out = []
        for child in el:
            if child.tag != "group":
                continue
            a = dict(child.attrib)
            gid = self.int_attr(child, self.required(child, a, "id"), "id", unsigned=False)
            out.append(Group(gid, a.pop("name", ""), a, self.groups(child)))
        return out

    # -- the end --------------------------------------------------------------------
    def finish(self) -> Skeleton:
        skel = self.skel
        if self.transform is None:
            self.fix_transform()
        for s, t, line in self.pending_edges:
            if s not in self.nodes or t not in self.nodes:
                missing = s if s not in self.nodes else t
                raise InputError(self.path, f"edge to missing node {missing}",
                                 element=f'<edge source="{s}" target="{t}">', line=line)
        for nid, content in self.comments:
            node = self.nodes.get(nid)
            if node is None:
                skel.orphan_comments[nid] = content
            else:
                node.comment = content
        for bid, line in self.branchpoints:
            if bid not in self.nodes:
                raise InputError(self.path, f"branchpoint of missing node {bid}",
                                 element=f'<branchpoint id="{bid}">', line=line)
            skel.branchpoints.append(bid)
        if self.edit_position_raw is not None:
            xyz, el = self.edit_position_raw
            self.params.edit_position = tuple(self.to_voxel(v, i, el) for i, v in enumerate(xyz))
        if self.voxel_size_nm is not None and self.transform[2]:
            self.params.scale_nm = self.voxel_size_nm
        skel.dialect = self.dialect()
        return skel


def _serialise(el) -> str:
    from lxml import etree

    return etree.tostring(el, encoding="unicode", with_tail=False)


def read_nml(f, *, path, voxel_size_nm=None) -> Skeleton:
    """Parse an NML document from the binary file object `f` into a Skeleton.

    path: the name used in error messages. voxel_size_nm: the dataset's (x, y, z) nm per
    mag-1 voxel; when given and the file's `<scale>` differs, positions become
    round(value × file_scale / voxel_size_nm) and radii scale by x, as KNOSSOS loads them.
    Raises InputError for anything that is not a well-formed skeleton.
    """
    from lxml import etree

    src = _Head(f)
    reader = _Reader(path, voxel_size_nm, _sniff(src.head, path))
    root = None
    # Millions of new nodes would trigger needless full garbage collections (none are cyclic).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        # Only these tags make events; unknown root elements are kept when the next one ends.
        context = etree.iterparse(src, events=("end",), tag=_EVENT_TAGS, **PARSER_OPTIONS)
        containers = {"node": None, "edge": None}  # the current tree's <nodes>, <edges>, once checked
        done = 0
        for _, el in context:
            if root is None:
                root = reader.root = _check_root(el, path)
            tag = el.tag
            if tag == "node" or tag == "edge":
                parent = el.getparent()
                if parent is not containers[tag]:
                    if not reader.enter(parent, tag, root):
                        continue  # e.g. inside a kept unknown element
                    containers[tag] = parent
                if tag == "node":
                    reader.node(el)
                else:
                    reader.edge(el)
                done += 1
                if done % 1024 == 0:  # free what was read; later siblings may be parsed already
                    del parent[:parent.index(el)]
                continue
            parent = el.getparent()
            if parent is None:  # the end of <things>
                reader.keep_unknown(None)
            if parent is not root or tag == "things":  # a nested <things> is an unknown element
                continue
            reader.keep_unknown(el)
            reader.seen.add(tag)
            if tag == "thing":
                reader.close_tree(el)
            elif tag == "parameters":
                reader.parameters(el)
            elif tag == "comments":
                reader.comments_el(el)
            elif tag == "branchpoints":
                reader.branchpoints_el(el)
            elif tag == "groups":
                reader.skel.groups.extend(reader.groups(el))
            del root[0]
        if root is None:  # no element made an event: check what the root was
            _check_root(context.root, path)
    except etree.XMLSyntaxError as err:
        raise InputError(path, f"malformed XML: {err.msg}", line=err.lineno or None) from None
    finally:
        if gc_was_enabled:
            gc.enable()
    return reader.finish()


def _check_root(el, path):
    """The document root, checked to be `<things>` without entity declarations."""
    tree = el.getroottree()
    dtd = tree.docinfo.internalDTD
    if dtd is not None and list(dtd.entities()):
        raise InputError(path, "DOCTYPE with entity declarations refused (entity expansion)",
                         element="<!DOCTYPE>")
    root = tree.getroot()
    if root.tag != "things":
        raise InputError(path, "expected the root element <things>", element=f"<{root.tag}>",
                         line=root.sourceline)
    return root


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------

_ESCAPE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                         "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NAME = re.compile(r"[A-Za-z_][\w.\-]*\Z")


def _text(s) -> str:
    """An attribute value, escaped; strings XML 1.0 cannot hold are refused."""
    s = str(s)
    if _NOT_XML.search(s):
        raise SyconnError(f"cannot write {s!r} to XML: it holds characters XML 1.0 forbids")
    return s.translate(_ESCAPE)


def _number(v) -> str:
    """An integer-valued number as an integer, any other as the shortest round-trip float."""
    v = float(v)
    i = int(v)
    return str(i) if i == v else repr(v)


def _attrs(attrs: dict, reserved) -> str:
    out = []
    for k, v in attrs.items():
        if k in reserved or not _NAME.match(k):
            raise SyconnError(f"cannot write attribute {k!r}: reserved or not an XML name")
        out.append(f' {k}="{_text(v)}"')
    return "".join(out)


def time_checksum(ms: int) -> str:
    """KNOSSOS' `<time checksum>`: SHA-256 hex of the 4 raw little-endian bytes of the int ms."""
    wrapped = (int(ms) + 2**31) % 2**32 - 2**31  # the value a C++ int holds
    return hashlib.sha256(struct.pack("<i", wrapped)).hexdigest()


def _parameters(p: Parameters):
    a = p.attrs
    yield "    <parameters>\n"
    if p.experiment is not None or "experiment" in a:
        name = "" if p.experiment is None else f' name="{_text(p.experiment)}"'
        yield f"        <experiment{name}{_attrs(a.get('experiment', {}), ('name',))}/>\n"
    for tag, value in (("lastsavedin", p.last_saved_in), ("createdin", p.created_in)):
        if value is not None:
            yield f'        <{tag} version="{_text(value)}"{_attrs(a.get(tag, {}), ("version",))}/>\n'
    if p.scale_nm is not None:
        x, y, z = (_number(v) for v in p.scale_nm)
        yield f'        <scale x="{x}" y="{y}" z="{z}"{_attrs(a.get("scale", {}), ("x", "y", "z", "unit"))}/>\n'
    if p.time_ms is not None:
        yield (f'        <time ms="{int(p.time_ms)}" checksum="{time_checksum(p.time_ms)}"'
               f'{_attrs(a.get("time", {}), ("ms", "checksum"))}/>\n')
    if p.active_node is not None:
        yield f'        <activeNode id="{int(p.active_node)}"{_attrs(a.get("activeNode", {}), ("id",))}/>\n'
    if p.edit_position is not None:
        x, y, z = (_number(v + 1) for v in p.edit_position)
        yield (f'        <editPosition x="{x}" y="{y}" z="{z}"'
               f'{_attrs(a.get("editPosition", {}), ("x", "y", "z"))}/>\n')
    for xml in p.extra:
        yield f"        {xml}\n"
    yield "    </parameters>\n"


def _tree(t: Tree):
    color = ('color.r="-1." color.g="-1." color.b="-1." color.a="1."' if t.color is None
             else " ".join(f'color.{c}="{_number(v)}"' for c, v in zip("rgba", t.color)))
    group = "" if t.group_id is None else f' groupId="{int(t.group_id)}"'
    # an empty comment is written when a `name` attribute would otherwise stand in for it
    comment = f' comment="{_text(t.comment)}"' if t.comment or "name" in t.attrs else ""
    yield (f'    <thing id="{int(t.id)}" visible="{int(bool(t.visible))}" {color}{group}{comment}'
           f'{_attrs(t.attrs, _THING_KEYS)}>\n')
    yield "        <nodes>\n"
    lines = []
    for n in t.nodes:
        extra = ""
        if n.in_vp is not None:
            extra += f' inVp="{int(n.in_vp)}"'
        if n.in_mag is not None:
            extra += f' inMag="{int(n.in_mag)}"'
        if n.time is not None:
            extra += f' time="{int(n.time)}"'
        if n.comment:
            extra += f' comment="{_text(n.comment)}"'
        if n.attrs:
            extra += _attrs(n.attrs, _NODE_KEYS)
        lines.append(f'            <node id="{int(n.id)}" radius="{_number(n.radius)}" x="{_number(n.x + 1)}"'
                     f' y="{_number(n.y + 1)}" z="{_number(n.z + 1)}"{extra}/>\n')
        if len(lines) >= 4096:
            yield "".join(lines)
            lines.clear()
    yield "".join(lines)
    yield "        </nodes>\n        <edges>\n"
    yield "".join(f'            <edge source="{int(s)}" target="{int(d)}"/>\n' for s, d in t.edges)
    yield "        </edges>\n"
    for xml in t.extra:
        yield f"        {xml}\n"
    yield "    </thing>\n"


def _groups(groups, indent):
    for g in groups:
        head = f'{indent}<group id="{int(g.id)}" name="{_text(g.name)}"{_attrs(g.attrs, ("id", "name"))}'
        if g.children:
            yield head + ">\n"
            yield from _groups(g.children, indent + "    ")
            yield f"{indent}</group>\n"
        else:
            yield head + "/>\n"


def nml_chunks(skel: Skeleton):
    """The NML text of `skel` as KNOSSOS writes it, in chunks of str (for streaming writes).

    Order: the kept unknown root elements (e.g. `<meta>`, `<volume>`), parameters, trees,
    comments (node comments, also as node `comment=` attributes), branchpoints (stack
    order), groups.
    """
    yield f'<?xml version="1.0" encoding="UTF-8"?>\n{WRITER_MARK}\n<things>\n'
    for xml in skel.extra:  # first, as webKnossos puts <meta> and knossos_utils <properties>
        yield f"    {xml}\n"
    yield from _parameters(skel.parameters)
    for t in skel.trees:
        yield from _tree(t)
    comments = [(n.id, n.comment) for n in skel.nodes() if n.comment]
    comments += sorted(skel.orphan_comments.items())
    yield "    <comments>\n"
    yield "".join(f'        <comment node="{int(i)}" content="{_text(c)}"/>\n' for i, c in comments)
    yield "    </comments>\n    <branchpoints>\n"
    yield "".join(f'        <branchpoint id="{int(b)}"/>\n' for b in skel.branchpoints)
    yield "    </branchpoints>\n"
    if skel.groups:
        yield "    <groups>\n"
        yield from _groups(skel.groups, "        ")
        yield "    </groups>\n"
    yield "</things>\n"


def write_nml(skel: Skeleton, f) -> None:
    """Write `skel` as KNOSSOS-compatible NML to the binary file object `f` (1-based, UTF-8)."""
    for chunk in nml_chunks(skel):
        f.write(chunk.encode("utf-8"))
