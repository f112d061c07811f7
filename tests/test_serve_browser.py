"""The review page in headless Chromium: Neuroglancer (the package's bundled client, data from the review server)
draws a cell in its colour where the cell is and a synapse where it is; a matrix click moves the viewer; a
selection in Neuroglancer highlights the matrix; a review in one page changes the matrix in a second page; a key in Neuroglancer reviews the synapse under the cursor."""

from __future__ import annotations

import time

import numpy as np
import pytest

from browser import chromium, panel_centre, wait_for_pixel  # noqa: F401  (chromium: the session's browser)
from pipeline_data import analysis
from serve_data import copy_analysis
from syconn_ng.serve.app import ReviewServer
from syconn_ng.viewer_state import SYNAPSE_RGB, type_colours

pytestmark = pytest.mark.xdist_group("serve")  # one worker: one server module at a time, one Chromium

WINDOW = (1400, 800)
PAIR_YELLOW = (255, 255, 0)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A review server with its Neuroglancer viewer (one 2D panel) over a copy of the shared analysis."""
    root = copy_analysis(analysis(tmp_path_factory, "oracle"), tmp_path_factory.mktemp("serve_browser") / "ana")
    srv = ReviewServer(root, port=0, viewer=True, viewer_layout="xy").start()
    yield srv
    srv.stop()


@pytest.fixture
def page(chromium, served):  # noqa: F811
    """The review page loaded in the session's browser (wider window), matrix drawn and websocket connected."""
    old = chromium.get_window_size()
    chromium.set_window_size(*WINDOW)
    chromium.get(served.page_url)
    wait_js(chromium, "return window.review && window.review.connected && window.review.cells.length > 0")
    yield chromium
    for handle in chromium.window_handles[1:]:
        chromium.switch_to.window(handle)
        chromium.close()
    chromium.switch_to.window(chromium.window_handles[0])
    chromium.set_window_size(old["width"], old["height"])


def wait_js(driver, script, *args, timeout=60.0):
    """Poll a JS expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.1)  # polling interval


def wait_until(fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.1)  # polling interval


def click_matrix(driver, row: int, col: int):
    """Click matrix entry (row = post index, col = pre index) where the page draws it."""
    from selenium.webdriver.common.action_chains import ActionChains

    x, y = driver.execute_script("return cellCentre(arguments[0], arguments[1])", row, col)
    canvas = driver.find_element("id", "matrix")
    r = canvas.rect
    ActionChains(driver).move_to_element_with_offset(canvas, x - r["x"] - r["width"] / 2, y - r["y"] - r["height"] / 2).click().perform()


def canvas_rgb(driver, row: int, col: int) -> list[int]:
    """The matrix canvas' colour at the centre of an entry."""
    return driver.execute_script(
        "const c = document.getElementById('matrix'), b = c.getBoundingClientRect();"
        "const [x, y] = cellCentre(arguments[0], arguments[1]);"
        "return Array.from(c.getContext('2d').getImageData(Math.floor(x - b.left), Math.floor(y - b.top), 1, 1).data).slice(0, 3);",
        row, col)


def ng_panel_centre(driver) -> np.ndarray:
    """Page coordinates of the centre of Neuroglancer's panel inside the page's iframe."""
    frame = driver.find_element("id", "ng")
    offset = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.top];", frame)
    driver.switch_to.frame(frame)
    try:
        centre = panel_centre(driver)
    finally:
        driver.switch_to.default_content()
    return np.asarray(offset) + np.asarray(centre)


def pair_with_synapses(srv):
    """(pre, post, row, col, synapses of the pair) of the matrix's first non-empty entry."""
    m = srv.ctx.reviewed.matrix()
    row, col = m["entries"][0][:2]
    pre, post = int(m["cells"][col]["id"]), int(m["cells"][row]["id"])
    s = srv.ctx.reviewed.synapses
    return pre, post, row, col, s[(s.pre_cell == pre) & (s.post_cell == post) & (s.status != "rejected")]


def test_page_shows_a_cell_in_its_colour_and_a_synapse_where_they_are(page, served):
    import cloudvolume
    from scipy import ndimage

    pre, post, row, col, syn = pair_with_synapses(served)
    click_matrix(page, row, col)
    wait_until(lambda: set(map(int, served.ctx.viewer.viewer.state.layers["cells"].segments)) == {pre, post})
    first = syn.iloc[0]
    with served.ctx.viewer.viewer.txn() as s:  # exact colours: no EM under the cells, no skeleton lines over them
        s.layers["raw"].visible = False
        s.layers["cells"].selected_alpha = 1.0
        s.layers["cells"].skeleton_rendering.mode2d = "lines"
        s.layers["cells"].skeleton_rendering.line_width2d = 0.0
        s.layers["synapses"].visible = False
    centre = ng_panel_centre(page)
    scale = served.ctx.viewer.viewer.state.cross_section_scale  # voxels per screen pixel
    position = np.asarray(served.ctx.viewer.viewer.state.position, float)
    np.testing.assert_allclose(position, [first.x + 0.5, first.y + 0.5, first.z + 0.5], atol=1e-3)
    wait_for_pixel(page, int(round(centre[0])), int(round(centre[1])), PAIR_YELLOW, timeout=120, radius=2, tolerance=10)
    # the pre cell's colour at a voxel deep inside it, on the drawn slice
    z = int(np.floor(position[2]))
    labels = np.asarray(cloudvolume.CloudVolume(f"file://{served.ctx.layers['cells']}", progress=False)[:, :, z][..., 0, 0])
    inside = ndimage.distance_transform_edt(labels == pre)
    x, y = np.unravel_index(np.argmax(inside), inside.shape)
    assert inside[x, y] >= 3, "the pre cell is not on the synapse's slice"
    px = centre + (np.array([x, y]) + 0.5 - position[:2]) / scale
    colour = type_colours(served.ctx.reviewed.analysis.tables_dir / "cells.csv")[str(pre)]
    rgb = tuple(int(colour[k:k + 2], 16) for k in (1, 3, 5))
    wait_for_pixel(page, int(round(px[0])), int(round(px[1])), rgb, timeout=120, radius=1, tolerance=8)
    # the precomputed synapse layer draws the same synapse in its type colour
    with served.ctx.viewer.viewer.txn() as s:
        s.layers["pair"].visible = False
        s.layers["synapses"].visible = True
    want = tuple(round(255 * c) for c in SYNAPSE_RGB[first.type])
    wait_for_pixel(page, int(round(centre[0])), int(round(centre[1])), want, timeout=120, radius=2, tolerance=12)
    with served.ctx.viewer.viewer.txn() as s:
        s.layers["pair"].visible = True
        s.layers["raw"].visible = True


def test_clicking_a_matrix_entry_selects_both_cells_shows_their_synapses_and_moves_there(page, served):
    pre, post, row, col, syn = pair_with_synapses(served)
    with served.ctx.viewer.viewer.txn() as s:
        s.layers["cells"].segments = set()
        s.position = [0.5, 0.5, 0.5]
    click_matrix(page, row, col)
    wait_until(lambda: set(map(int, served.ctx.viewer.viewer.state.layers["cells"].segments)) == {pre, post})
    state = served.ctx.viewer.viewer.state
    assert [a.id for a in state.layers["pair"].annotations] == [str(i) for i in syn["id"]]
    first = syn.iloc[0]
    np.testing.assert_allclose(state.position, [first.x + 0.5, first.y + 0.5, first.z + 0.5], atol=1e-3)
    listed = wait_js(page, "const r = document.querySelectorAll('#synapses tbody tr'); return r.length ? Array.from(r).map(t => t.dataset.id) : null")
    assert listed == [str(i) for i in syn["id"]]
    with served.ctx.viewer.viewer.txn() as s:  # look elsewhere, then step to the listed synapse
        s.position = [1.5, 1.5, 1.5]
    page.find_element("css selector", "#synapses tbody tr td").click()
    wait_until(lambda: np.allclose(served.ctx.viewer.viewer.state.position, [first.x + 0.5, first.y + 0.5, first.z + 0.5], atol=1e-3))


def test_a_key_in_neuroglancer_rejects_the_synapse_under_the_cursor(page, served):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    pre, post, row, col, syn = pair_with_synapses(served)
    click_matrix(page, row, col)
    wait_until(lambda: set(map(int, served.ctx.viewer.viewer.state.layers["cells"].segments)) == {pre, post})
    sid = int(syn["id"].iloc[0])
    before = served.ctx.reviewed.store.count()
    frame = page.find_element("id", "ng")
    page.switch_to.frame(frame)
    try:
        panel = page.find_element("css selector", ".neuroglancer-rendered-data-panel")
        ActionChains(page).move_to_element(panel).perform()  # the cursor on the panel centre: the synapse
        time.sleep(0.5)  # let the client report the mouse position before the key
        ActionChains(page).key_down(Keys.SHIFT).send_keys("r").key_up(Keys.SHIFT).perform()
    finally:
        page.switch_to.default_content()
    wait_until(lambda: served.ctx.reviewed.store.count() == before + 1)
    last = served.ctx.reviewed.store.decisions(1)[0]
    assert (last["who"], last["decision"], last["synapse_id"]) == ("neuroglancer", "reject", str(sid))
    wait_until(lambda: str(sid) not in [a.id for a in served.ctx.viewer.viewer.state.layers["pair"].annotations])
    wait_js(page, "return (window.review.entries.get(arguments[0]) || [0, 0, 0])[2] === arguments[1]", f"{row},{col}", len(syn) - 1,
            timeout=20)  # the page's matrix lost that synapse


def test_selecting_a_cell_in_neuroglancer_highlights_its_row_and_column(page, served):
    m = served.ctx.reviewed.matrix()
    filled = {(e[0], e[1]) for e in m["entries"]}
    k = m["entries"][0][0]
    empty_col = next(c for c in range(len(m["cells"])) if (k, c) not in filled and c != k)
    with served.ctx.viewer.viewer.txn() as s:
        s.layers["cells"].segments = set()
    wait_js(page, "return window.review.highlighted.size === 0")
    before = canvas_rgb(page, k, empty_col)
    assert before == [255, 255, 255]
    cell = m["cells"][k]["id"]
    with served.ctx.viewer.viewer.txn() as s:
        s.layers["cells"].segments = {int(cell)}
    wait_js(page, "return window.review.highlighted.has(arguments[0])", cell)
    after = canvas_rgb(page, k, empty_col)
    assert after[2] == 255 and after[0] < 230 and after[1] < 245  # tinted blue
    n = len(m["cells"])
    r, c = next((r, c) for r in range(n) for c in range(n) if k not in (r, c) and (r, c) not in filled)
    assert canvas_rgb(page, r, c) == [255, 255, 255]  # neither its row nor its column: not tinted


def test_a_review_click_in_one_page_changes_the_matrix_in_a_second_page(page, served):
    m = served.ctx.reviewed.matrix()
    entry = next(e for e in m["entries"] if e[2] == 1)  # a pair with one synapse: rejecting it empties the entry
    row, col = entry[:2]
    first = page.current_window_handle
    page.switch_to.new_window("tab")
    page.get(served.page_url)
    wait_js(page, "return window.review && window.review.connected && window.review.cells.length > 0")
    second = page.current_window_handle
    colour_before = canvas_rgb(page, row, col)
    assert colour_before != [255, 255, 255]
    page.switch_to.window(first)
    click_matrix(page, row, col)
    wait_js(page, "return document.querySelectorAll('#synapses tbody tr').length === 1")
    # clicked from JS: a websocket event may re-render the list between a lookup and a WebDriver click
    page.execute_script("document.querySelector(\"#synapses tbody tr button[data-d='reject']\").click()")
    wait_until(lambda: served.ctx.reviewed.store.count() > 0 and served.ctx.reviewed.store.decisions(1)[0]["synapse_id"] in
               set(page.execute_script("return window.review.synapses.map(s => s.id)")))
    page.switch_to.window(second)
    wait_js(page, "return !window.review.entries.has(arguments[0])", f"{row},{col}", timeout=20)
    assert canvas_rgb(page, row, col) != colour_before
    wait_js(page, "return window.review.version === arguments[0]", served.ctx.reviewed.version, timeout=10)
    assert served.ctx.reviewed.store.decisions(1)[0]["decision"] == "reject"


def test_hovering_an_entry_shows_pre_post_count_and_area_and_log_scale_recolours(page, served):
    from selenium.webdriver.common.action_chains import ActionChains

    m = served.ctx.reviewed.matrix()
    small = min(m["entries"], key=lambda e: e[3])
    assert small[3] < m["max_area_um2"]  # two different areas: a log scale must change the smaller one's colour
    row, col = small[:2]
    x, y = page.execute_script("return cellCentre(arguments[0], arguments[1])", row, col)
    canvas = page.find_element("id", "matrix")
    r = canvas.rect
    ActionChains(page).move_to_element_with_offset(canvas, x - r["x"] - r["width"] / 2, y - r["y"] - r["height"] / 2).perform()
    tip = wait_js(page, "const t = document.getElementById('tip'); return t.hidden ? null : t.textContent")
    pre, post = m["cells"][col], m["cells"][row]
    assert tip == (f"pre {pre['id']} ({pre['type']}) → post {post['id']} ({post['type']}): "
                   f"{small[2]} synapses, {small[3]:.4f} µm²")
    linear = canvas_rgb(page, row, col)
    page.find_element("id", "log").click()
    wait_until(lambda: canvas_rgb(page, row, col) != linear, timeout=10)
    assert canvas_rgb(page, row, col) == [255, 237, 160]  # the log scale starts at the smallest area: the ramp's light end
    page.find_element("id", "log").click()
