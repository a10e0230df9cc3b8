"""Small PNG images for Dagster materialization metadata: numpy in, PNG bytes out.

Each shard's materialization shows what its operators look like (initial conditions, energy curves,
feature heatmap, histograms) as ``dg.MetadataValue.md(markdown_image(png, alt))``. The rasterizer is the
numpy-only ``plots_raster``: no matplotlib, no torch, no dagster, so rendering stays within a few ms.

Conventions: pixel sizes are ``(width, height)``; non-finite data is drawn in ``NAN_COLOUR`` (magenta) or
as a gap; an input with nothing to draw (zero operators, empty axes) gives a small "no data" image
instead of raising, so a metadata hook can never fail a materialization on an empty shard.
"""

from __future__ import annotations

import base64

import numpy as np

from spinlock_assets.figures.raster import (
    DIVERGING,
    FOREGROUND,
    GLYPH_HEIGHT,
    MID_GREY,
    NAN_COLOUR,
    SEQUENTIAL,
    canvas,
    draw_box,
    draw_polylines,
    draw_text,
    fill_rect,
    format_number,
    png_bytes,
    text_width,
)

__all__ = [
    "energy_curves",
    "feature_heatmap",
    "histogram",
    "ic_grid",
    "markdown_image",
    "no_data",
    "png_bytes",
]

_GRID_COLUMNS = 4
_SEPARATOR = 2
_BAR_COLOUR = (70, 130, 180)
# Tableau-10: distinct hues for the realizations of one operator, cycled beyond ten.
_REALIZATION_COLOURS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def _check_size(name: str, size: tuple[int, int]) -> tuple[int, int]:
    """``size`` as ``(width, height)`` ints, both at least 1 (a PNG cannot be empty)."""
    width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise ValueError(f"{name} must be positive (width, height), got {size}")
    return width, height


def no_data() -> bytes:
    """The 62x20 "no data" placeholder returned for inputs with nothing to draw."""
    img = canvas(20, 62)
    draw_box(img, 0, 0, 61, 19, MID_GREY)
    draw_text(img, 4, 5, "no data", MID_GREY, scale=2)
    return png_bytes(img)


def _lookup(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Colours ``[..., 3]`` for ``values`` in [0, 1] (non-finite ones get entry 0; callers repaint them)."""
    levels = table.shape[0]
    clean = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    return table[np.clip(np.round(clean * (levels - 1)), 0, levels - 1).astype(np.intp)]


def _unit_interval(values: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    """``(values - lo) / (hi - lo)`` (broadcast), NaN where ``hi <= lo``.

    Evaluated after dividing everything by ``max(|lo|, |hi|)``: the direct form overflows for ranges
    wider than 1.8e308 and turns subnormal ranges into 0 / 0.
    """
    with np.errstate(all="ignore"):
        scale = np.maximum(np.abs(lo), np.abs(hi))
        low, high = lo / scale, hi / scale
        return (values / scale - low) / np.where(hi > lo, high - low, np.nan)


def ic_grid(fields: np.ndarray, *, max_operators: int = 16, tile: int = 48) -> bytes:
    """Grid (4 columns) of channel 0 of the first ``max_operators`` initial conditions.

    ``fields`` is ``[n, C, H, W]``. Each tile is scaled to its own ±max|u| over finite pixels (zero is
    white, blue negative, red positive), nearest-neighbour resized to ``tile`` x ``tile`` px, with 2 px
    dark separators; non-finite pixels are magenta. Image size ``cols * (tile + 2) + 2`` by
    ``rows * (tile + 2) + 2`` px with ``k = min(n, max_operators)``, ``cols = min(4, k)`` and
    ``rows = ceil(k / cols)``.
    """
    fields = np.asarray(fields)
    if fields.ndim != 4:
        raise ValueError(f"ic_grid expects [n, C, H, W] fields, got shape {fields.shape}")
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    count = min(fields.shape[0], max_operators)
    if count <= 0 or 0 in fields.shape[1:]:
        return no_data()
    height, width = fields.shape[2:]
    u = fields[:count, 0].astype(np.float64)  # [k, H, W]
    finite = np.isfinite(u)
    # The scale comes from the full-resolution field: downsampling to the tile could skip the extreme.
    magnitude = np.where(finite, np.abs(u), 0.0).max(axis=(1, 2))
    scaled = u / np.where(magnitude > 0, magnitude, 1.0)[:, None, None]
    rows_index = np.arange(tile) * height // tile
    cols_index = np.arange(tile) * width // tile
    tiles = _lookup((scaled[:, rows_index][:, :, cols_index] + 1.0) / 2.0, DIVERGING)  # [k, tile, tile, 3]
    tiles[~finite[:, rows_index][:, :, cols_index]] = NAN_COLOUR

    columns = min(_GRID_COLUMNS, count)
    rows = -(-count // columns)
    pitch = tile + _SEPARATOR
    img = canvas(rows * pitch + _SEPARATOR, columns * pitch + _SEPARATOR, FOREGROUND)
    for i in range(count):
        top, left = _SEPARATOR + (i // columns) * pitch, _SEPARATOR + (i % columns) * pitch
        img[top : top + tile, left : left + tile] = tiles[i]
    return png_bytes(img)


def _energy_panel(img: np.ndarray, x: int, y: int, w: int, h: int, logs: np.ndarray, title: str) -> None:
    """One operator's curves, ``logs`` ``[M, T]`` log10 energies (NaN = gap), in the panel at (x, y)."""
    finite = logs[np.isfinite(logs)]
    labels: tuple[str, str] = ("", "")
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        if hi - lo < 1e-9:  # a flat curve: centre it in one decade rather than dividing by zero
            lo, hi = lo - 0.5, hi + 0.5
        with np.errstate(over="ignore"):
            labels = (format_number(float(np.power(10.0, hi))), format_number(float(np.power(10.0, lo))))
    left = max(text_width(labels[0]), text_width(labels[1])) + 5
    x0, y0, x1, y1 = x + left, y + GLYPH_HEIGHT + 2, x + w - 4, y + h - GLYPH_HEIGHT - 4
    draw_box(img, x0, y0, x1, y1, FOREGROUND)
    draw_text(img, x0, y + 1, title, FOREGROUND)
    steps = logs.shape[1]
    draw_text(img, x0, y1 + 2, "0", FOREGROUND)
    draw_text(img, x1 + 1 - text_width(str(steps - 1)), y1 + 2, str(steps - 1), FOREGROUND)
    if not finite.size:
        draw_text(img, (x0 + x1 - text_width("nan")) // 2, (y0 + y1 - GLYPH_HEIGHT) // 2, "nan", NAN_COLOUR)
        return
    for label, top, tick in ((labels[0], y0, y0), (labels[1], y1 - GLYPH_HEIGHT + 1, y1)):
        draw_text(img, x0 - 3 - text_width(label), top, label, FOREGROUND)
        fill_rect(img, x0 - 2, tick, x0, tick + 1, FOREGROUND)
    # Inside the box with a 1 px margin so curves never overwrite the frame.
    t = np.arange(steps) * ((x1 - x0 - 4) / max(steps - 1, 1)) + (x0 + 2 if steps > 1 else (x0 + x1) / 2)
    ys = (y1 - 2) - (logs - lo) / (hi - lo) * (y1 - y0 - 4)  # [M, T]
    colours = [_REALIZATION_COLOURS[m % len(_REALIZATION_COLOURS)] for m in range(logs.shape[0])]
    draw_polylines(img, t, ys, colours)


def energy_curves(
    series: np.ndarray, *, energy_column: int, max_operators: int = 4, size: tuple[int, int] = (320, 160)
) -> bytes:
    """log10 energy over time, one panel per operator and one colour per realization.

    ``series`` is ``[n, M, T, C, K]``; the plotted energy of operator i, realization m at step t is the
    channel mean of ``series[i, m, t, :, energy_column]``. The first ``max_operators`` operators are
    laid out two panels per row in an image of exactly ``size`` = (width, height) px. Each panel has
    its own y range, labelled with its min/max energy, and the step range 0..T-1 underneath; zero,
    negative or non-finite energies leave a gap in the curve.
    """
    series = np.asarray(series)
    if series.ndim != 5:
        raise ValueError(f"energy_curves expects [n, M, T, C, K] series, got shape {series.shape}")
    count = min(series.shape[0], max_operators)
    if count <= 0 or 0 in series.shape[1:4]:
        return no_data()
    if not -series.shape[4] <= energy_column < series.shape[4]:
        raise IndexError(f"energy_column {energy_column} out of range for K={series.shape[4]}")
    with np.errstate(all="ignore"):  # log10 of 0, negative or inf energies: gaps, not warnings
        logs = np.log10(series[:count, ..., energy_column].astype(np.float64).mean(axis=-1))  # [k, M, T]
    logs[~np.isfinite(logs)] = np.nan
    width, height = _check_size("size", size)
    columns = 1 if count == 1 else 2
    rows = -(-count // columns)
    img = canvas(height, width)
    panel_w, panel_h = width // columns, height // rows
    for i in range(count):
        x, y = (i % columns) * panel_w, (i // columns) * panel_h
        _energy_panel(img, x, y, panel_w, panel_h, logs[i], f"op {i}")
    return png_bytes(img)


def feature_heatmap(matrix: np.ndarray, *, size_per_cell: tuple[int, int] = (4, 12)) -> bytes:
    """Operators (rows) by features (columns), each column scaled to its own finite min..max.

    ``matrix`` is ``[n_operators, n_features]``; colours run dark purple (column min) to yellow (column
    max). A column whose finite values are all equal is mid-grey (no range to show), and non-finite
    cells are magenta. Image size ``n_features * cell_w`` by ``n_operators * cell_h`` with
    ``size_per_cell = (cell_w, cell_h)``.
    """
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"feature_heatmap expects [n_operators, n_features], got shape {values.shape}")
    if 0 in values.shape:
        return no_data()
    cell_w, cell_h = _check_size("size_per_cell", size_per_cell)
    finite = np.isfinite(values)
    lo = np.where(finite, values, np.inf).min(axis=0)
    hi = np.where(finite, values, -np.inf).max(axis=0)
    constant = ~(hi > lo)  # also true for columns with no finite value (lo = inf, hi = -inf)
    scaled = _unit_interval(values, lo, hi)
    cells = _lookup(scaled, SEQUENTIAL)  # [n, f, 3]
    cells[constant[None, :] & finite] = MID_GREY
    cells[~finite] = NAN_COLOUR
    return png_bytes(np.repeat(np.repeat(cells, cell_h, axis=0), cell_w, axis=1))


def histogram(values: np.ndarray, *, bins: int = 24, size: tuple[int, int] = (240, 100)) -> bytes:
    """Histogram of the finite entries of ``values`` (any shape) in an image of ``size`` = (width, height).

    Bars span the finite min..max (min/max labelled under the axis; a constant sample is centred in a
    range of ±0.5); the top-left corner says how many finite values there are (``n=...``), the top-right
    how many were left out as non-finite (``non-finite: ...``).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        return no_data()
    finite = flat[np.isfinite(flat)]
    width, height = _check_size("size", size)
    img = canvas(height, width)
    x0, y0, x1, y1 = 2, GLYPH_HEIGHT + 3, width - 3, height - GLYPH_HEIGHT - 4
    draw_text(img, x0, 1, f"n={finite.size}", FOREGROUND)
    bad = f"non-finite: {flat.size - finite.size}"
    draw_text(img, width - 1 - text_width(bad), 1, bad, NAN_COLOUR if finite.size < flat.size else FOREGROUND)
    fill_rect(img, x0, y1, x1 + 1, y1 + 1, FOREGROUND)
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        # hi == lo still for |values| >~ 1e16, where 0.5 is below float resolution: one central bar.
        fraction = _unit_interval(finite, lo, hi) if hi > lo else np.full(finite.size, 0.5)
        counts = np.bincount(np.clip((fraction * bins).astype(np.intp), 0, bins - 1), minlength=bins)
        edges = x0 + np.arange(bins + 1) * (x1 + 1 - x0) // bins
        gap = 1 if (x1 - x0) // bins >= 3 else 0  # separate the bars only where they are wide enough
        bar_tops = y1 - np.ceil(counts / counts.max() * (y1 - y0)).astype(np.intp)
        for b in np.nonzero(counts)[0]:
            fill_rect(img, int(edges[b]), int(bar_tops[b]), int(edges[b + 1]) - gap, y1, _BAR_COLOUR)
        low, high = format_number(lo), format_number(hi)
        draw_text(img, x0, y1 + 3, low, FOREGROUND)
        draw_text(img, x1 + 1 - text_width(high), y1 + 3, high, FOREGROUND)
    return png_bytes(img)


def markdown_image(png: bytes, alt: str) -> str:
    """``![alt](data:image/png;base64,...)`` for ``dg.MetadataValue.md``; the alt text is kept to one line."""
    safe_alt = " ".join(alt.split()).replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    return f"![{safe_alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
