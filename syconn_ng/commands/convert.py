"""`syconn-ng convert IN OUT`: convert between `.nml`, `.k.zip` and `.swc`, chosen by extension."""

from __future__ import annotations

import click


class VoxelSize(click.ParamType):
    """`X,Y,Z` in nm per voxel, three positive numbers."""

    name = "X,Y,Z"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            values = tuple(float(v) for v in str(value).split(","))
        except ValueError:
            values = ()
        if len(values) != 3 or min(values) <= 0:
            self.fail(f"expected three positive numbers X,Y,Z in nm, got {value!r}", param, ctx)
        return values


VOXEL_SIZE_HELP = ("The dataset's voxel size in nm. Needed for SWC; a .nml/.k.zip whose <scale> "
                   "differs is rescaled to it, as KNOSSOS does.")


@click.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--voxel-size", type=VoxelSize(), default=None, help=VOXEL_SIZE_HELP)
def convert(source, target, voxel_size):
    """Convert the annotation SOURCE into TARGET (.nml, .k.zip or .swc, by extension).

    .nml and .k.zip are written as KNOSSOS writes them (1-based coordinates); SWC in nm.
    """
    from syconn_ng.io.annotation import annotation_format, read_annotation, write_annotation

    annotation_format(target)  # an unknown target type fails before the source is read
    skel = read_annotation(source, voxel_size_nm=voxel_size)
    write_annotation(skel, target, voxel_size_nm=voxel_size)
    click.echo(f"{target}: {len(skel.trees)} trees, {skel.num_nodes()} nodes, {skel.num_edges()} edges")
