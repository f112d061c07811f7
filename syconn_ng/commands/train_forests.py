"""`syconn-ng train compartments|spines|celltypes`: random forests from finished analyses and KNOSSOS labels."""

from __future__ import annotations

import click
import numpy as np

from syconn_ng.commands.train import train

_COMMON = [
    click.option("--analysis", "analyses", multiple=True, type=click.Path(exists=True, file_okay=False),
                 help="A finished analysis directory (repeatable)."),
    click.option("--labels", multiple=True,
                 help="Labelled KNOSSOS files (glob, quoted); one for all analyses or one per --analysis, in order."),
    click.option("--synthetic", type=click.Path(file_okay=False), default=None,
                 help="Instead of --analysis/--labels: the bundled models' recipe (synthetic seeds 11-19, true barrier and "
                      "organelles as oracles), generated into this folder or reused from it."),
    click.option("--out", type=click.Path(dir_okay=False), required=True, help="Model file to write (.skops; metadata beside it as .json)."),
    click.option("--classes", default=None, help="Comma-separated classes to train (default: all of the forest's)."),
    click.option("--trees", type=click.IntRange(min=1), default=None, help="Trees (default: the config's n_estimators)."),
    click.option("--max-depth", type=click.IntRange(min=0), default=None, help="Maximum depth, 0 = unlimited (default: the config's)."),
]


def _options(func):
    for opt in reversed(_COMMON):
        func = opt(func)
    return func


def _settings(section, trees, max_depth) -> dict:
    return {"n_estimators": trees or section.n_estimators, "max_depth": section.max_depth if max_depth is None else max_depth,
            "min_samples_leaf": section.min_samples_leaf, "cv_folds": section.cv_folds, "seed": section.seed}


def _report(forest, paths) -> None:
    cv = forest.meta["cv"]
    click.echo(f"wrote {paths[0]} ({paths[0].stat().st_size / 1e6:.2f} MB) and {paths[1]}")
    click.echo(f"training: {forest.meta['training']['samples']} samples of {forest.meta['training']['cells']} cells, "
               f"per class {forest.meta['training']['per_class']}")
    if "accuracy" in cv:
        click.echo(f"cross-validation ({cv['folds']} folds by cell): accuracy {cv['accuracy']}, balanced {cv['balanced_accuracy']}, "
                   f"F1 {cv['f1']}, majority baseline {cv['majority_baseline']}")
    else:
        click.echo(f"cross-validation: {cv['skipped']}")


def _pairs(analyses, labels, synthetic, stages):
    """(analysis, label patterns) pairs from the options, or from the synthetic recipe."""
    from syconn_ng.compartments.recipe import synthetic_training_set
    from syconn_ng.compartments.training import pair_labels

    if synthetic:
        if analyses or labels:
            raise click.UsageError("--synthetic replaces --analysis and --labels")
        return synthetic_training_set(synthetic, stages=stages)
    if not analyses or not labels:
        raise click.UsageError("give --analysis and --labels, or --synthetic WORKDIR")
    return pair_labels(analyses, labels)


def _train_nodes(task, analyses, labels, synthetic, out, classes, trees, max_depth) -> None:
    from syconn_ng.analysis import Analysis
    from syconn_ng.compartments.forest import fit_forest, save_forest
    from syconn_ng.compartments.training import check_classes, node_training_table, select_task

    pairs = _pairs(analyses, labels, synthetic, ("objects", "hulls", "mapping"))
    cfg = Analysis.open(pairs[0][0]).config.compartments
    feature_params = {"window_um": cfg.window_um, "small_window_um": cfg.small_window_um}
    X, names, y, groups, files = node_training_table(pairs, feature_params=feature_params, synonyms=cfg.synonyms)
    keep, targets, all_classes = select_task(y, task)
    chosen = _classes(classes, all_classes)
    keep[keep] &= np.isin(targets, chosen)
    targets = targets[np.isin(targets, chosen)]
    check_classes(targets, chosen, files)
    forest = fit_forest(X[keep], targets, groups[keep], names, classes=chosen, **_settings(cfg, trees, max_depth),
                        data={"analyses": [str(a) for a, _ in pairs], "label_files": len(files), "labels": [p for _, ps in pairs for p in ps]})
    forest.meta["feature_params"] = feature_params
    forest.meta["task"] = task
    _report(forest, save_forest(forest, out))


def _classes(value, all_classes):
    if value is None:
        return list(all_classes)
    chosen = [c.strip() for c in value.split(",") if c.strip()]
    bad = [c for c in chosen if c not in all_classes]
    if bad or len(chosen) < 2:
        raise click.BadParameter(f"expected two or more of {list(all_classes)}, got {chosen}", param_hint="--classes")
    return chosen



@train.command("compartments")
@_options
def train_compartments(analyses, labels, synthetic, out, classes, trees, max_depth):
    """Train the axon / dendrite / soma forest from node comments (spine labels count as dendrite)."""
    _train_nodes("compartments", analyses, labels, synthetic, out, classes, trees, max_depth)


@train.command("spines")
@_options
def train_spines(analyses, labels, synthetic, out, classes, trees, max_depth):
    """Train the shaft / spine_head / spine_neck forest on the nodes labelled dendrite, spine head or spine neck."""
    _train_nodes("spines", analyses, labels, synthetic, out, classes, trees, max_depth)


@train.command("celltypes")
@_options
def train_celltypes(analyses, labels, synthetic, out, classes, trees, max_depth):
    """Train the cell-type forest from tree comments (or CSV files `cell,type`); the classes are the labels'.

    The analyses must have run `compartments` and `synapses` (the synthetic recipe runs them with the
    bundled compartment and synapse forests)."""
    from syconn_ng.analysis import Analysis
    from syconn_ng.compartments.forest import fit_forest, save_forest
    from syconn_ng.compartments.training import cell_training_table, check_classes

    pairs = _pairs(analyses, labels, synthetic, ("objects", "hulls", "mapping", "compartments", "synapses"))
    cfg = Analysis.open(pairs[0][0]).config.celltypes
    X, names, y, groups, files = cell_training_table(pairs, synonyms=cfg.synonyms)
    found = sorted(str(v) for v in set(y))
    chosen = found if classes is None else [c.strip() for c in classes.split(",") if c.strip()]
    if len(chosen) < 2:
        raise click.BadParameter(f"expected two or more classes, got {chosen}", param_hint="--classes")
    check_classes(y, chosen, files)
    keep = np.isin(y, chosen)
    forest = fit_forest(X[keep], y[keep], groups[keep], names, classes=chosen, **_settings(cfg, trees, max_depth),
                        data={"analyses": [str(a) for a, _ in pairs], "label_files": len(files), "labels": [p for _, ps in pairs for p in ps]})
    forest.meta["task"] = "celltypes"
    _report(forest, save_forest(forest, out))
