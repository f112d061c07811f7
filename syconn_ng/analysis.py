"""`Analysis`: one analysis directory and its loaded config; where every layer, table and marker lives.

Stages never build paths themselves: they ask the Analysis, so the directory layout
(`layers/`, `tables/`, `state/`, `scratch/`) and the oracle overrides live in one place.
It is also the notebook API: ``a = syconn_ng.Analysis("ana"); a.run(); a.cells; a.synapses;
a.matrix; a.skeleton(cell_id); a.evaluate("tissue")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from syconn_ng.errors import SyconnError

from syconn_ng.config import Config, OracleConfig, load_config, resolve_path
from syconn_ng.layers import to_cloudpath


@dataclass(frozen=True)
class Analysis:
    """An analysis directory (local) and its validated `syconn.toml`; picklable, so tasks carry it."""

    root: Path
    config: Config | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).resolve())
        if self.config is None:  # Analysis(path): load its syconn.toml
            object.__setattr__(self, "config", load_config(self.root))

    @classmethod
    def open(cls, path) -> "Analysis":
        """Load `path/syconn.toml`; raises ConfigError if it is missing or invalid."""
        root = Path(path).resolve()
        return cls(root, load_config(root))

    def layer_path(self, name: str) -> str:
        """CloudVolume path of the pipeline's own layer `layers/<name>`."""
        return to_cloudpath(self.root / "layers" / name)

    def input_layer(self, name: str) -> str:
        """The layer a stage reads as `name`: the `[oracle]` override if set, else `layers/<name>`."""
        override = getattr(self.config.oracle, name, "") if name in OracleConfig.__dataclass_fields__ else ""
        if override:
            return to_cloudpath(resolve_path(self.root, override))
        return self.layer_path(name)

    def open_input(self, path: str):
        """Open a layer a stage reads, with missing chunks read as zeros if `[chunking] missing_chunks` says so."""
        from syconn_ng.layers import open_layer

        return open_layer(path, fill_missing=self.config.chunking.missing_chunks == "zeros")

    @property
    def raw_layer(self) -> str:
        return to_cloudpath(resolve_path(self.root, self.config.dataset.raw))

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def scratch_dir(self, stage: str) -> Path:
        """Intermediate files of a stage (local labels, stitching data); safe to delete after a run."""
        return self.root / "scratch" / stage

    @property
    def voxel_size_nm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.config.dataset.voxel_size_nm)

    # ------------------------------------------------------------ the notebook API

    def run(self, stages=None, *, start: str | None = None, until: str | None = None, force=(), executor=None,
            workers: int | None = None, oracle: str | None = None, device: str | None = None, progress: bool = True):
        """Run the pipeline (or `stages`, a list of names) like `syconn-ng run`; returns the RunSummary
        (`.stages`: ran / skipped / seconds per stage; `.counts()`). `oracle` / `device` are saved into syconn.toml.

        executor: 'local' | 'dask' | 'slurm' | 'sge', a scheduler address ('tcp://...'), or an executor object.
        """
        from syconn_ng.engine import make_executor
        from syconn_ng.pipeline import apply_overrides, run_pipeline, select_stages

        names = select_stages(only=list(stages or ()), start=start, until=until)
        analysis, _ = apply_overrides(self, oracle=oracle, device=device)
        object.__setattr__(self, "config", analysis.config)
        own = executor is None or isinstance(executor, str)
        if own:
            address = executor if isinstance(executor, str) and "://" in executor else None
            executor = make_executor(self.config, kind="dask" if address else executor, workers=workers, scheduler=address)
        try:
            summary = run_pipeline(self, names, force=list(force), executor=executor, progress=progress)
        finally:
            if own:
                executor.close()
        return summary

    def _table(self, name: str, stage: str, **kw):
        import pandas as pd

        path = self.tables_dir / name
        if not path.is_file():
            raise SyconnError(f"{path} does not exist yet: run the '{stage}' stage "
                              f"(syconn-ng run {self.root} --until {stage}, or Analysis.run(until={stage!r}))")
        return pd.read_csv(path, **kw)

    @property
    def cells(self):
        """tables/cells.csv (the `celltypes` stage): one row per traced cell, indexed by id."""
        return self._table("cells.csv", "celltypes").set_index("id")

    @property
    def synapses(self):
        """tables/synapses.csv (the `synapses` stage): one row per synapse, indexed by id."""
        return self._table("synapses.csv", "synapses").set_index("id")

    @property
    def matrix(self):
        """tables/matrix.csv (the `connectome` stage): summed synaptic area µm², rows = post cell, columns = pre cell."""
        m = self._table("matrix.csv", "connectome", index_col=0)
        m.columns = m.columns.astype("int64")
        return m

    def skeleton(self, cell_id: int):
        """The traced nodes of one cell (node, x, y, z voxels, radius_nm) with their compartment columns if present."""
        nodes = self._table("nodes.csv", "hulls")
        nodes = nodes[nodes.cell == int(cell_id)]
        if nodes.empty:
            raise SyconnError(f"cell {cell_id} is not among the traced cells of {self.root}")
        path = self.tables_dir / "compartments.csv"
        if path.is_file():
            import pandas as pd

            nodes = nodes.merge(pd.read_csv(path), on=["cell", "node"], how="left")
        return nodes.set_index("node")

    def evaluate(self, truth) -> dict:
        """Scores against a synthetic tissue folder holding `truth/` (the table of `syconn-ng evaluate`)."""
        from syconn_ng.evaluation import evaluate_analysis

        return evaluate_analysis(self.root, truth)
