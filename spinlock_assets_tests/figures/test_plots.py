"""Metadata images: valid PNGs of the documented sizes that show NaNs, ranges and realizations faithfully.

The PNGs are decoded by a small zlib-based reader here (Pillow is not a dependency), which checks the
signature, chunk CRCs, IHDR, and the length of every decompressed row.
"""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from spinlock_assets.figures import plots
from spinlock_assets.figures.raster import (
    DIVERGING,
    MID_GREY,
    NAN_COLOUR,
    SEQUENTIAL,
    canvas,
    fill_rect,
    format_number,
)

# A RuntimeWarning (overflow, 0/0, NaN cast) means an image was drawn from garbage: fail on it.
pytestmark = pytest.mark.filterwarnings("error")

SIGNATURE = b"\x89PNG\r\n\x1a\n"
REALIZATION_0 = (31, 119, 180)
REALIZATION_1 = (255, 127, 14)
SIZE_BUDGET = 30_000


def inspect_png(data: bytes) -> tuple[np.ndarray, int, set[int]]:
    """(pixels ``[H, W, 3]`` uint8, colour type, set of scanline filter types) of an 8-bit PNG.

    Handles truecolour (2) and indexed (3) images with rows filtered by None (0) or Up (2), the only
    forms the encoder writes; anything else fails an assertion.
    """
    assert data[:8] == SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, f"bad CRC in {tag!r}"
        chunks.append((tag, body))
        pos += 12 + length
    assert pos == len(data)
    tags = [tag for tag, _ in chunks]
    assert tags[0] == b"IHDR" and tags[-1] == b"IEND" and b"IDAT" in tags
    width, height, depth, colour_type, compression, filter_method, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    assert width > 0 and height > 0 and (depth, compression, filter_method, interlace) == (8, 0, 0, 0)
    assert colour_type in (2, 3)
    raw = zlib.decompress(b"".join(body for tag, body in chunks if tag == b"IDAT"))
    row_bytes = 1 + width * (3 if colour_type == 2 else 1)
    assert len(raw) == height * row_bytes
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, row_bytes)
    filters = set(rows[:, 0].tolist())
    assert filters <= {0, 2}, "the encoder uses filter 0 (None) or 2 (Up) only"
    pixels = rows[:, 1:].copy()
    for y in np.flatnonzero(rows[:, 0] == 2):
        pixels[y] += pixels[y - 1] if y else 0  # Up: add the decoded row above, modulo 256
    if colour_type == 2:
        return pixels.reshape(height, width, 3), colour_type, filters
    (palette_body,) = [body for tag, body in chunks if tag == b"PLTE"]
    palette = np.frombuffer(palette_body, dtype=np.uint8).reshape(-1, 3)
    assert pixels.max() < len(palette)
    return palette[pixels], colour_type, filters


def decode(data: bytes) -> np.ndarray:
    """``[H, W, 3]`` uint8 pixels of a PNG written by the encoder (checked by ``inspect_png``)."""
    return inspect_png(data)[0]


def has_colour(img: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """``[H, W]`` mask of the pixels equal to ``colour``."""
    return np.all(img == np.array(colour, dtype=np.uint8), axis=-1)


def sample_series(n: int = 4, m: int = 3, t: int = 64, c: int = 2, k: int = 10) -> np.ndarray:
    """``[n, M, T, C, K]`` series whose column 4 is a positive, decaying energy, distinct per realization."""
    rng = np.random.default_rng(1)
    series = rng.normal(size=(n, m, t, c, k)).astype(np.float32)
    decay = np.exp(-np.arange(t) / rng.uniform(10, 40, size=(n, m, 1)))
    series[..., 4] = (decay[..., None] * rng.uniform(0.5, 2.0, size=(n, m, 1, c))).astype(np.float32)
    return series


def test_png_bytes_round_trips_indexed_truecolour_and_up_filtered_images() -> None:
    rng = np.random.default_rng(0)
    few = rng.integers(0, 4, size=(7, 5, 1), dtype=np.uint8) * np.array([60, 20, 10], dtype=np.uint8)
    many = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)  # far more than 256 colours
    # Vertical texture: every row the same, so the Up filter turns all rows but the first into zeros.
    stripes = np.repeat(
        np.repeat(rng.integers(0, 200, size=(1, 400, 1), dtype=np.uint8), 3, axis=2), 50, axis=0
    )
    for img, colour_type, filters in ((few, 3, {0}), (many, 2, {0}), (stripes, 3, {2})):
        pixels, *form = inspect_png(plots.png_bytes(img))
        assert form == [colour_type, filters]
        np.testing.assert_array_equal(pixels, img)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((0, 4, 3))]
)
def test_png_bytes_rejects_non_image_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        plots.png_bytes(bad)


@pytest.mark.parametrize(("n", "tile", "columns", "rows"), [(5, 10, 4, 2), (20, 8, 4, 4), (2, 12, 2, 1)])
def test_ic_grid_size_follows_tile_and_operator_count(n: int, tile: int, columns: int, rows: int) -> None:
    fields = np.random.default_rng(0).normal(size=(n, 2, 9, 7)).astype(np.float32)
    img = decode(plots.ic_grid(fields, tile=tile))
    assert img.shape == (rows * (tile + 2) + 2, columns * (tile + 2) + 2, 3)


def test_ic_grid_nan_pixel_has_nan_colour_and_only_there() -> None:
    fields = np.random.default_rng(0).normal(size=(3, 2, 8, 8)).astype(np.float32)
    fields[1, 0, 2, 5] = np.nan
    fields[1, 1] = np.nan  # channel 1 is not drawn
    img = decode(plots.ic_grid(fields, tile=16))  # 2x nearest-neighbour: source (2, 5) -> tile (4:6, 10:12)
    nan_mask = has_colour(img, NAN_COLOUR)
    top, left = 2, 2 + 18  # second tile
    assert nan_mask[top + 4 : top + 6, left + 10 : left + 12].all()
    assert nan_mask.sum() == 4


def test_ic_grid_scales_each_tile_symmetrically_around_white() -> None:
    field = np.zeros((2, 1, 4, 4), np.float32)
    field[0, 0, :2], field[0, 0, 2:] = 3.0, -3.0
    field[1, 0, :2], field[1, 0, 2:] = 1e-3, -5e-4  # a much smaller operator still spans its own scale
    img = decode(plots.ic_grid(field, tile=4))
    top_left = lambda i: img[2, 2 + 6 * i]  # noqa: E731
    bottom_left = lambda i: img[4, 2 + 6 * i]  # noqa: E731
    assert tuple(top_left(0)) == tuple(DIVERGING[-1]) == tuple(top_left(1))  # +max|u| -> darkest red
    assert tuple(bottom_left(0)) == tuple(DIVERGING[0])  # -max|u| -> darkest blue
    assert tuple(bottom_left(1)) == tuple(DIVERGING[16])  # -max/2 -> halfway to white
    assert tuple(decode(plots.ic_grid(np.zeros((1, 1, 3, 3)), tile=3))[3, 3]) == tuple(DIVERGING[32])


def test_feature_heatmap_size_follows_cells() -> None:
    img = decode(plots.feature_heatmap(np.ones((5, 7)), size_per_cell=(3, 2)))
    assert img.shape == (5 * 2, 7 * 3, 3)


def test_feature_heatmap_constant_column_is_mid_grey_and_nan_cell_nan_colour() -> None:
    matrix = np.random.default_rng(0).normal(size=(4, 3))
    matrix[:, 1] = 2.5
    matrix[2, 1] = np.nan  # a non-finite cell does not make its constant column non-constant
    matrix[0, 2] = np.inf
    img = decode(plots.feature_heatmap(matrix, size_per_cell=(1, 1)))
    assert [tuple(img[row, 1]) for row in (0, 1, 3)] == [MID_GREY] * 3
    assert tuple(img[2, 1]) == NAN_COLOUR == tuple(img[0, 2])


def test_feature_heatmap_normalises_each_column_to_its_own_range() -> None:
    # Ordinary, huge (the plain span overflows) and subnormal (the plain span underflows) ranges.
    matrix = np.array([[0.0, -1e9, -1.7e308, 0.0], [1.0, 0.0, 1.7e308, 5e-324], [0.5, 1e9, 0.0, 0.0]])
    img = decode(plots.feature_heatmap(matrix, size_per_cell=(1, 1)))
    assert [tuple(img[0, j]) for j in range(4)] == [tuple(SEQUENTIAL[0])] * 4
    assert [tuple(img[1, j]) for j in (0, 2, 3)] == [tuple(SEQUENTIAL[-1])] * 3
    assert tuple(img[2, 1]) == tuple(SEQUENTIAL[-1])


@pytest.mark.parametrize(
    ("n", "size"),
    [(4, (320, 160)), (1, (100, 60)), (3, (250, 200)), (9, (320, 160)), (2, (12, 9)), (1, (1, 1))],
)
def test_energy_curves_image_has_the_requested_size(n: int, size: tuple[int, int]) -> None:
    img = decode(plots.energy_curves(sample_series(n=n), energy_column=4, size=size))
    assert img.shape == (size[1], size[0], 3)


def test_energy_curves_draw_each_realization_in_its_own_colour_and_follow_its_data() -> None:
    series = sample_series(n=1, m=2)
    img = decode(plots.energy_curves(series, energy_column=4))
    assert has_colour(img, REALIZATION_0).sum() > 50 and has_colour(img, REALIZATION_1).sum() > 50
    changed = series.copy()
    changed[0, 1, :, :, 4] *= np.linspace(1.0, 0.1, series.shape[2])[:, None]
    other = decode(plots.energy_curves(changed, energy_column=4))
    assert not np.array_equal(has_colour(img, REALIZATION_1), has_colour(other, REALIZATION_1))
    other_column = decode(plots.energy_curves(series, energy_column=3))  # column 3 is unrelated noise
    assert not np.array_equal(img, other_column)


def test_energy_curves_leave_a_gap_at_non_finite_or_zero_energy() -> None:
    series = sample_series(n=1, m=1, t=64)
    series[0, 0, 20:30, :, 4] = np.nan
    series[0, 0, 30:40, :, 4] = 0.0  # log10(0) = -inf
    img = decode(plots.energy_curves(series, energy_column=4))
    columns = np.flatnonzero(has_colour(img, REALIZATION_0).any(axis=0))
    assert np.diff(columns).max() > 0.25 * img.shape[1]  # 20 of 63 step intervals missing


def test_energy_curves_reject_a_column_outside_k() -> None:
    with pytest.raises(IndexError):
        plots.energy_curves(sample_series(k=5), energy_column=5)


@pytest.mark.parametrize("size", [(240, 100), (30, 12), (1, 1)])
def test_histogram_image_has_the_requested_size_even_when_tiny(size: tuple[int, int]) -> None:
    values = np.append(np.random.default_rng(0).normal(size=50), np.nan)
    assert decode(plots.histogram(values, size=size)).shape == (size[1], size[0], 3)


@pytest.mark.parametrize(
    "render",
    [
        lambda: plots.energy_curves(sample_series(), energy_column=4, size=(0, 10)),
        lambda: plots.histogram(np.ones(3), size=(10, -1)),
        lambda: plots.feature_heatmap(np.ones((2, 2)), size_per_cell=(0, 3)),
        lambda: plots.histogram(np.ones(3), bins=0),
        lambda: plots.ic_grid(np.ones((1, 1, 2, 2)), tile=0),
        lambda: plots.ic_grid(np.ones((2, 2, 2))),
    ],
)
def test_bad_arguments_raise_value_error(render) -> None:
    with pytest.raises(ValueError):
        render()


def test_histogram_size_bars_and_non_finite_count_change_the_image() -> None:
    values = np.random.default_rng(0).normal(size=500)
    clean = decode(plots.histogram(values, size=(200, 80)))
    assert clean.shape == (80, 200, 3)
    assert has_colour(clean, (70, 130, 180)).sum() > 500  # the bars
    dirty = decode(plots.histogram(np.append(values, [np.nan, np.inf]), size=(200, 80)))
    assert has_colour(dirty, NAN_COLOUR).any() and not has_colour(clean, NAN_COLOUR).any()
    differs = np.flatnonzero(np.any(clean != dirty, axis=(0, 2)))
    assert differs.min() > 100  # only the top-right count changed: same bars, same min/max labels


def test_fill_rect_outside_the_canvas_draws_nothing() -> None:
    img = canvas(6, 6)
    fill_rect(img, -5, -5, -2, 3, NAN_COLOUR)  # entirely left of the canvas
    fill_rect(img, 2, 8, 4, 10, NAN_COLOUR)  # entirely below it
    assert not has_colour(img, NAN_COLOUR).any()
    fill_rect(img, -3, 4, 2, 99, NAN_COLOUR)  # partly inside: clipped, not wrapped
    assert has_colour(img, NAN_COLOUR).sum() == 2 * 2


def test_format_number_gives_short_labels_the_font_can_draw() -> None:
    cases = {0.0: "0", -0.25: "-0.25", 1.2345e-4: "1.2e-4", 3.4e12: "3.4e12", 999.4: "999", 999.6: "1.0e3"}
    assert {value: format_number(value) for value in cases} == cases
    assert (format_number(np.nan), format_number(-np.inf)) == ("nan", "-inf")
    for value in (-1.8e308, -1e-300, 5e-324, 123.456, 1e100):
        assert len(format_number(value)) <= 9
        # Extreme and degenerate ranges; drawing the labels raises KeyError if a glyph were missing.
        for sample in ([value, 0.0], [value, -value], [value, value]):
            plots.histogram(np.array(sample))


def test_images_are_deterministic() -> None:
    fields = np.random.default_rng(3).normal(size=(6, 2, 16, 16)).astype(np.float32)
    matrix = np.random.default_rng(4).normal(size=(6, 9))
    for render in (
        lambda: plots.ic_grid(fields),
        lambda: plots.energy_curves(sample_series(), energy_column=4),
        lambda: plots.feature_heatmap(matrix),
        lambda: plots.histogram(matrix),
    ):
        assert render() == render()


def test_default_images_stay_under_the_size_budget() -> None:
    rng = np.random.default_rng(5)
    noise_fields = rng.normal(size=(16, 3, 64, 64)).astype(np.float32)  # incompressible worst case
    series = sample_series(n=16, m=5, t=256, c=3)
    series[..., 4] *= np.exp(rng.normal(size=series.shape[:4]))  # jagged curves
    sizes = {
        "ic_grid": len(plots.ic_grid(noise_fields)),
        "energy_curves": len(plots.energy_curves(series, energy_column=4)),
        "feature_heatmap": len(plots.feature_heatmap(rng.normal(size=(16, 200)))),
        "histogram": len(plots.histogram(rng.normal(size=100_000))),
    }
    assert max(sizes.values()) < SIZE_BUDGET, sizes


def test_repeating_texture_compresses_far_below_its_run_length_size() -> None:
    # Periodic 8x8 patterns have no runs (run-length coding alone gives ~27 KB) but repeat every
    # 8 px, which the full LZ77 pass finds (~1.7 KB).
    block = np.random.default_rng(6).normal(size=(16, 1, 8, 8))
    assert len(plots.ic_grid(np.tile(block, (1, 1, 6, 6)).astype(np.float32))) < 5_000


def test_all_nan_inputs_render_without_error() -> None:
    tile = decode(plots.ic_grid(np.full((2, 1, 4, 4), np.nan, np.float32), tile=4))
    assert has_colour(tile, NAN_COLOUR).sum() == 2 * 16
    heat = decode(plots.feature_heatmap(np.full((3, 2), np.nan)))
    assert has_colour(heat, NAN_COLOUR).all()
    curves = decode(plots.energy_curves(np.full((2, 2, 8, 1, 5), np.nan), energy_column=4))
    assert curves.shape == (160, 320, 3)
    assert not has_colour(curves, REALIZATION_0).any()
    assert decode(plots.histogram(np.full(10, np.nan))).shape == (100, 240, 3)


def test_empty_inputs_give_the_no_data_image() -> None:
    placeholder = plots.no_data()
    assert decode(placeholder).shape == (20, 62, 3)
    assert plots.ic_grid(np.zeros((0, 3, 8, 8), np.float32)) == placeholder
    assert plots.ic_grid(np.zeros((5, 3, 8, 8), np.float32), max_operators=0) == placeholder
    assert plots.energy_curves(np.zeros((0, 3, 8, 2, 10), np.float32), energy_column=4) == placeholder
    assert plots.energy_curves(np.zeros((2, 3, 0, 2, 10), np.float32), energy_column=4) == placeholder
    assert plots.feature_heatmap(np.zeros((0, 12))) == placeholder
    assert plots.histogram(np.array([])) == placeholder


def test_markdown_image_embeds_the_png_as_a_data_uri() -> None:
    png = plots.histogram(np.arange(10.0))
    text = plots.markdown_image(png, "shard [3]\nenergy")
    prefix = "![shard \\[3\\] energy](data:image/png;base64,"
    assert text.startswith(prefix) and text.endswith(")")
    assert base64.b64decode(text[len(prefix) : -1]) == png


def test_plots_import_neither_torch_nor_dagster() -> None:
    code = "import sys, spinlock_assets.figures.plots; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch" not in loaded and "dagster" not in loaded and "matplotlib" not in loaded
