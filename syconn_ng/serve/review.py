"""Reviewers' decisions: `review.sqlite` (an append-only log plus current overrides) and the reviewed tables.

A synapse is recognised again after a pipeline re-run by its *stable identity*: the unordered pair of
cells it joins plus its position rounded to whole voxels (`synapse_key`); if no synapse of a new run has
exactly that key, the nearest synapse of the same pair within `MATCH_RADIUS_VX` takes the override.
Synapse ids are not used: a re-run may number synapses differently. Overrides store the reviewed
direction (pre, post) and status, so a flip stays correct even if the pipeline's own direction changes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from syconn_ng.connectome.matrix import filter_synapses, matrix_cells, pair_weights, wiring_matrix
from syconn_ng.errors import InputError

DECISIONS = ("accept", "reject", "flip")
STATUS = {"accept": "accepted", "reject": "rejected"}
SYNAPSE_COLUMNS = ("id", "pre_cell", "post_cell", "x", "y", "z", "area_um2")
MATCH_RADIUS_VX = 2.0  # a re-run's synapse this close (voxels) to a reviewed one of the same pair is the same synapse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL, who TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL,
    synapse_id TEXT, decision TEXT NOT NULL, previous TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS synapse_overrides (
    key TEXT PRIMARY KEY, cell_a TEXT NOT NULL, cell_b TEXT NOT NULL, x REAL, y REAL, z REAL,
    pre_cell TEXT NOT NULL, post_cell TEXT NOT NULL, status TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cell_overrides (cell TEXT PRIMARY KEY, type TEXT NOT NULL, seq INTEGER NOT NULL);
"""


def synapse_key(pre_cell: int, post_cell: int, x: float, y: float, z: float) -> str:
    """Stable identity of a synapse: 'lo-hi@x,y,z' (cell ids sorted, position in whole voxels)."""
    lo, hi = sorted((int(pre_cell), int(post_cell)))
    return f"{lo}-{hi}@{int(round(x))},{int(round(y))},{int(round(z))}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _read_table(path: Path, columns) -> pd.DataFrame:
    """A pipeline table with at least `columns`; InputError naming the file otherwise."""
    try:
        table = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as err:
        raise InputError(path, f"not a readable CSV table ({err})")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    return table


class ReviewStore:
    """review.sqlite: WAL journal, one IMMEDIATE transaction per decision, so concurrent writers
    (threads or processes) serialise and none is lost."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            self.db.close()
            raise InputError(self.path, f"not a review database ({err})")

    def close(self):
        with self._lock:
            self.db.close()

    # one connection shared by the server's threads (tornado loop, Neuroglancer actions): every use under the lock
    def synapse_overrides(self) -> pd.DataFrame:
        with self._lock:
            return pd.read_sql_query("SELECT * FROM synapse_overrides", self.db)

    def cell_overrides(self) -> dict[int, str]:
        with self._lock:
            return {int(c): t for c, t in self.db.execute("SELECT cell, type FROM cell_overrides").fetchall()}

    def decisions(self, limit: int | None = None) -> list[dict]:
        q = "SELECT * FROM decisions ORDER BY seq DESC" + (f" LIMIT {int(limit)}" if limit else "")
        with self._lock:
            cur = self.db.execute(q)
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, row)) for row in cur.fetchall()]
        for row in rows:  # a synapse's previous / new value is a small JSON object
            if row["kind"] == "synapse":
                row["previous"], row["value"] = json.loads(row["previous"]), json.loads(row["value"])
        return rows

    def count(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]

    def record_synapse(self, *, key, cell_a, cell_b, xyz, synapse_id, decision, who, previous: dict, value: dict) -> int:
        """Append one synapse decision and set its override, atomically; returns the decision's seq."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                seq = self.db.execute(
                    "INSERT INTO decisions (at, who, kind, target, synapse_id, decision, previous, value) VALUES (?,?,?,?,?,?,?,?)",
                    (_now(), who, "synapse", key, str(synapse_id), decision, json.dumps(previous), json.dumps(value))).lastrowid
                self.db.execute(
                    "INSERT INTO synapse_overrides VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
                    "pre_cell=excluded.pre_cell, post_cell=excluded.post_cell, status=excluded.status, seq=excluded.seq",
                    (key, str(cell_a), str(cell_b), *map(float, xyz), value["pre_cell"], value["post_cell"], value["status"], seq))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return seq

    def record_cell(self, *, cell, cell_type, who, previous: str) -> int:
        """Append one cell-type decision and set the cell's override, atomically; returns the decision's seq."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                seq = self.db.execute(
                    "INSERT INTO decisions (at, who, kind, target, synapse_id, decision, previous, value) VALUES (?,?,?,?,?,?,?,?)",
                    (_now(), who, "cell", str(cell), None, "type", previous, cell_type)).lastrowid
                self.db.execute("INSERT INTO cell_overrides VALUES (?,?,?) ON CONFLICT(cell) DO UPDATE SET type=excluded.type, seq=excluded.seq",
                                (str(cell), cell_type, seq))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return seq


def match_overrides(synapses: pd.DataFrame, overrides: pd.DataFrame, *, radius_vx: float = MATCH_RADIUS_VX) -> dict[int, int]:
    """{row of `synapses` → row of `overrides`}: exact stable-key matches first, then the nearest synapse of the
    same cell pair within `radius_vx` voxels (a re-run that moved a synapse's centre slightly)."""
    keys = pd.Series(np.arange(len(synapses)), index=synapses["key"].to_numpy())
    out: dict[int, int] = {}
    taken: set[int] = set()
    rest = []
    for j, key in enumerate(overrides["key"]):
        i = keys.get(key)
        if i is not None and not isinstance(i, pd.Series):
            out[int(i)] = j
            taken.add(int(i))
        else:
            rest.append(j)
    if rest:
        a = np.minimum(synapses["pre_cell"].to_numpy(np.uint64), synapses["post_cell"].to_numpy(np.uint64))
        b = np.maximum(synapses["pre_cell"].to_numpy(np.uint64), synapses["post_cell"].to_numpy(np.uint64))
        xyz = synapses[["x", "y", "z"]].to_numpy(float)
        for j in rest:
            o = overrides.iloc[j]
            lo, hi = sorted((np.uint64(int(o.cell_a)), np.uint64(int(o.cell_b))))
            cand = np.flatnonzero((a == lo) & (b == hi))
            cand = np.array([c for c in cand if c not in taken], dtype=np.int64)
            if not len(cand):
                continue
            d = np.linalg.norm(xyz[cand] - np.array([o.x, o.y, o.z], float), axis=1)
            if d.min() <= radius_vx:
                i = int(cand[np.argmin(d)])
                out[i] = j
                taken.add(i)
    return out


class ReviewedAnalysis:
    """The analysis tables with every review applied, kept in memory; thread-safe.

    `synapses`: the pipeline's synapse table plus columns `key`, `status` (pending / accepted / rejected)
    and the reviewed direction in `pre_cell` / `post_cell` (compartments swapped with it). `version`
    increases with every decision. The matrix (with the `[connectome]` filters, through the
    `syconn_ng.connectome.matrix` functions) is kept as per-pair sums that each decision updates.
    """

    def __init__(self, analysis, *, store_path=None):
        self.analysis = analysis
        self.lock = threading.RLock()
        for name in ("synapses.csv", "cells.csv"):  # before the store is created: nothing written for a bad folder
            if not (analysis.tables_dir / name).is_file():
                raise InputError(analysis.tables_dir / name, "missing: run the pipeline up to 'connectome' before serving it")
        store_path = Path(store_path or analysis.root / "review.sqlite")
        new_store = not store_path.exists()
        self.store = ReviewStore(store_path)
        self.version = 0
        try:
            self._load()
        except BaseException:
            self.store.close()
            if new_store:  # unreadable tables: leave the folder as it was
                for f in (store_path, store_path.with_name(store_path.name + "-wal"), store_path.with_name(store_path.name + "-shm")):
                    f.unlink(missing_ok=True)
            raise

    def reload(self):
        """Read the tables again (a re-analysis job rewrote them); decisions are re-applied by their stable keys."""
        with self.lock:
            self._load()
            self.version += 1

    def _load(self):
        analysis = self.analysis
        tables = analysis.tables_dir
        syn = _read_table(tables / "synapses.csv", SYNAPSE_COLUMNS)
        self.cells = _read_table(tables / "cells.csv", ("id", "type"))
        for col in ("id", "pre_cell", "post_cell"):
            if col in syn.columns:
                syn[col] = syn[col].astype(np.uint64)
        self.cells["id"] = self.cells["id"].astype(np.uint64)
        self.pipeline_types = dict(zip(self.cells["id"].tolist(), self.cells["type"].fillna("").astype(str)))
        syn["key"] = [synapse_key(*r) for r in zip(syn["pre_cell"].tolist(), syn["post_cell"].tolist(), syn["x"], syn["y"], syn["z"])]
        syn["status"] = "pending"
        self.synapses = syn
        self.row_of_id = pd.Series(np.arange(len(syn)), index=syn["id"].to_numpy(np.uint64))
        self._apply_overrides()
        cfg = analysis.config.connectome
        self.filters = {"min_probability": cfg.min_probability, "axo_dendritic_only": cfg.axo_dendritic_only,
                        "synapse_type": cfg.synapse_type}
        self.type_order = tuple(cfg.type_order)
        self._matrix = None
        self._pairs = self._pair_sums(filter_synapses(self.reviewed_synapses(), **self.filters))
        self._order()

    # ---------------------------------------------------------------- loading
    def _apply_overrides(self):
        ov = self.store.synapse_overrides()
        if len(ov):
            for i, j in match_overrides(self.synapses, ov).items():
                self._set_row(i, int(ov.pre_cell.iloc[j]), int(ov.post_cell.iloc[j]), ov.status.iloc[j])
        self.cell_types = dict(self.pipeline_types)
        self.cell_types.update(self.store.cell_overrides())

    def _set_row(self, i: int, pre: int, post: int, status: str):
        s = self.synapses
        if int(s.at[i, "pre_cell"]) != pre:  # reviewed direction differs: swap the two sides
            s.at[i, "pre_cell"], s.at[i, "post_cell"] = np.uint64(pre), np.uint64(post)
            if "pre_compartment" in s.columns:
                s.at[i, "pre_compartment"], s.at[i, "post_compartment"] = s.at[i, "post_compartment"], s.at[i, "pre_compartment"]
        s.at[i, "status"] = status

    def _order(self):
        """The matrix axes: every cell with a synapse passing the `[connectome]` filters, rejected ones included
        (a rejection changes a value, not the axes), sorted by (reviewed) type then id."""
        base = filter_synapses(self.synapses, **self.filters)
        self.order, _ = matrix_cells(base, self._cell_table(), self.type_order)
        self.index = {int(c): k for k, c in enumerate(self.order.tolist())}

    @staticmethod
    def _pair_sums(kept: pd.DataFrame) -> dict:
        """{(pre, post): [count, summed area_um2]} of a filtered synapse table (`pair_weights`)."""
        area = pair_weights(kept)
        count = pair_weights(kept.assign(one=1.0), value="one")
        return {(int(a), int(b)): [int(n), float(w)] for (a, b), n, w in zip(area.index, count.to_numpy(), area.to_numpy())}

    def _counted(self, i: int) -> bool:
        """Row i is in the matrix: not rejected and passing the filters (a flip swaps compartments, so check again)."""
        s = self.synapses
        return s.at[i, "status"] != "rejected" and len(filter_synapses(s.iloc[[i]], **self.filters)) == 1

    def _add(self, i: int, sign: int):
        s = self.synapses
        key = (int(s.at[i, "pre_cell"]), int(s.at[i, "post_cell"]))
        n, w = self._pairs.get(key, (0, 0.0))
        n, w = n + sign, w + sign * float(s.at[i, "area_um2"])
        if n > 0:
            self._pairs[key] = [n, w]
        else:
            self._pairs.pop(key, None)

    def _cell_table(self) -> pd.DataFrame:
        return pd.DataFrame({"id": np.array(list(self.cell_types), dtype=np.uint64), "type": list(self.cell_types.values())})

    # ---------------------------------------------------------------- reading
    def reviewed_synapses(self) -> pd.DataFrame:
        """The reviewed synapse table: rejected synapses dropped, flipped ones in their reviewed direction."""
        with self.lock:
            s = self.synapses[self.synapses["status"] != "rejected"]
            return s.reset_index(drop=True)

    def reviewed_cells(self) -> pd.DataFrame:
        with self.lock:
            cells = self.cells.copy()
            cells["pipeline_type"] = cells["type"]
            cells["type"] = [self.cell_types[i] for i in cells["id"].tolist()]
            return cells

    def matrix(self) -> dict:
        """{"version", "cells": [{"id", "type"}], "entries": [[post_index, pre_index, count, area_um2]], "max_area_um2"}
        over the matrix axes (cached until the next decision)."""
        with self.lock:
            if self._matrix is None or self._matrix["version"] != self.version:
                pairs = np.array(list(self._pairs), dtype=np.uint64).reshape(-1, 2)
                sums = np.array(list(self._pairs.values()), dtype=np.float64).reshape(-1, 2)
                pos = pd.Series(np.arange(len(self.order)), index=self.order)
                entries = [list(e) for e in zip(pos.reindex(pairs[:, 1]).tolist(), pos.reindex(pairs[:, 0]).tolist(),
                                                sums[:, 0].astype(np.int64).tolist(), sums[:, 1].round(6).tolist())]
                self._matrix = {"version": self.version, "value": "area_um2",
                                "cells": [{"id": str(i), "type": self.cell_types.get(int(i), "")} for i in self.order.tolist()],
                                "entries": entries, "max_area_um2": max((e[3] for e in entries), default=0.0)}
            return self._matrix

    def pair_entry(self, pre: int, post: int) -> list:
        """[post_index, pre_index, count, area_um2] of one pair now (count 0 when none is left)."""
        n, w = self._pairs.get((pre, post), (0, 0.0))
        return [self.index[post], self.index[pre], n, round(w, 6) if n else 0.0]

    def dense_matrices(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(area, count) DataFrames of the reviewed synapses over the matrix axes (`wiring_matrix`)."""
        kept = filter_synapses(self.reviewed_synapses(), **self.filters)
        return wiring_matrix(kept, self.order), wiring_matrix(kept, self.order, value="count")

    def synapse_row(self, synapse_id: int) -> int:
        i = self.row_of_id.get(np.uint64(synapse_id))
        if i is None:
            raise KeyError(synapse_id)
        return int(i)

    # ---------------------------------------------------------------- deciding
    def decide_synapse(self, synapse_id: int, decision: str, who: str) -> dict:
        """Apply and store one decision (accept | reject | flip); returns {"seq", "row", "pairs", "reordered"}: pairs are
        the (pre, post) cell pairs whose matrix entries may have changed; reordered, whether the matrix axes changed."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        with self.lock:
            i = self.synapse_row(synapse_id)
            s = self.synapses
            pre, post, status = int(s.at[i, "pre_cell"]), int(s.at[i, "post_cell"]), str(s.at[i, "status"])
            previous = {"pre_cell": str(pre), "post_cell": str(post), "status": status}
            new_pre, new_post = (post, pre) if decision == "flip" else (pre, post)
            new_status = STATUS.get(decision, "accepted" if status == "pending" else status)
            value = {"pre_cell": str(new_pre), "post_cell": str(new_post), "status": new_status}
            lo, hi = sorted((pre, post))
            seq = self.store.record_synapse(key=s.at[i, "key"], cell_a=lo, cell_b=hi,
                                            xyz=(s.at[i, "x"], s.at[i, "y"], s.at[i, "z"]), synapse_id=synapse_id,
                                            decision=decision, who=who, previous=previous, value=value)
            if self._counted(i):
                self._add(i, -1)
            self._set_row(i, new_pre, new_post, new_status)
            reordered = False
            if self._counted(i):
                self._add(i, +1)
                if new_pre not in self.index or new_post not in self.index:  # a flip made it pass the filters
                    self._order()
                    reordered = True
            self.version += 1
            return {"seq": seq, "row": i, "pairs": sorted({(pre, post), (new_pre, new_post)}), "reordered": reordered}

    def decide_cell(self, cell_id: int, cell_type: str, who: str) -> dict:
        """Store a cell-type correction; the matrix axes are re-sorted by the new types."""
        with self.lock:
            if cell_id not in self.cell_types:
                raise KeyError(cell_id)
            previous = self.cell_types[cell_id]
            seq = self.store.record_cell(cell=cell_id, cell_type=cell_type, who=who, previous=previous)
            self.cell_types[cell_id] = cell_type
            self._order()
            self.version += 1
            return {"seq": seq, "previous": previous}


def export_reviewed(reviewed: ReviewedAnalysis, out_dir) -> list[Path]:
    """Write the reviewed tables: reviewed_synapses.csv, reviewed_cells.csv, reviewed_matrix.csv,
    reviewed_matrix_counts.csv (matrix layout as tables/matrix.csv); atomic writes; returns the paths."""
    from syconn_ng.connectome.matrix import matrix_to_csv
    from syconn_ng.layers import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    area, count = reviewed.dense_matrices()
    files = {"reviewed_synapses.csv": reviewed.reviewed_synapses().to_csv(index=False),
             "reviewed_cells.csv": reviewed.reviewed_cells().to_csv(index=False),
             "reviewed_matrix.csv": matrix_to_csv(area), "reviewed_matrix_counts.csv": matrix_to_csv(count, None)}
    for name, text in files.items():
        atomic_write_text(out / name, text)
    return [out / n for n in files]
