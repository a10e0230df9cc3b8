"""Figures for the UI's metadata panel: numpy in, a matplotlib figure and its caption out.

Each shard's materialization shows what its operators look like (initial conditions, energy over time, a
feature heat map) as a PNG plus a caption saying what is drawn: which operators, which channel, which
scale. A figure is built as a :class:`Preview` first, so tests read its titles and labels from the
artists without rendering, then rendered once by :meth:`Preview.png`.

matplotlib is imported inside the functions: the code server imports this module when it loads the
definitions and never draws, so only a materialization pays for matplotlib. Figures are built on the Agg
canvas directly, never through pyplot, so no global figure state or GUI backend is involved.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Preview", "energy_curves", "feature_heatmap", "feature_matrix", "ic_grid"]

DPI = 100  # 1 inch = 100 px: figures are sized for the UI's markdown dialog at normal zoom
NAN_COLOUR = "magenta"  # in neither colour map, so a non-finite cell can never pass for data
Z_LIMIT = 3.0  # z-scores beyond ±3 share the end colours; the colour bar's arrows say so
_LINE_STYLES = ("-", "--", ":", "-.")
_IC_COLUMNS = 4


@dataclass(frozen=True)
class Preview:
    """A figure and the sentence shown under it in the UI."""

    figure: Figure
    caption: str

    @cached_property
    def png(self) -> bytes:
        """The figure as a 256-colour PNG, rendered once (a second draw may settle the constrained layout a
        pixel differently). The palette makes the PNG 3-4 times smaller than matplotlib's RGBA one for the
        same look: the image lives in the event log of every materialization."""
        from PIL import Image

        self.figure.canvas.draw()
        rgb = np.asarray(self.figure.canvas.buffer_rgba())[..., :3]
        buffer = io.BytesIO()
        Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(buffer, format="png")
        return buffer.getvalue()

    def markdown(self) -> str:
        """The image as a data URI with the caption under it, for ``dg.MetadataValue.md``."""
        alt = " ".join(self.caption.split()).replace("[", "(").replace("]", ")")
        encoded = base64.b64encode(self.png).decode("ascii")
        return f"![{alt}](data:image/png;base64,{encoded})\n\n{self.caption}"


def _figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _operator_list(indices: Sequence[int]) -> str:
    """``128–131`` for three or more consecutive indices, else ``3, 7, 9``."""
    values = [int(i) for i in indices]
    if len(values) > 2 and values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(str(v) for v in values)


def _no_data(message: str) -> Preview:
    figure = _figure(4, 1)
    figure.text(0.5, 0.5, message, ha="center", va="center")
    return Preview(figure, message)


def ic_grid(
    fields: np.ndarray,
    *,
    operator_indices: Sequence[int],
    families: Sequence[str],
    channel: int = 0,
    max_operators: int = 8,
) -> Preview:
    """The initial fields u(x, y) of the first ``max_operators`` operators, one channel, one tile each.

    ``fields`` is ``[n, C, H, W]``; ``operator_indices`` and ``families`` (the IC family of each) have
    length n. Every tile has its own colour scale, symmetric around zero (±max|u| of that field, with its
    own colour bar), since IC families differ in amplitude by orders of magnitude.
    """
    fields = np.asarray(fields)
    if fields.ndim != 4:
        raise ValueError(f"ic_grid expects [n, C, H, W] fields, got shape {fields.shape}")
    count = min(fields.shape[0], max_operators)
    if count == 0 or 0 in fields.shape[1:]:
        return _no_data("no initial conditions in this shard")
    channels, height, width = fields.shape[1:]
    columns = min(_IC_COLUMNS, count)
    rows = -(-count // columns)
    figure = _figure(2.3 * columns, 2.1 * rows)
    for i, axes in enumerate(figure.subplots(rows, columns, squeeze=False).ravel()):
        if i >= count:
            axes.set_axis_off()
            continue
        _ic_tile(axes, fields[i, channel], f"operator {operator_indices[i]}\n{families[i]}")
    caption = (
        f"Initial condition u(x, y), channel {channel} of {channels}, on the {height}×{width} grid, for "
        f"operators {_operator_list(operator_indices[:count])} (IC family under each operator). Each tile "
        f"has its own colour scale, symmetric around zero (±max|u| of that field): compare shapes across "
        f"tiles, amplitudes on the colour bars. Blue negative, white zero, red positive"
        f"{', magenta non-finite' if not np.isfinite(fields[:count, channel]).all() else ''}."
    )
    return Preview(figure, caption)


def _ic_tile(axes: Axes, field: np.ndarray, title: str) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad=NAN_COLOUR)
    finite = np.isfinite(field)
    magnitude = float(np.abs(field[finite]).max()) if finite.any() else 0.0
    limit = magnitude if magnitude > 0 else 1.0
    image = axes.imshow(np.ma.masked_invalid(field), cmap=cmap, vmin=-limit, vmax=limit, origin="lower")
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    bar = axes.figure.colorbar(image, ax=axes, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=7)


def energy_curves(
    series: np.ndarray,
    *,
    energy_column: int,
    operator_indices: Sequence[int],
    labels: Sequence[str] | None = None,
    max_operators: int = 4,
) -> Preview:
    """Energy ⟨u²⟩ (mean over channels) against time step on a log axis, one panel per operator and one
    line per realization.

    ``series`` is ``[n, M, T, C, K]`` with the energy in column ``energy_column``; ``operator_indices``
    (and optional ``labels``, e.g. the IC family) describe the n operators. Zero, negative or
    non-finite energies leave a gap. Each panel has its own y range. Realizations differ in colour and
    line style, so identical curves still show as several lines on top of each other.
    """
    series = np.asarray(series)
    if series.ndim != 5:
        raise ValueError(f"energy_curves expects [n, M, T, C, K] series, got shape {series.shape}")
    if not -series.shape[4] <= energy_column < series.shape[4]:
        raise IndexError(f"energy_column {energy_column} out of range for K={series.shape[4]}")
    count = min(series.shape[0], max_operators)
    if count == 0 or 0 in series.shape[1:4]:
        return _no_data("no rollouts in this shard")
    realizations, steps, channels = series.shape[1:4]
    energy = series[:count, ..., energy_column].astype(np.float64).mean(axis=-1)  # [k, M, T]
    energy[~(np.isfinite(energy) & (energy > 0))] = np.nan
    columns = 1 if count == 1 else 2
    rows = -(-count // columns)
    figure = _figure(4.2 * columns, 2.6 * rows + 0.5)
    panels = figure.subplots(rows, columns, squeeze=False, sharex=True)
    time = np.arange(steps)
    for i, axes in enumerate(panels.ravel()):
        if i >= count:
            axes.set_axis_off()
            continue
        title = f"operator {operator_indices[i]}" + (f" ({labels[i]})" if labels else "")
        _energy_panel(axes, time, energy[i], title)
        if i % columns == 0:
            axes.set_ylabel("energy ⟨u²⟩ (log scale)")
        if i // columns == rows - 1 or i + columns >= count:
            axes.set_xlabel("time step")
    handles, names = panels.ravel()[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside upper center", ncols=min(realizations, 6), fontsize=8)
    caption = (
        f"Energy ⟨u²⟩ (pixel mean of u², averaged over the {channels} channels) against time step "
        f"0–{steps - 1}, logarithmic y axis, for operators {_operator_list(operator_indices[:count])}; "
        f"one line per realization (M = {realizations}: same operator and initial condition, different "
        f"noise seeds); realizations that coincide show as dashed and dotted lines over a solid one. Each "
        f"panel has its own y range. Gaps: non-finite (diverged) or zero energy."
    )
    return Preview(figure, caption)


def _energy_panel(axes: Axes, time: np.ndarray, energy: np.ndarray, title: str) -> None:
    """One operator's curves, ``energy`` ``[M, T]`` (NaN where there is nothing to draw)."""
    from matplotlib import ticker

    axes.set_title(title, fontsize=9)
    axes.grid(True, which="major", alpha=0.3)
    for m, curve in enumerate(energy):
        style = _LINE_STYLES[m % len(_LINE_STYLES)]
        # Earlier realizations drawn wider: exactly overlapping curves stay visible as stacked strokes.
        axes.plot(
            time, curve, style, color=f"C{m % 10}", linewidth=2.4 - 0.5 * min(m, 3), label=f"realization {m}"
        )
    if np.isnan(energy).all():
        axes.text(0.5, 0.5, "no finite energy (diverged)", transform=axes.transAxes, ha="center", color="red")
        return
    axes.set_yscale("log", nonpositive="mask")
    if np.nanmax(energy) < 10 * np.nanmin(energy):
        # Within one decade the ticks are minor ones, labelled "8.45×10⁻¹" by default: plain numbers read
        # better. Wider ranges keep the 10ⁿ labels of the decades.
        plain = ticker.FuncFormatter(lambda value, _: f"{value:.4g}")
        axes.yaxis.set_major_formatter(plain)
        axes.yaxis.set_minor_formatter(plain)


def feature_matrix(
    data: np.ndarray,
    axes: Sequence[str],
    field_names: Sequence[str] | None,
    axis_labels: dict[str, Sequence[str]] | None = None,
) -> tuple[np.ndarray, list[str], str]:
    """Operators by features of a stored feature array, the column names, and the slice taken.

    ``data`` has ``axes`` (``"operator"`` first). The columns are its ``"feature"`` axis, named by
    ``field_names``; an array without one (a plugin family's ``("realization", "channel")``) shows its
    last axis, named by its labels or ``"channel 0"``, ``"channel 1"``, .... Every other axis is cut at
    its first entry (channel 0, realization 0, the first statistic) and the cut is named, e.g.
    ``"channel 0, statistic time_mean"``, so the caption can say what the map shows.
    """
    data = np.asarray(data)
    if len(axes) != data.ndim or axes[0] != "operator":
        raise ValueError(f"need axes ('operator', ...) for shape {data.shape}, got {axes}")
    labels = axis_labels or {}
    if data.ndim == 1:  # one value per operator
        return data[:, None], ["value"], ""
    columns = "feature" if "feature" in axes else axes[-1]
    if columns == "feature":
        names = list(field_names or ())
    else:
        names = list(labels.get(columns) or [f"{columns} {i}" for i in range(data.shape[-1])])
    index: list[int | slice] = []
    cuts: list[str] = []
    for axis in axes:
        if axis in ("operator", columns):
            index.append(slice(None))
            continue
        index.append(0)
        cuts.append(f"{axis} {labels[axis][0] if axis in labels else 0}")
    matrix = data[tuple(index)]
    if len(names) != matrix.shape[1]:
        raise ValueError(f"{len(names)} field names for {matrix.shape[1]} features")
    return matrix, names, ", ".join(cuts)


def _z_scores(matrix: np.ndarray) -> np.ndarray:
    """Per-column z-scores over the finite entries (NaN stays NaN; a constant column is 0)."""
    values = np.where(np.isfinite(matrix), matrix, np.nan).astype(np.float64)
    finite_columns = np.isfinite(values).any(axis=0)
    mean = np.zeros(values.shape[1])
    std = np.zeros(values.shape[1])
    mean[finite_columns] = np.nanmean(values[:, finite_columns], axis=0)
    std[finite_columns] = np.nanstd(values[:, finite_columns], axis=0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z = (values - mean) / np.where(std > 0, std, np.inf)
    return np.where(np.isfinite(values), z, np.nan)


def feature_heatmap(
    matrix: np.ndarray,
    feature_names: Sequence[str],
    *,
    operator_indices: Sequence[int],
    title: str,
) -> Preview:
    """Operators (rows) by named features (columns), each feature as a z-score over the shown operators.

    Features span many orders of magnitude, so each column is centred on its mean and divided by its
    standard deviation across the operators; one colour bar (clipped at ±3) then reads for every
    column. A constant column is white (z = 0); non-finite cells are magenta.
    """
    import matplotlib

    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"feature_heatmap expects [n_operators, n_features], got shape {values.shape}")
    if len(feature_names) != values.shape[1]:
        raise ValueError(f"{len(feature_names)} feature names for {values.shape[1]} columns")
    if 0 in values.shape:
        return _no_data(f"{title}: nothing to show")
    n_operators, n_features = values.shape
    figure = _figure(max(5.0, 0.17 * n_features + 2.8), max(3.2, 0.16 * n_operators + 2.2))
    axes = figure.subplots()
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad=NAN_COLOUR)
    image = axes.imshow(
        np.ma.masked_invalid(_z_scores(values)),
        cmap=cmap,
        vmin=-Z_LIMIT,
        vmax=Z_LIMIT,
        aspect="auto",
        interpolation="nearest",
    )
    axes.set_title(title, fontsize=10)
    axes.set_xticks(range(n_features), feature_names, rotation=90, fontsize=7)
    row_step = max(1, -(-n_operators // 32))  # at most ~32 operator labels stay legible
    rows = range(0, n_operators, row_step)
    axes.set_yticks(rows, [str(operator_indices[r]) for r in rows], fontsize=7)
    axes.set_xlabel("feature")
    axes.set_ylabel("operator")
    bar = figure.colorbar(image, ax=axes, extend="both", fraction=0.05)
    bar.set_label("z-score per feature")  # how each column was normalised: the caption says the rest
    caption = (
        f"{title}: operators {_operator_list(operator_indices)} (rows) by {n_features} features (columns). "
        f"Each column is normalised on its own: (value − column mean) / column standard deviation across "
        f"these {n_operators} operators, colours clipped at ±{Z_LIMIT:g}. A constant column is white; "
        f"magenta cells are non-finite."
    )
    return Preview(figure, caption)
