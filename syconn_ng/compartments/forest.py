"""Random forests with their metadata: class-balanced training with cross-validation grouped by cell,
skops files (no pickle: a model file cannot run code) beside a JSON of feature names, classes,
training data and scores, and a feature check on loading that says what does not match."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from syconn_ng.errors import InputError
from syconn_ng.layers import atomic_write_bytes, atomic_write_text

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)  # what a RandomForestClassifier holds besides numpy and builtins


@dataclass
class Forest:
    """A fitted `RandomForestClassifier`, the feature names it expects (in order), its classes and metadata."""

    model: object
    features: list[str]
    classes: list[str]
    meta: dict = field(default_factory=dict)
    path: str = "<memory>"

    def check_features(self, names) -> None:
        """Raise InputError naming the features that are missing, extra or in another order."""
        names = list(names)
        if names == self.features:
            return
        missing = [f for f in self.features if f not in names]
        extra = [f for f in names if f not in self.features]
        if missing or extra:
            msg = (f"model features do not match the computed ones: missing {missing[:10]}{' ...' if len(missing) > 10 else ''}"
                   f" ({len(missing)}), unexpected {extra[:10]}{' ...' if len(extra) > 10 else ''} ({len(extra)})")
        else:
            msg = "model features are in a different order than the computed ones"
        raise InputError(self.path, msg + "; retrain the model with this version (`syconn-ng train ...`)", element="features")

    def predict_proba(self, X: np.ndarray, names) -> np.ndarray:
        """(N, C) class probabilities in the order of `classes`; `names` are X's column names (checked)."""
        self.check_features(names)
        if len(X) == 0:
            return np.zeros((0, len(self.classes)))
        proba = self.model.predict_proba(np.asarray(X, dtype=np.float32))
        order = [list(self.model.classes_).index(c) for c in self.classes]
        return proba[:, order]


def _scores(y_true, y_pred, classes) -> dict:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    f1 = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return {"accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
            "balanced_accuracy": round(float(balanced_accuracy_score(y_true, y_pred)), 4),
            "f1": {c: round(float(v), 4) for c, v in zip(classes, f1)},
            "majority_baseline": round(float(max(np.mean(np.asarray(y_true) == c) for c in classes)), 4)}


def fit_forest(X: np.ndarray, y: np.ndarray, groups: np.ndarray, features, *, classes=None, n_estimators: int,
               max_depth: int, min_samples_leaf: int, cv_folds: int, seed: int, data: dict | None = None) -> Forest:
    """Fit a class-balanced forest on X (N, F) float32, labels y (N,) str, cross-validated by `groups` (N,) (cell ids).

    classes: the class list (default: the sorted labels); a class with no example is an InputError
    raised by the caller, who knows the files. The CV scores (out-of-fold predictions with
    `GroupKFold`, never splitting a cell) go into `meta["cv"]`. max_depth 0 = unlimited.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GroupKFold

    classes = list(classes) if classes is not None else sorted(set(y))

    def make():
        return RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth or None, min_samples_leaf=min_samples_leaf,
                                      class_weight="balanced", n_jobs=1, random_state=seed)

    X = np.asarray(X, dtype=np.float32)
    n_groups = len(np.unique(groups))
    folds = min(cv_folds, n_groups)
    cv = None
    if folds >= 2:
        pred = np.empty(len(y), dtype=object)
        for train, test in GroupKFold(n_splits=folds).split(X, y, groups):
            pred[test] = make().fit(X[train], y[train]).predict(X[test])
        cv = {"folds": folds, "grouped_by": "cell", **_scores(y, pred.astype(str), classes)}
    model = make().fit(X, y)
    import sklearn

    meta = {
        "features": list(features), "classes": classes,
        "training": {"samples": int(len(y)), "cells": int(n_groups),
                     "per_class": {c: int(np.sum(y == c)) for c in classes}, **(data or {})},
        "params": {"n_estimators": n_estimators, "max_depth": max_depth, "min_samples_leaf": min_samples_leaf,
                   "class_weight": "balanced", "random_state": seed},
        "cv": cv if cv is not None else {"skipped": f"only {n_groups} cell(s): cross-validation needs 2"},
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__, "python": platform.python_version()},
    }
    return Forest(model, list(features), classes, meta)


def save_forest(forest: Forest, path) -> tuple[Path, Path]:
    """Write `<path>.skops` and its metadata `<path>.json` (atomic); returns both paths."""
    import skops
    import skops.io as sio

    path = Path(path).with_suffix(".skops")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**forest.meta, "features": forest.features, "classes": forest.classes}
    meta.setdefault("versions", {})["skops"] = skops.__version__
    atomic_write_bytes(path, sio.dumps(forest.model))
    meta["size_bytes"] = path.stat().st_size
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")
    return path, path.with_suffix(".json")


def resolve_model(value: str, default_name: str, root=None) -> Path:
    """The model file a config names: '' = the bundled `syconn_ng/models/<default_name>.skops`; relative = to `root`."""
    if not value:
        return MODELS_DIR / f"{default_name}.skops"
    p = Path(value)
    return p if p.is_absolute() or root is None else Path(root) / p


def cached_forest(path, digest: str) -> Forest:
    """`load_forest` once per worker process and model version (`digest` changes when the file does)."""
    held = _CACHE.get(str(path))
    if held is None or held[0] != digest:  # one version per file: memory stays flat
        _CACHE[str(path)] = (digest, load_forest(path))
    return _CACHE[str(path)][1]


_CACHE: dict[str, tuple[str, Forest]] = {}


def load_forest(path) -> Forest:
    """Load a `.skops` forest and its `.json` metadata; refuses types other than a forest's (InputError)."""
    import skops.io as sio

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.exists():
        raise InputError(path, "no such model file")
    if not meta_path.exists():
        raise InputError(meta_path, "no metadata beside the model (feature names and classes are needed)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        features, classes = list(meta["features"]), list(meta["classes"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise InputError(meta_path, f"not valid model metadata: {err}") from None
    data = path.read_bytes()
    try:
        untrusted = set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES)
    except Exception as err:  # skops raises several types for a damaged file
        raise InputError(path, f"not a readable skops file: {err}") from None
    if untrusted:
        raise InputError(path, f"refusing to load types other than a random forest's: {sorted(untrusted)}")
    model = sio.loads(data, trusted=list(TRUSTED_TYPES))
    from sklearn.ensemble import RandomForestClassifier

    if not isinstance(model, RandomForestClassifier):
        raise InputError(path, f"holds a {type(model).__name__}, not a RandomForestClassifier")
    if getattr(model, "n_features_in_", len(features)) != len(features):
        raise InputError(meta_path, f"lists {len(features)} features but the model takes {model.n_features_in_}", element="features")
    if sorted(map(str, model.classes_)) != sorted(classes):
        raise InputError(meta_path, f"classes {classes} differ from the model's {list(model.classes_)}", element="classes")
    return Forest(model, features, classes, meta, str(path))
