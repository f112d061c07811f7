"""`Box`: the half-open voxel box every chunked task works on."""

from __future__ import annotations

import numpy as np
import pytest

from syconn_ng.box import Box


def test_box_is_half_open_with_shape_and_size():
    b = Box((1, 2, 3), (4, 6, 8))
    assert b.shape == (3, 4, 5) and b.size == 60 and not b.empty()
    assert Box.from_shape((3, 4, 5), offset=(1, 2, 3)) == b
    assert Box((5, 5, 5), (5, 9, 9)).empty()


def test_box_coordinates_become_plain_int_triples():
    b = Box(np.array([1, 2, 3], dtype=np.int64), [4.0, 5.0, 6.0])
    assert b.start == (1, 2, 3) and b.stop == (4, 5, 6)
    assert all(type(v) is int for v in b.start + b.stop)
    with pytest.raises(ValueError, match="3 coordinates"):
        Box((0, 0), (1, 1))


def test_grow_by_a_scalar_or_per_axis_halo():
    b = Box((10, 10, 10), (20, 20, 20))
    assert b.grow(2) == Box((8, 8, 8), (22, 22, 22))
    assert b.grow((1, 2, 3)) == Box((9, 8, 7), (21, 22, 23))
    assert b.grow(-5) == Box((15, 15, 15), (15, 15, 15))


def test_intersect_overlapping_and_disjoint_boxes():
    a = Box((0, 0, 0), (10, 10, 10))
    assert a.intersect(Box((5, -5, 2), (15, 5, 8))) == Box((5, 0, 2), (10, 5, 8))
    disjoint = a.intersect(Box((20, 0, 0), (30, 10, 10)))
    assert disjoint.empty() and disjoint.size == 0


def test_snap_grows_to_the_enclosing_grid_cells():
    assert Box((5, 70, 0), (130, 129, 64)).snap((64, 64, 64)) == Box((0, 64, 0), (192, 192, 64))
    assert Box((0, 0, 0), (64, 64, 64)).snap((64, 64, 64)) == Box((0, 0, 0), (64, 64, 64))
    # a grid with an origin (a layer's voxel_offset), also for negative coordinates
    assert Box((12, 12, 12), (13, 13, 13)).snap((10, 10, 10), origin=(5, 5, 5)) == Box((5, 5, 5), (15, 15, 15))
    assert Box((-3, 0, 0), (1, 1, 1)).snap((4, 4, 4)) == Box((-4, 0, 0), (4, 4, 4))


def test_chunks_tile_the_box_clipped_at_its_end_with_x_slowest():
    b = Box((0, 0, 0), (100, 64, 70))
    cells = b.chunks((64, 64, 64))
    assert cells == [
        Box((0, 0, 0), (64, 64, 64)),
        Box((0, 0, 64), (64, 64, 70)),
        Box((64, 0, 0), (100, 64, 64)),
        Box((64, 0, 64), (100, 64, 70)),
    ]
    covered = np.zeros(b.shape, int)
    for c in cells:
        covered[c.slices(relative_to=b.start)] += 1
    assert (covered == 1).all()


def test_chunks_start_at_the_box_start():
    cells = Box((10, 0, 0), (30, 5, 5)).chunks((8, 8, 8))
    assert [c.start[0] for c in cells] == [10, 18, 26] and cells[-1].stop == (30, 5, 5)


def test_slices_relative_to_an_array_origin():
    vol = np.arange(1000).reshape(10, 10, 10)
    b = Box((2, 3, 4), (5, 6, 7))
    assert vol[b.slices()].shape == (3, 3, 3)
    sub = vol[1:, 1:, 1:]
    np.testing.assert_array_equal(sub[b.slices(relative_to=(1, 1, 1))], vol[b.slices()])


def test_translate_and_contains():
    b = Box((0, 0, 0), (4, 4, 4)).translate((10, 0, -2))
    assert b == Box((10, 0, -2), (14, 4, 2))
    pts = np.array([[10, 0, -2], [13, 3, 1], [14, 0, 0], [9, 0, 0]])
    assert b.contains(pts).tolist() == [True, True, False, False]


def test_name_is_the_precomputed_chunk_file_name():
    assert Box((0, 128, 64), (128, 256, 128)).name() == "0-128_128-256_64-128"
