"""`syconn.toml`: the analysis config as typed dataclasses with documented defaults.

Defaults live here and nowhere else. Each section is a dataclass; every field's comment is
written into the TOML that `syconn-ng init` (and `syconn-ng synth`) produce, so the file a
user edits documents itself. Relative paths are relative to the analysis directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from syconn_ng.errors import ConfigError

CONFIG_NAME = "syconn.toml"


def _f(default, doc: str, **kw):
    """A dataclass field carrying its documentation (written as a TOML comment)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass
class DatasetConfig:
    """Where the input data is."""

    raw: str = _f("raw", "raw EM: a precomputed image layer (local path, file://, gs://, s3://, https://)")
    skeletons: list[str] = _f(["skeletons/*.k.zip"], "KNOSSOS skeleton files (.nml/.k.zip, glob patterns); one tree = one cell")
    voxel_size_nm: list[float] = _f([10.0, 10.0, 20.0], "voxel size at mag 1 in nm (x, y, z); must match the raw layer")


@dataclass
class ChunkingConfig:
    """How volume stages split the dataset into tasks."""

    chunk_size: list[int] = _f([128, 128, 64], "output chunk size in voxels (x, y, z) of every layer written")
    task_size: list[int] = _f([256, 256, 128], "voxels per volume task (a multiple of chunk_size)")
    missing_chunks: str = _f("error", "a missing input chunk is an 'error' or read as 'zeros'")
    shard_annotations_over: int = _f(20000, "annotation layers (synapses) with more annotations than this are written sharded "
                                            "(few shard files instead of ~2 files per annotation); 0 = always, -1 = never")
    shard_skeletons_over: int = _f(10000, "skeleton sources (hulls, compartments) of more cells than this are sharded once all "
                                          "cells are written (few shard files instead of one per cell); 0 = always, -1 = never")


@dataclass
class ExecutorConfig:
    """Where tasks run."""

    kind: str = _f("local", "local (process pool) | dask (scheduler address) | slurm | sge (dask-jobqueue)")
    workers: int = _f(0, "worker processes for local and jobqueue clusters; 0 = all cores")
    scheduler: str = _f("", "dask scheduler address (tcp://host:8786) for kind = 'dask'")
    retries: int = _f(2, "times a failing task is retried before it is reported as failed")
    jobqueue: dict = _f({}, "keyword arguments for the dask-jobqueue cluster (queue, cores, memory, walltime, ...)")


@dataclass
class OracleConfig:
    """Ground-truth layers fed to stages instead of the previous stage's output (to score stages alone)."""

    barrier: str = _f("", "a barrier layer to use instead of the barrier CNN's output ('' = use the CNN)")
    organelles: str = _f("", "a 3-channel (sj, vc, mi) layer to use instead of the organelle CNN's output")
    myelin: str = _f("", "a myelin layer (0-255) to use instead of the myelin_syntype CNN's myelin channel")


@dataclass
class CnnConfig:
    """The `barrier` and `organelles` stages: CNN inference over the chunk grid (skipped where [oracle] names a layer)."""

    barrier_model: str = _f("", "barrier model file (.pt); '' = the bundled default (trained on synthetic tissue, 10 x 10 x 20 nm)")
    organelles_model: str = _f("", "organelle model file (.pt, channels sj, vc, mi); '' = the bundled default")
    myelin_syntype_model: str = _f("", "myelin / synapse-type model file (.pt, channels myelin and syntype, or one of "
                                       "them); '' = the bundled default")
    device: str = _f("auto", "auto (CUDA when present, with mixed precision) | cpu | cuda")
    batch_size: int = _f(2, "patches per model pass")
    patch_size: list[int] = _f([], "input patch in voxels (x, y, z); [] = the model's own")
    overlap: list[int] = _f([], "overlap of neighbouring output tiles in voxels (x, y, z); [] = twice the model's output crop")
    threads: int = _f(0, "torch CPU threads per worker process; 0 = cores / [executor] workers")
    voxel_size_tolerance: float = _f(0.2, "a model trained at a voxel size more than this fraction off on any axis is refused")


@dataclass
class ObjectsConfig:
    """The `objects` stage: organelle probabilities → connected objects with global ids."""

    threshold_sj: float = _f(4 / 21, "sj threshold as a fraction of full scale (SyConn: 4/21); voxels with value > int(fraction * 255) belong to objects")
    threshold_vc: float = _f(6 / 21, "vc threshold as a fraction of full scale (SyConn: 6/21)")
    threshold_mi: float = _f(9 / 21, "mi threshold as a fraction of full scale (SyConn: 9/21)")
    hysteresis_ratio: float = _f(0.0, "if > 0: objects grow from voxels above the threshold into neighbours above ratio x threshold (0 = plain threshold)")
    connectivity: int = _f(26, "voxel connectivity of objects: 6, 18 or 26")
    min_voxels_sj: int = _f(100, "sj objects with fewer voxels (counted over the whole stitched object) are dropped; 100 "
                               "(SyConn2's min_obj_vx for sj, half the smallest synthetic junction) removes small false blobs")
    min_voxels_vc: int = _f(8, "vc objects with fewer voxels (counted over the whole stitched object) are dropped")
    min_voxels_mi: int = _f(20, "mi objects with fewer voxels (counted over the whole stitched object) are dropped")


@dataclass
class HullsConfig:
    """The `hulls` stage: rays cast from skeleton nodes through the barrier → cell hulls, node radii, the `cells` layer."""

    node_spacing_nm: float = _f(50.0, "skeleton edges are interpolated so that nodes are at most this far apart (SyConn: 50)")
    rays_per_node: int = _f(100, "rays cast from a node with two or more neighbours (SyConn: 100)")
    rays_in_plane: int = _f(20, "of these, rays in the plane orthogonal to the skeleton; the others are tilted (SyConn: 20)")
    max_tilt_deg: float = _f(60.0, "the other rays are tilted out of that plane by a uniform random angle up to this (SyConn: 60)")
    rays_per_end_node: int = _f(200, "rays cast from an end node (fewer than two neighbours) (SyConn: 200)")
    end_max_tilt_deg: float = _f(90.0, "tilt range of end-node rays (90 = directions over the whole sphere)")
    step_vx: float = _f(0.25, "ray-marching step as a fraction of the smallest voxel side (SyConn: 1/4)")
    barrier_cutoff: float = _f(0.4, "barrier values at or below this fraction of full scale count as 0 (SyConn: 0.4)")
    barrier_threshold: float = _f(2.2, "a ray stops when the barrier summed over the voxels it entered reaches this, in full-scale voxels (SyConn: 2.2)")
    hull_at: str = _f("entry", "where a stopped ray's hull point lies: 'entry' = where it entered the membrane that stopped it, 'stop' = where the sum reached the threshold (SyConn v1)")
    max_ray_length_nm: float = _f(3000.0, "rays longer than this are discarded (SyConn: 2000 quarter-voxel steps)")
    max_dist_mult: float = _f(1.4, "hull points farther from their node than this times the node radius are dropped (SyConn: 1.4)")
    outlier_neighbors: int = _f(20, "a hull point is kept only with at least this many other hull points of its cell ... (SyConn: 20)")
    outlier_radius_nm: float = _f(220.0, "... within this distance (SyConn: 220)")
    seed: int = _f(0, "seed of the random ray tilts (combined with the cell id, so each cell's hull is reproducible)")
    max_box_voxels: int = _f(50_000_000, "largest barrier box read at once; a larger cell is done in several boxes of nodes")
    voxelize_spacing: float = _f(0.5, "voxelisation uses nodes at least this many node radii apart (fewer, larger star regions in somata)")
    direction_bins: int = _f(12, "voxelisation: directions are binned on a cube map with this many bins per face side")
    grow_nm: float = _f(40.0, "voxelisation: hulls then grow this far into voxels off the barrier (fills the rim the rays leave short of the membrane; 0 = off)")
    max_gap_deg: float = _f(35.0, "voxelisation: a direction farther than this from every kept ray of a node is outside that node's region")
    mesh_reduction: int = _f(10, "mesh simplification factor passed to zmesh (0 or 1 = none)")


@dataclass
class MappingConfig:
    """The `mapping` stage: each mi, vc and sj object → the cell(s) containing it."""

    min_fraction_mi: float = _f(0.5, "an mi object belongs to the cell holding at least this fraction of its voxels (best cell only)")
    min_fraction_vc: float = _f(0.5, "the same for vc objects")
    min_fraction_sj: float = _f(0.2, "an sj object is listed with every cell within the dilation of at least this fraction of its voxels")
    sj_dilation_vx: list[int] = _f([2, 2, 1], "sj voxels look for cells this many voxels away (x, y, z): the cleft and membranes are unlabelled")


@dataclass
class SynapsesConfig:
    """The `synapses` stage: contact sites between cells, sj objects on them as candidates, a forest's probability, direction, area, type."""

    contact_dist_nm: float = _f(60.0, "two cells are in contact where at most this gap (nm, along an axis) separates them (SyConn: 60)")
    band_nm: float = _f(40.0, "width of the band beside an sj whose grey level is measured on each side (the postsynaptic density); the next band is the reference")
    vc_dist_nm: float = _f(500.0, "vesicle clouds of a partner whose centroid lies within this distance of the sj count for that side (SyConn2: 500)")
    mi_dist_nm: float = _f(1000.0, "the same for mitochondria (SyConn2: 1000)")
    cleft_thickness_nm: float = _f(36.0, "synaptic area = sj voxels x voxel volume / this thickness (the synthetic tissue's sj is the cleft +- 18 nm)")
    symmetric_band_ratio: float = _f(0.85, "type_model = 'threshold': a synapse is symmetric if its postsynaptic band is brighter than this fraction of the post cell's cytoplasm (thin density)")
    min_probability: float = _f(0.5, "candidates with at least this synapse probability are synapses (SyConn2: 0.5)")
    model: str = _f("", "synapse forest (.skops); '' = the bundled one (synthetic tissue); 'none' = rule: an sj on a contact with a vesicle cloud")
    type_model: str = _f("", "synapse-type forest (.skops); '' = the bundled one; 'threshold' = the symmetric_band_ratio rule; "
                             "used only without a syntype layer")
    symmetric_fraction: float = _f(0.0, "with a syntype layer (the myelin_syntype CNN): a synapse is symmetric when the mean symmetric "
                                        "probability over its junction's voxels exceeds this; 0 = the threshold calibrated with the model "
                                        "(stored in its file and the syntype layer's info; bundled model: docs/myelin.md; SyConn: 0.225 for its own CNN)")


@dataclass
class CompartmentsConfig:
    """The `compartments` stage: random forests on skeleton node features → axon / dendrite / soma and spine head / neck."""

    model: str = _f("", "axon / dendrite / soma forest (.skops with its .json); '' = the bundled one (synthetic tissue)")
    spine_model: str = _f("", "shaft / spine_head / spine_neck forest for dendrite nodes; '' = the bundled one")
    window_um: float = _f(3.0, "training: node features are summed over the skeleton within this path distance (SyConn: 6); prediction uses the model's")
    small_window_um: float = _f(0.5, "training: a second, small window (spines, varicosities); prediction uses the model's")
    smooth_um: float = _f(0.5, "axon / dendrite / soma probabilities are averaged along the skeleton within this path distance (0 = off)")
    spine_smooth_um: float = _f(0.0, "spine probabilities are averaged among dendrite nodes within this path distance (0 = off)")
    myelin_shell_nm: float = _f(60.0, "node myelin = the mean of the myelin layer in a shell this thick just outside the node's hull "
                                      "radius (SyConn: a 10 x 10 x 5 voxel box around the node)")
    myelin_threshold: float = _f(0.25, "a node is myelinated where that mean exceeds this fraction of full scale (a sheath fills about "
                                       "half the shell, the caps along the axon lie inside it; SyConn: 100/255 of its box)")
    myelin_vote_um: float = _f(2.0, "then a majority vote of the flags along the skeleton within this path distance (SyConn: 2; 0 = off)")
    myelin_means_axon: bool = _f(True, "myelinated nodes are axon: their axon / dendrite / soma probabilities become axon before smoothing")
    synonyms: dict = _f({}, "training labels: other node-comment names for the compartments, e.g. {bouton = \"axon\", head = \"spine_head\"}")
    n_estimators: int = _f(50, "training: trees per forest (measured: 200 unlimited trees gain < 0.005 accuracy at 4x the size)")
    max_depth: int = _f(12, "training: maximum tree depth (0 = unlimited); bounds the model file size")
    min_samples_leaf: int = _f(2, "training: minimum samples per leaf")
    cv_folds: int = _f(5, "training: cross-validation folds, grouped by cell")
    seed: int = _f(0, "training: random seed")


@dataclass
class CelltypesConfig:
    """The `celltypes` stage: a random forest on per-cell features (compartments, organelles, synapses) → cell type."""

    model: str = _f("", "cell-type forest (.skops with its .json); '' = the bundled one (EA, MSN, GP, INT; synthetic tissue)")
    synonyms: dict = _f({}, "training labels: other names for the cell types, e.g. {\"medium spiny\" = \"MSN\"}")
    min_typeable_um: float = _f(1.0, "cells with less skeleton than this (µm) get typeable = 0 in tables/cells.csv: still typed, "
                                     "but too short to judge (accuracy vs length: docs/compartments.md)")
    inhibitory_fraction: float = _f(0.5, "a cell's sign (tables/cells.csv): inhibitory when more than this share of its outgoing "
                                         "synaptic area is symmetric, else excitatory")
    bare_axons_typeable: bool = _f(False, "false: an axon-only cell without mitochondria, vesicle clouds or synapses also gets "
                                          "typeable = 0 (it shows nothing that tells the types apart)")
    n_estimators: int = _f(60, "training: trees in the forest (measured: 200 trees, depth 12 gain nothing at 3x the size)")
    max_depth: int = _f(8, "training: maximum tree depth (0 = unlimited); bounds the model file size")
    min_samples_leaf: int = _f(1, "training: minimum samples per leaf")
    cv_folds: int = _f(5, "training: cross-validation folds (a cell is never in two folds)")
    seed: int = _f(0, "training: random seed")


@dataclass
class ConnectomeConfig:
    """The `connectome` stage: the wiring matrix (summed synaptic area pre -> post), sorted by cell type, and per-cell summaries."""

    min_probability: float = _f(0.0, "synapses with a lower probability are left out of the matrix (on top of [synapses] min_probability)")
    axo_dendritic_only: bool = _f(False, "keep only synapses from an axon onto a dendrite, spine head or spine neck (SyConn2 axodend_only; drops axo-somatic too)")
    synapse_type: str = _f("all", "all | asymmetric | symmetric: which synapses make the matrix")
    type_order: list[str] = _f(["EA", "MSN", "GP", "INT"], "cell types in the order the matrix groups them; other types follow alphabetically, cells without a type last")


@dataclass
class ScalesConfig:
    """The `scales` stage: downsampled scales of every volume layer under layers/ (images averaged, segmentations by mode; docs/scales.md)."""

    mips: int = _f(-1, "scales below full resolution per layer: -1 = until a scale fits in one chunk or is <= min_size_vx across; 0 = none (stage off)")
    min_size_vx: int = _f(64, "no further scale once the largest side of a scale is at most this many voxels")


@dataclass
class ServeConfig:
    """`syconn-ng serve`: the review server (Neuroglancer + wiring matrix + review API)."""

    port: int = _f(8787, "TCP port of the review page and JSON API (0 = any free port)")
    bind: str = _f("127.0.0.1", "address to listen on; anything but loopback requires a token")
    token_file: str = _f("", "file holding the access token (>= 16 characters); '' = a random token per start (printed)")
    max_request_bytes: int = _f(65536, "largest request body (and websocket message) accepted, bytes")


@dataclass
class Config:
    """The whole `syconn.toml`."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    cnn: CnnConfig = field(default_factory=CnnConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    hulls: HullsConfig = field(default_factory=HullsConfig)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    compartments: CompartmentsConfig = field(default_factory=CompartmentsConfig)
    celltypes: CelltypesConfig = field(default_factory=CelltypesConfig)
    synapses: SynapsesConfig = field(default_factory=SynapsesConfig)
    connectome: ConnectomeConfig = field(default_factory=ConnectomeConfig)
    scales: ScalesConfig = field(default_factory=ScalesConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def section_params(self, name: str) -> dict:
        """A section as a plain dict (what a stage's parameter hash is computed from)."""
        return dataclasses.asdict(getattr(self, name))


_CHOICES = {
    ("executor", "kind"): {"local", "dask", "slurm", "sge"},
    ("chunking", "missing_chunks"): {"error", "zeros"},
    ("objects", "connectivity"): {6, 18, 26},
    ("cnn", "device"): {"auto", "cpu", "cuda"},
    ("hulls", "hull_at"): {"entry", "stop"},
}


def _check_value(path: Path, section: str, name: str, value, typ):
    where = f"[{section}] {name}"
    origin = getattr(typ, "__origin__", typ)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {value!r}", element=where)
        (inner,) = typ.__args__
        numeric = (int,) if inner is int else (int, float)  # a float in a list of ints would be truncated
        ok = all(isinstance(v, numeric) and not isinstance(v, bool) for v in value) if inner in (int, float) else all(isinstance(v, inner) for v in value)
        if not ok:
            raise ConfigError(path, f"expected a list of {inner.__name__}, got {value!r}", element=where)
        value = [inner(v) for v in value]
    elif typ is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(path, f"expected a number, got {value!r}", element=where)
        value = float(value)
    elif typ is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(path, f"expected an integer, got {value!r}", element=where)
    elif typ is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {value!r}", element=where)
    elif typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a table, got {value!r}", element=where)
    choices = _CHOICES.get((section, name))
    if choices is not None and value not in choices:
        raise ConfigError(path, f"expected one of {sorted(choices, key=str)}, got {value!r}", element=where)
    return value


def config_from_dict(data: dict, path: Path | str = CONFIG_NAME) -> Config:
    """Validate a parsed TOML document into a Config; unknown sections or keys are errors."""
    path = Path(path)
    cfg = Config()
    hints = get_type_hints(Config)
    for section, values in data.items():
        if section not in hints:
            raise ConfigError(path, f"unknown section (known: {', '.join(hints)})", element=f"[{section}]")
        if not isinstance(values, dict):
            raise ConfigError(path, "expected a table", element=f"[{section}]")
        obj = getattr(cfg, section)
        sec_hints = get_type_hints(type(obj))
        for name, value in values.items():
            if name not in sec_hints:
                raise ConfigError(path, f"unknown key (known: {', '.join(sec_hints)})", element=f"[{section}] {name}")
            setattr(obj, name, _check_value(path, section, name, value, sec_hints[name]))
    _check_consistency(cfg, path)
    return cfg


def _check_consistency(cfg: Config, path: Path) -> None:
    if len(cfg.dataset.voxel_size_nm) != 3 or min(cfg.dataset.voxel_size_nm) <= 0:
        raise ConfigError(path, "expected 3 positive numbers", element="[dataset] voxel_size_nm")
    for name in ("chunk_size", "task_size"):
        v = getattr(cfg.chunking, name)
        if len(v) != 3 or min(v) <= 0:
            raise ConfigError(path, "expected 3 positive integers", element=f"[chunking] {name}")
    for name in ("shard_annotations_over", "shard_skeletons_over"):
        if getattr(cfg.chunking, name) < -1:
            raise ConfigError(path, "expected -1 (never), 0 (always) or a number of objects", element=f"[chunking] {name}")
    if any(t % c for t, c in zip(cfg.chunking.task_size, cfg.chunking.chunk_size)):
        raise ConfigError(path, f"must be a multiple of chunk_size {cfg.chunking.chunk_size}", element="[chunking] task_size")
    for t in ("sj", "vc", "mi"):
        v = getattr(cfg.objects, f"threshold_{t}")
        if not 0 < v <= 1:
            raise ConfigError(path, "expected a fraction in (0, 1]", element=f"[objects] threshold_{t}")
        if getattr(cfg.objects, f"min_voxels_{t}") < 0:
            raise ConfigError(path, "expected an integer >= 0", element=f"[objects] min_voxels_{t}")
    if not 0 <= cfg.objects.hysteresis_ratio < 1:
        raise ConfigError(path, "expected a ratio in [0, 1)", element="[objects] hysteresis_ratio")
    _check_hulls_mapping(cfg, path)
    _check_cnn(cfg, path)
    if cfg.celltypes.min_typeable_um < 0:
        raise ConfigError(path, "expected a length >= 0 (µm)", element="[celltypes] min_typeable_um")
    if cfg.scales.mips < -1 or cfg.scales.min_size_vx < 1:
        raise ConfigError(path, "expected mips >= -1 and min_size_vx >= 1", element="[scales] mips/min_size_vx")
    if cfg.executor.retries < 0 or cfg.executor.workers < 0:
        raise ConfigError(path, "expected integers >= 0", element="[executor] retries/workers")


def _check_hulls_mapping(cfg: Config, path: Path) -> None:
    h, m = cfg.hulls, cfg.mapping
    positive = ("node_spacing_nm", "step_vx", "barrier_threshold", "max_ray_length_nm", "max_dist_mult", "outlier_radius_nm",
                "max_box_voxels", "voxelize_spacing", "direction_bins", "max_gap_deg", "rays_per_node", "rays_per_end_node")
    for name in positive:
        if getattr(h, name) <= 0:
            raise ConfigError(path, "expected a positive number", element=f"[hulls] {name}")
    if not 0 <= h.rays_in_plane <= h.rays_per_node:
        raise ConfigError(path, f"expected 0..rays_per_node ({h.rays_per_node})", element="[hulls] rays_in_plane")
    if not 0 <= h.barrier_cutoff < 1:
        raise ConfigError(path, "expected a fraction in [0, 1)", element="[hulls] barrier_cutoff")
    for name in ("max_tilt_deg", "end_max_tilt_deg"):
        if not 0 <= getattr(h, name) <= 90:
            raise ConfigError(path, "expected an angle in [0, 90] degrees", element=f"[hulls] {name}")
    if h.outlier_neighbors < 0 or h.mesh_reduction < 0 or h.grow_nm < 0:
        raise ConfigError(path, "expected an integer >= 0", element="[hulls] outlier_neighbors/mesh_reduction/grow_nm")
    for t in ("mi", "vc", "sj"):
        if not 0 < getattr(m, f"min_fraction_{t}") <= 1:
            raise ConfigError(path, "expected a fraction in (0, 1]", element=f"[mapping] min_fraction_{t}")
    if len(m.sj_dilation_vx) != 3 or min(m.sj_dilation_vx) < 0:
        raise ConfigError(path, "expected 3 integers >= 0", element="[mapping] sj_dilation_vx")


def _check_cnn(cfg: Config, path: Path) -> None:
    c = cfg.cnn
    for name in ("patch_size", "overlap"):
        v = getattr(c, name)
        if v and (len(v) != 3 or min(v) < (1 if name == "patch_size" else 0)):
            raise ConfigError(path, "expected [] or 3 integers (x, y, z)", element=f"[cnn] {name}")
    if c.batch_size < 1 or c.threads < 0:
        raise ConfigError(path, "expected batch_size >= 1 and threads >= 0", element="[cnn] batch_size/threads")
    if c.voxel_size_tolerance <= 0:
        raise ConfigError(path, "expected a positive fraction", element="[cnn] voxel_size_tolerance")


def load_config(analysis_dir) -> Config:
    """Read and validate `ANALYSIS_DIR/syconn.toml` (or a path to a .toml file)."""
    p = Path(analysis_dir)
    if p.is_dir():
        p = p / CONFIG_NAME
    if not p.exists():
        raise ConfigError(p, "no analysis config here (create one with `syconn-ng init`)")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(p, f"not valid TOML: {err}") from err
    return config_from_dict(data, p)


def _toml_value(v: Any) -> str:
    """One value as inline TOML (lists and tables on one line, so comments stay next to keys)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def render_config(cfg: Config) -> str:
    """The config as TOML with each key's documentation as a comment above it."""
    lines = ["# syconn_ng analysis config. Relative paths are relative to this file's folder.", ""]
    for sec in fields(Config):
        obj = getattr(cfg, sec.name)
        lines.append(f"# {type(obj).__doc__.strip()}")
        lines.append(f"[{sec.name}]")
        for f in fields(obj):
            lines.append(f"# {f.metadata['doc']}")
            lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)


def write_config(cfg: Config, analysis_dir) -> Path:
    """Write `syconn.toml` into `analysis_dir` atomically; returns its path."""
    from syconn_ng.layers import atomic_write_text

    d = Path(analysis_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = d / CONFIG_NAME
    atomic_write_text(p, render_config(cfg))
    return p


def resolve_path(analysis_dir, value: str) -> str:
    """A config path made absolute: URLs unchanged, relative paths joined to the analysis dir."""
    if "://" in value or os.path.isabs(value):
        return value
    return str(Path(analysis_dir).resolve() / value)
