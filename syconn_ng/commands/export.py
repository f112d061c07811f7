"""`syconn-ng export ANALYSIS_DIR DEST`: precomputed layers, tables, a Neuroglancer state and a README to share."""

from __future__ import annotations

import click


def _names(values) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@click.command()
@click.argument("analysis_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("dest")
@click.option("--url-prefix", metavar="URL", default=None,
              help="Where DEST will be served (sources in state.json); default: DEST itself for gs:// and s3://, "
                   "http://127.0.0.1:8000 for a local folder.")
@click.option("--layers", multiple=True, metavar="NAMES",
              help="Layers to export (repeatable or comma-separated): raw, barrier, organelles, myelin, syntype, mi, vc, sj, "
                   "cells, synapses. Default: raw, myelin, mi, vc, sj, cells, synapses (those that exist).")
@click.option("--cells", multiple=True, metavar="IDS", help="Only these cell ids (repeatable or comma-separated).")
@click.option("--types", multiple=True, metavar="TYPES", help="Only cells of these types, e.g. MSN,GP (added to --cells).")
@click.option("--min-probability", type=click.FloatRange(0, 1), default=None, help="Leave out synapses below this probability.")
@click.option("--reviewed-only", is_flag=True, help="Only synapses a reviewer accepted (review.sqlite; ignored with a note if absent).")
@click.option("--sharded/--unsharded", default=False, show_default=True,
              help="Volumes, skeletons and annotation indices as shard files (few large files; needs HTTP Range).")
@click.option("--raw", "raw", type=click.Choice(("auto", "copy", "reference", "none")), default="auto", show_default=True,
              help="Raw EM: copy it, reference its original URL, or leave it out (auto: copy a local layer, reference a remote one).")
@click.option("--compress", is_flag=True, help="gzip small files with Content-Encoding metadata (gs:// and s3:// only).")
@click.option("--overwrite", is_flag=True, help="Replace a DEST that is not empty.")
@click.option("--quiet", is_flag=True, help="Print only the summary line.")
def export(analysis_dir, dest, url_prefix, layers, cells, types, min_probability, reviewed_only, sharded, raw, compress, overwrite, quiet):
    """Export ANALYSIS_DIR to DEST (a local folder or a cloud-files path: gs://, s3://, file://, mem://).

    DEST receives cells/ (segmentation, meshes, compartment skeletons, segment properties), synapses/
    (annotations), mi/ vc/ sj/, optionally raw/, the tables cells.csv synapses.csv matrix.csv, state.json
    (Neuroglancer) and README.md with provenance and citation. Stages that have not run are reported and skipped.
    """
    from syconn_ng.errors import InputError
    from syconn_ng.export import export_analysis

    try:
        ids = [int(c) for c in _names(cells)]
    except ValueError as err:
        raise InputError("--cells", f"cell ids are integers ({err})") from err
    summary = export_analysis(analysis_dir, dest, layers=_names(layers) or None, cells=ids, types=_names(types),
                              min_probability=min_probability, reviewed_only=reviewed_only, sharded=sharded, raw=raw,
                              url_prefix=url_prefix, overwrite=overwrite, compress=compress,
                              echo=None if quiet else click.echo)
    for line in summary.missing:
        click.echo(f"missing: {line}")
    for line in summary.notes:
        click.echo(f"note: {line}")
    click.echo(f"exported {', '.join(summary.layers) or 'no layers'} and {len(summary.tables)} tables "
               f"({summary.cells} cells, {summary.synapses} synapses; {summary.files} files, {summary.bytes / 1e6:.2f} MB) "
               f"to {summary.dest} in {summary.seconds:.1f} s")
