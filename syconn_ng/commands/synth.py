"""`syconn-ng synth OUT`: generate a synthetic EM tissue with complete ground truth."""

from __future__ import annotations

import click


def _triple(kind):
    """A click callback parsing ``X,Y,Z`` into a tuple of three positive numbers of `kind`."""

    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            parts = tuple(kind(v) for v in str(value).split(","))
        except ValueError:
            raise click.BadParameter(f"expected X,Y,Z ({kind.__name__}s), got {value!r}") from None
        if len(parts) != 3 or min(parts) <= 0:
            raise click.BadParameter(f"expected three positive numbers X,Y,Z, got {value!r}")
        return parts

    return parse


def _fractions(ctx, param, values):
    """Parse repeated ``TYPE=SHARE`` options into {type: share}."""
    out = {}
    for v in values:
        t, sep, share = v.partition("=")
        try:
            out[t.strip()] = float(share)
        except ValueError:
            raise click.BadParameter(f"expected TYPE=SHARE (e.g. INT=0.5), got {v!r}") from None
        if not sep:
            raise click.BadParameter(f"expected TYPE=SHARE (e.g. INT=0.5), got {v!r}")
    return out


def summary_lines(stats: dict) -> list[str]:
    """What was made, in a few lines (cells by type, synapses, contacts, statistics)."""
    by_type = ", ".join(f"{k} {v}" for k, v in stats["cells_by_type"].items())
    syn = stats["synapses_by_type"]
    ref = stats["real_data_reference"]
    return [
        f"volume {' x '.join(map(str, stats['shape_vx']))} voxels of {' x '.join(f'{v:g}' for v in stats['voxel_size_nm'])} nm "
        f"({stats['volume_um3']:.1f} µm³), seed {stats['seed']}",
        f"cells: {stats['cells']} ({by_type}); somata in the volume: {stats['somata_in_volume']}",
        f"synapses: {stats['synapses']} ({syn['asymmetric']} asymmetric, {syn['symmetric']} symmetric), "
        f"{stats['synapses_per_um3']:.2f} per µm³, median cleft {stats['synapse_area_um2_median']:.3f} µm²",
        f"close contacts (not synapses): {stats['close_contacts']}; mitochondria: {stats['mitochondria']}; "
        f"vesicle clouds: {stats['vesicle_clouds']}; traced nodes: {stats['skeleton_nodes']}",
        f"membranes {100 * stats['membrane_fraction']:.1f} % (real VNC {100 * ref['membrane_fraction']:.1f} %), "
        f"mitochondria {100 * stats['mito_fraction']:.1f} % (real {100 * ref['mito_fraction']:.1f} %), "
        f"extracellular {100 * stats['extracellular_fraction']:.1f} %",
    ] + _myelin_lines(stats)


def _myelin_lines(stats: dict) -> list[str]:
    my = stats.get("myelin")
    if my is None:
        return []
    by_type = ", ".join(f"{k} {v}" for k, v in my["myelinated_cells_by_type"].items() if v)
    return [f"myelin: {100 * my['myelin_fraction']:.1f} % of the volume, myelinated axons: {by_type or 'none'}; "
            f"traced nodes in internodes: {my['myelinated_nodes']}"]


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--shape", default="256,256,128", show_default=True, callback=_triple(int), help="Volume size in voxels X,Y,Z.")
@click.option("--voxel-size", default="10,10,20", show_default=True, callback=_triple(float), help="Voxel size in nm X,Y,Z.")
@click.option("--cells", "n_cells", default=0, show_default=True, type=click.IntRange(min=0),
              help="Cells with neurites in the volume; 0 = as many as dense neuropil holds.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Random seed: the same seed gives the same tissue.")
@click.option("--noise", default=1.0, show_default=True, type=click.FloatRange(min=0.0), help="Image noise level (0 = clean).")
@click.option("--synapse-density", default=1.0, show_default=True, type=click.FloatRange(min=0.0), help="Synapses per µm³.")
@click.option("--artefacts/--no-artefacts", default=True, show_default=True, help="Occasional missing and shifted sections.")
@click.option("--myelin", is_flag=True, default=False,
              help="Myelinate stretches of EA and some INT axons (truth/myelin layer, nodes.csv 'myelinated'); "
                   "off by default: the bundled models were trained on tissue without myelin.")
@click.option("--myelin-fraction", multiple=True, callback=_fractions, metavar="TYPE=SHARE",
              help="With --myelin: share of a cell type's axons that are myelinated (default EA=0.8, INT=0.3); repeatable.")
@click.option("--chunk-size", default="128,128,64", show_default=True, callback=_triple(int), help="Chunk size of the layers written.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Processes generating chunks.")
def synth(out, shape, voxel_size, n_cells, seed, noise, synapse_density, artefacts, myelin, myelin_fraction, chunk_size,
          workers):
    """Generate a synthetic EM tissue with complete ground truth into OUT.

    Writes raw/ (EM), truth/ (cells, barrier, mi, vc, sj, organelles layers; cells, synapses,
    nodes, organelles, contacts tables; stats.json), skeletons/ and skeletons_labelled/
    (KNOSSOS .k.zip, one per cell) and syconn.toml for `syconn-ng run OUT`. With --myelin also
    truth/myelin and a 'myelinated' column in truth/nodes.csv.
    """
    from syconn_ng.synth.generate import generate_tissue
    from syconn_ng.synth.tissue import myelin_fractions

    if myelin_fraction and not myelin:
        raise click.BadParameter("only with --myelin", param_hint="--myelin-fraction")
    try:
        myelin_fractions(myelin_fraction)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--myelin-fraction") from None
    stats = generate_tissue(out, shape=shape, voxel_size_nm=voxel_size, n_cells=n_cells, seed=seed, noise=noise,
                            synapses_per_um3=synapse_density, artefacts=artefacts, myelin=myelin,
                            myelin_fraction=myelin_fraction or None, chunk_size=chunk_size, workers=workers,
                            progress=True)
    for line in summary_lines(stats):
        click.echo(line)
