"""`syconn-ng train ...`: train the pipeline's models; `train cnn` trains the barrier or organelle U-Net."""

from __future__ import annotations

import click


def _ints(value: str | None, n: int = 3):
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected {n} integers X,Y,Z, got {value!r}") from None
    if len(parts) != n or min(parts) <= 0:
        raise click.BadParameter(f"expected {n} positive integers X,Y,Z, got {value!r}")
    return parts


@click.group()
def train():
    """Train the pipeline's models (CNNs and random forests)."""


@train.command("cnn")
@click.option("--task", type=click.Choice(["barrier", "organelles", "myelin_syntype"]), required=True, help="Which model to train.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Model file to write (.pt; metadata also as .json).")
@click.option("--raw", default=None, help="Real data: raw stack (folder of TIFF/PNG slices, TIFF, FILE.h5:DATASET or precomputed layer). "
                                         "Default: the synthetic recipe of the bundled weights.")
@click.option("--labels", multiple=True, help="Label stack per output channel (barrier: membranes; organelles: sj, vc, mi; myelin_syntype: myelin, symmetric junctions), foreground > 0.")
@click.option("--mask", default=None, help="Optional stack: learn only where it is > 0.")
@click.option("--invert-labels", is_flag=True, help="Foreground is label value 0 (e.g. ISBI 2012 membranes).")
@click.option("--val-sections", default=None, metavar="Z0:Z1", help="Real data: hold out these sections for validation (default: the last fifth).")
@click.option("--voxel-size", default=None, metavar="X,Y,Z", help="Voxel size in nm the model is trained at (real data; synthetic: 10,10,20).")
@click.option("--workdir", type=click.Path(file_okay=False), default="synth_training", show_default=True,
              help="Synthetic recipe: where the training tissues are generated (reused when present).")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Training iterations (default: the recipe's).")
@click.option("--patch-size", default=None, metavar="X,Y,Z", help="Training patch in voxels.")
@click.option("--width", type=click.IntRange(min=1), default=None, help="U-Net channels at full resolution.")
@click.option("--depth", type=click.IntRange(min=1), default=None, help="U-Net resolution levels.")
@click.option("--seed", type=int, default=None, help="Random seed (same seed and threads on a CPU = same weights).")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="torch CPU threads (0 = torch's default).")
@click.option("--max-minutes", type=float, default=None, help="Stop training after this many minutes (the learning rate then anneals within them).")
@click.option("--device", type=click.Choice(("cpu", "cuda", "auto")), default=None,
              help="Train on the CPU (default; deterministic with --seed) or a CUDA GPU (bf16 mixed precision, much faster).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Patches per step (default 2; larger on a GPU).")
@click.option("--loader-threads", type=click.IntRange(min=0), default=None,
              help="Threads preparing batches ahead (0 = in line, the default; ~8 keep a GPU busy).")
@click.option("--curve", type=click.Path(dir_okay=False), default=None, help="Learning-curve PNG (default: beside --out).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cnn(task, out, raw, labels, mask, invert_labels, val_sections, voxel_size, workdir, iterations, patch_size, width, depth, seed, threads,
              max_minutes, device, batch_size, loader_threads, curve, quiet):
    """Train the barrier, organelle or myelin / synapse-type CNN; without --raw, reproduce the bundled weights from synthetic tissue."""
    import json
    from dataclasses import replace
    from pathlib import Path

    from syconn_ng.cnn.train import RECIPES, load_labelled, train_model, train_on_synthetic

    recipe, settings = RECIPES[task]
    overrides = {"iterations": iterations, "patch_size": _ints(patch_size), "width": width, "depth": depth, "seed": seed,
                 "threads": threads, "max_minutes": max_minutes, "device": device, "batch_size": batch_size,
                 "loader_threads": loader_threads}
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    curve = curve or str(Path(out).with_suffix(".png"))
    if raw is None:
        if labels or mask or val_sections or voxel_size or invert_labels:
            raise click.UsageError("--labels, --mask, --invert-labels, --val-sections and --voxel-size need --raw")
        metrics = train_on_synthetic(task, out, workdir=workdir, recipe=recipe, settings=settings, progress=not quiet, curve_png=curve)
        click.echo(json.dumps(metrics, indent=1, default=float))
    else:
        if not labels:
            raise click.UsageError("--raw needs --labels (one per output channel)")
        vol = load_labelled(raw, list(labels), mask=mask, invert=invert_labels)
        z = vol.raw.shape[2]
        if val_sections:
            try:
                z0, z1 = (int(v) for v in val_sections.split(":"))
            except ValueError:
                raise click.BadParameter(f"expected Z0:Z1, got {val_sections!r}", param_hint="--val-sections") from None
        else:
            z0, z1 = z - max(1, z // 5), z
        if not 0 <= z0 < z1 <= z:
            raise click.BadParameter(f"sections {z0}:{z1} are not inside 0:{z}", param_hint="--val-sections")
        parts = [vol.sections(0, z0), vol.sections(z1, z)]
        train_vols = [p for p in parts if p.raw.shape[2] > 0]
        if voxel_size:
            settings = replace(settings, voxel_size_nm=[float(v) for v in voxel_size.split(",")])
        train_model(task, train_vols, [vol.sections(z0, z1)], settings, out=out, progress=not quiet, curve_png=curve,
                    data_description=f"{raw} (validation sections {z0}:{z1})")
    click.echo(f"wrote {out} and {Path(out).with_suffix('.json')}; learning curve {curve}")


from syconn_ng.commands import train_forests as _forest_commands  # noqa: E402,F401  (registers train compartments / spines / celltypes)


@train.command("synapses")
@click.option("--analysis", "analyses", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Analysis directory whose 'synapses' stage ran (its tables/synapse_candidates.csv); repeat per tissue.")
@click.option("--truth", "truths", multiple=True, type=click.Path(exists=True),
              help="Labelled synapses per analysis, in the same order: a CSV (pre_cell, post_cell, x, y, z, type) or a synthetic tissue folder.")
@click.option("--synthetic", type=click.Path(file_okay=False), default=None,
              help="Instead of --analysis/--truth: make the bundled forests' training data here (synthetic seeds 11-19, reused when present).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Synapse forest to write (.skops + .json); the type forest goes beside it as <name>_types. Default: the bundled files.")
@click.option("--trees", type=click.IntRange(min=1), default=100, show_default=True, help="Trees per forest.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def train_synapses(analyses, truths, synthetic, out, trees, seed):
    """Train the synapse forest (and the synapse-type forest) from labelled candidates.

    `syconn-ng train synapses --synthetic DIR` reproduces the bundled forests.
    """
    import json
    from pathlib import Path

    from syconn_ng.compartments.forest import MODELS_DIR, save_forest
    from syconn_ng.synapses.training import prepare_synthetic, train_forests, training_table

    if synthetic:
        if analyses or truths:
            raise click.UsageError("--synthetic replaces --analysis and --truth")
        analyses, truths = prepare_synthetic(synthetic, progress=click.echo)
    elif not analyses or not truths:
        raise click.UsageError("give --analysis and --truth (one per analysis), or --synthetic DIR")
    table = training_table(list(analyses), list(truths))
    data = {"analyses": [Path(a).name for a in analyses], "truth": sorted({Path(t).name for t in truths}),
            "recipe": "syconn-ng train synapses --synthetic DIR" if synthetic else "syconn-ng train synapses --analysis ... --truth ..."}
    syn, types = train_forests(table, n_estimators=trees, seed=seed, data=data)
    path = Path(out) if out else MODELS_DIR / "synapses.skops"
    written = save_forest(syn, path)
    if types is not None:
        written += save_forest(types, path.with_name("synapse_types" if out is None else path.stem + "_types"))
    click.echo(json.dumps({"synapses": syn.meta["cv"], "types": types.meta["cv"] if types else None}, indent=1))
    click.echo("wrote " + ", ".join(str(p) for p in written))
