"""`Analysis`: one analysis directory and its loaded config; where every layer, table and marker lives.

Stages never build paths themselves: they ask the Analysis, so the directory layout
(`layers/`, `tables/`, `state/`, `scratch/`) and the oracle overrides live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from syconn_ng.config import Config, OracleConfig, load_config, resolve_path
from syconn_ng.layers import to_cloudpath


@dataclass(frozen=True)
class Analysis:
    """An analysis directory (local) and its validated `syconn.toml`; picklable, so tasks carry it."""

    root: Path
    config: Config

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
