"""Tiny numpy rasterizer behind ``plots``: PNG encoding, colour maps, a 3x5 bitmap font, lines, boxes.

Everything works on ``[H, W, 3]`` uint8 canvases in place and clips to the canvas, so callers can lay out
panels without bounds checks. Only numpy and the standard library are used: ``plots`` runs in every
materialization, where importing matplotlib would cost more than the plotting itself.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "BACKGROUND",
    "DIVERGING",
    "FOREGROUND",
    "GLYPH_ADVANCE",
    "GLYPH_HEIGHT",
    "MID_GREY",
    "NAN_COLOUR",
    "SEQUENTIAL",
    "canvas",
    "draw_box",
    "draw_polylines",
    "draw_text",
    "fill_rect",
    "format_number",
    "lut",
    "png_bytes",
    "text_width",
]

Colour = tuple[int, int, int]

BACKGROUND: Colour = (255, 255, 255)
FOREGROUND: Colour = (40, 40, 40)
MID_GREY: Colour = (128, 128, 128)
# Magenta appears in neither colour map, so a non-finite pixel can never pass for data.
NAN_COLOUR: Colour = (255, 0, 255)


def lut(anchors: Sequence[Colour], levels: int = 256) -> np.ndarray:
    """``[levels, 3]`` uint8 table linearly interpolated between evenly spaced anchor colours."""
    anchor_array = np.asarray(anchors, dtype=np.float64)
    positions = np.linspace(0.0, 1.0, len(anchor_array))
    samples = np.linspace(0.0, 1.0, levels)
    channels = [np.interp(samples, positions, anchor_array[:, k]) for k in range(3)]
    return np.round(np.stack(channels, axis=1)).astype(np.uint8)


# Blue-white-red (ColorBrewer RdBu, reversed): zero is white, so the sign of a field reads at a glance.
# 65 levels rather than 256: indistinguishable on screen, fewer distinct colours keep the PNGs small, and an
# odd count puts zero exactly on the white middle entry.
DIVERGING = lut(
    [
        (5, 48, 97),
        (33, 102, 172),
        (67, 147, 195),
        (146, 197, 222),
        (209, 229, 240),
        (247, 247, 247),
        (253, 219, 199),
        (244, 165, 130),
        (214, 96, 77),
        (178, 24, 43),
        (103, 0, 31),
    ],
    levels=65,
)
# Viridis sampled at 16 evenly spaced points: perceptually uniform and never grey, unlike MID_GREY.
SEQUENTIAL = lut(
    [
        (0x44, 0x01, 0x54),
        (0x48, 0x1A, 0x6C),
        (0x47, 0x2F, 0x7D),
        (0x41, 0x44, 0x87),
        (0x39, 0x56, 0x8C),
        (0x31, 0x68, 0x8E),
        (0x2A, 0x78, 0x8E),
        (0x23, 0x88, 0x8E),
        (0x1F, 0x98, 0x8B),
        (0x22, 0xA8, 0x84),
        (0x35, 0xB7, 0x79),
        (0x54, 0xC5, 0x68),
        (0x7A, 0xD1, 0x51),
        (0xA5, 0xDB, 0x36),
        (0xD2, 0xE2, 0x1B),
        (0xFD, 0xE7, 0x25),
    ],
    levels=64,
)


def canvas(height: int, width: int, colour: Colour = BACKGROUND) -> np.ndarray:
    """A new ``[height, width, 3]`` uint8 canvas filled with ``colour``."""
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[...] = colour
    return out


def fill_rect(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour: Colour) -> None:
    """Fill the half-open pixel rectangle ``[x0, x1) x [y0, y1)``, clipped to the canvas."""
    height, width = img.shape[:2]
    # Clamped at both ends: a negative stop would count from the far edge instead of meaning "nothing".
    rows = slice(min(max(y0, 0), height), min(max(y1, 0), height))
    img[rows, min(max(x0, 0), width) : min(max(x1, 0), width)] = colour


def draw_box(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour: Colour) -> None:
    """1-px outline of the inclusive rectangle ``[x0, x1] x [y0, y1]``."""
    fill_rect(img, x0, y0, x1 + 1, y0 + 1, colour)
    fill_rect(img, x0, y1, x1 + 1, y1 + 1, colour)
    fill_rect(img, x0, y0, x0 + 1, y1 + 1, colour)
    fill_rect(img, x1, y0, x1 + 1, y1 + 1, colour)


def draw_polylines(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, colours: Sequence[Colour]) -> None:
    """Draw ``L`` polylines at once: line ``l`` joins ``(xs[l, i], ys[l, i])`` in ``colours[l]``.

    ``xs`` and ``ys`` are float pixel coordinates broadcastable to ``[L, N]``. A segment is drawn only
    when both ends are finite, so a non-finite point leaves a gap; every finite point is also drawn
    on its own so that one isolated between gaps stays visible. Each segment is sampled at one point
    per pixel of its longer axis, all lines together (one numpy pass, not one per line); later lines
    are drawn over earlier ones.
    """
    xs, ys = np.broadcast_arrays(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    finite = np.isfinite(xs) & np.isfinite(ys)
    both = finite[:, :-1] & finite[:, 1:]
    x0, y0, x1, y1 = xs[:, :-1][both], ys[:, :-1][both], xs[:, 1:][both], ys[:, 1:][both]
    steps = np.ceil(np.maximum(np.abs(x1 - x0), np.abs(y1 - y0))).astype(np.int64) + 1
    segment = np.repeat(np.arange(steps.size), steps)
    offsets = np.arange(segment.size) - np.repeat(np.cumsum(steps) - steps, steps)
    t = offsets / np.maximum(steps - 1, 1)[segment]
    # Isolated points first, so that the segments keep the line order when they overlap them.
    px = np.concatenate([xs[finite], x0[segment] + t * (x1 - x0)[segment]])
    py = np.concatenate([ys[finite], y0[segment] + t * (y1 - y0)[segment]])
    line = np.concatenate([np.nonzero(finite)[0], np.nonzero(both)[0][segment]])
    px = np.round(px).astype(np.int64)
    py = np.round(py).astype(np.int64)
    inside = (px >= 0) & (px < img.shape[1]) & (py >= 0) & (py < img.shape[0])
    img[py[inside], px[inside]] = np.asarray(colours, dtype=np.uint8)[line[inside]]


# 3x5 glyphs, '#' = ink. Only the characters the plots write: numbers and a few short words.
_GLYPH_ROWS: dict[str, tuple[str, ...]] = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    ".": ("...", "...", "...", "...", ".#."),
    "-": ("...", "...", "###", "...", "..."),
    "+": ("...", ".#.", "###", ".#.", "..."),
    "=": ("...", "###", "...", "###", "..."),
    ":": ("...", ".#.", "...", ".#.", "..."),
    " ": ("...", "...", "...", "...", "..."),
    "a": ("...", "##.", ".##", "#.#", ".##"),
    "d": ("..#", ".##", "#.#", "#.#", ".##"),
    "e": ("...", ".##", "###", "#..", ".##"),
    "f": ("..#", ".#.", "###", ".#.", ".#."),
    "i": (".#.", "...", ".#.", ".#.", ".#."),
    "n": ("...", "##.", "#.#", "#.#", "#.#"),
    "o": ("...", ".#.", "#.#", "#.#", ".#."),
    "p": ("...", "##.", "#.#", "##.", "#.."),
    "t": (".#.", "###", ".#.", ".#.", "..#"),
}
_GLYPHS = {ch: np.array([[c == "#" for c in row] for row in rows]) for ch, rows in _GLYPH_ROWS.items()}
GLYPH_HEIGHT = 5
GLYPH_ADVANCE = 4  # 3 px glyph + 1 px spacing


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of ``text`` drawn by ``draw_text`` (no trailing spacing)."""
    return max(len(text) * GLYPH_ADVANCE - 1, 0) * scale


def draw_text(img: np.ndarray, x: int, y: int, text: str, colour: Colour, scale: int = 1) -> None:
    """Draw ``text`` with its top-left corner at ``(x, y)``; pixels outside the canvas are dropped.

    Raises ``KeyError`` for a character the font lacks, so a missing glyph shows up in tests rather
    than as a silently blank label.
    """
    if not text:
        return
    mask = np.zeros((GLYPH_HEIGHT, len(text) * GLYPH_ADVANCE), dtype=bool)
    for i, ch in enumerate(text):
        mask[:, i * GLYPH_ADVANCE : i * GLYPH_ADVANCE + 3] = _GLYPHS[ch]
    mask = np.kron(mask, np.ones((scale, scale), dtype=bool)) if scale > 1 else mask
    rows, cols = np.nonzero(mask)
    rows, cols = rows + y, cols + x
    inside = (rows >= 0) & (rows < img.shape[0]) & (cols >= 0) & (cols < img.shape[1])
    img[rows[inside], cols[inside]] = colour


def format_number(value: float) -> str:
    """Short label for an axis end: ``-0.25``, ``1.2e-4``, ``3.4e12``, ``nan``, ``-inf``.

    Plain notation (3 significant digits) for magnitudes in [0.01, 999.5), where ``%.3g`` stays plain,
    else one-decimal scientific with a bare exponent: at most 9 characters (35 px, e.g. ``-1.0e-300``).
    """
    if not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0:
        return "0"
    if 0.01 <= abs(value) < 999.5:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _palette_indices(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(palette [P] uint32 0x00BBGGRR, indices [H * W] uint8)`` if ``rgb`` has <= 256 colours, else None.

    The distinct colours are found among runs of equal pixels rather than all pixels: plots are mostly
    flat areas, so there are far fewer runs than pixels and the sort stays cheap.
    """
    quads = np.zeros((rgb.shape[0] * rgb.shape[1], 4), dtype=np.uint8)
    quads[:, :3] = rgb.reshape(-1, 3)
    key = quads.view("<u4").ravel()  # 0x00BBGGRR: one copy and a view instead of three casts and shifts
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    runs = key[starts]
    palette = np.unique(runs)
    if palette.size > 256:
        return None
    lengths = np.diff(np.append(starts, key.size))
    return palette, np.repeat(np.searchsorted(palette, runs).astype(np.uint8), lengths)


# Below this many bytes a run-length stream is kept as is: a full level-9 LZ77 search could save at
# most a few KB, and on line art (flat areas cut by thin lines) it costs 10-20 ms, 50-100x the RLE pass.
_RLE_GOOD_ENOUGH = 8192


def _deflate(filter_type: int, rows: np.ndarray, strategy: int) -> bytes:
    """zlib stream (level 9) of the ``[H, B]`` filtered scanlines, each prefixed by its filter byte."""
    raw = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    raw[:, 0] = filter_type
    raw[:, 1:] = rows
    compressor = zlib.compressobj(9, zlib.DEFLATED, 15, 9, strategy)
    return compressor.compress(raw.tobytes()) + compressor.flush()


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an ``[H, W, 3]`` uint8 image losslessly as an 8-bit PNG.

    Images with at most 256 colours (every plot here) are written as indexed colour (type 3, with a
    PLTE chunk), others as truecolour (type 2): a third of the bytes, 20-30% smaller files. The
    scanlines are compressed at zlib level 9 with the run-length strategy under filter 0 (None) and
    filter 2 (Up, which zeroes repeated rows), both a fraction of a millisecond; only when the smaller
    is over ``_RLE_GOOD_ENOUGH`` (images with texture, like the initial conditions) does a full
    level-9 deflate of the filter-0 scanlines compete too. The result depends only on the pixels.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape[:2]:
        raise ValueError(f"png_bytes expects a non-empty [H, W, 3] uint8 array, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    indexed = _palette_indices(rgb)
    if indexed is None:
        colour_type, pixels, plte = 2, rgb.reshape(height, width * 3), b""
    else:
        palette, indices = indexed
        colour_type, pixels = 3, indices.reshape(height, width)
        plte = _chunk(b"PLTE", palette.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes())
    up = pixels.copy()
    up[1:] -= pixels[:-1]  # uint8 arithmetic wraps modulo 256, exactly as the Up filter specifies
    idat = min(_deflate(0, pixels, zlib.Z_RLE), _deflate(2, up, zlib.Z_RLE), key=len)
    if len(idat) > _RLE_GOOD_ENOUGH:
        idat = min(idat, _deflate(0, pixels, zlib.Z_DEFAULT_STRATEGY), key=len)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + plte + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )
