"""Cell hulls from skeletons: rays cast through the barrier (`raycast`), hulls → the `cells` layer
(`voxelize`), organelle objects → cells (`mapping`), skeleton files → per-cell arrays (`skeletons`)."""
