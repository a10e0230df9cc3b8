"""Metadata figures: what a scientist reads off them (labels, log axes, legends, colour bars, feature names,
captions) checked on the figure's artists before rendering, and PNGs that decode at the figure's size."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from spinlock_assets.figures import plots

# A RuntimeWarning (overflow, 0/0, log of 0) means a figure was drawn from garbage: fail on it.
pytestmark = pytest.mark.filterwarnings("error")

RNG = np.random.default_rng(0)


def texts(figure: Figure) -> set[str]:
    """Every non-empty string the figure draws (titles, labels, tick labels, legend, colour bar)."""
    figure.canvas.draw()  # tick labels are only formatted on draw
    return {text.get_text() for text in figure.findobj(Text) if text.get_text()}


def data_axes(figure: Figure) -> list[Axes]:
    """The axes that show data (not colour bars, not switched off)."""
    return [a for a in figure.axes if a.axison and not hasattr(a, "_colorbar")]


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def series(n: int = 4, m: int = 3, t: int = 10, c: int = 2, k: int = 10) -> np.ndarray:
    growth = np.exp(np.linspace(0, 3, t))[None, None, :, None]
    data = np.ones((n, m, t, c, k)) * growth[..., None]
    return (data * (1 + 0.1 * np.arange(m))[None, :, None, None, None]).astype(np.float32)


def energy(data: np.ndarray, n: int | None = None) -> plots.Preview:
    n = data.shape[0] if n is None else n
    return plots.energy_curves(data, energy_column=4, operator_indices=range(100, 100 + n))


def ic(fields: np.ndarray) -> plots.Preview:
    n = fields.shape[0]
    return plots.ic_grid(fields, operator_indices=range(40, 40 + n), families=["blobs"] * n)


def heatmap(matrix: np.ndarray) -> plots.Preview:
    names = [f"feature_{j}" for j in range(matrix.shape[1])]
    return plots.feature_heatmap(
        matrix, names, operator_indices=range(8, 8 + matrix.shape[0]), title="spectral / summary"
    )


def test_png_decodes_at_the_figure_size() -> None:
    preview = energy(series())
    width, height = preview.figure.get_size_inches() * plots.DPI
    image = decode(preview.png)
    assert image.format == "PNG" and image.mode == "P"  # a 256-colour palette keeps the event log small
    assert image.size == (round(width), round(height))
    assert len(preview.png) < 60_000  # a metadata entry, not an attachment


def test_energy_curves_use_a_named_log_axis_and_one_line_per_realization() -> None:
    preview = energy(series(n=4, m=3))
    axes = data_axes(preview.figure)
    assert len(axes) == 4
    for panel in axes:
        assert panel.get_yscale() == "log"
        assert len(panel.get_lines()) == 3
    words = texts(preview.figure)
    assert {"operator 100", "operator 103", "time step", "energy ⟨u²⟩ (log scale)"} <= words
    assert {"realization 0", "realization 1", "realization 2"} <= words  # the legend
    assert "log" in preview.caption and "100–103" in preview.caption and "M = 3" in preview.caption


def test_coinciding_realizations_stay_distinguishable() -> None:
    data = np.ones((1, 3, 5, 1, 10), dtype=np.float32)  # three identical curves
    lines = data_axes(energy(data).figure)[0].get_lines()
    assert len({(line.get_linestyle(), line.get_color(), line.get_linewidth()) for line in lines}) == 3


def test_energy_curves_plot_the_channel_mean_energy_with_gaps_for_non_finite_or_zero() -> None:
    data = series(n=1, m=1, t=5, c=2)
    data[0, 0, 2, 0, 4] = np.nan
    data[0, 0, 3, :, 4] = 0.0
    line = data_axes(energy(data).figure)[0].get_lines()[0]
    y = np.asarray(line.get_ydata(), dtype=np.float64)
    expected = data[0, 0, :, :, 4].astype(np.float64).mean(axis=-1)
    assert np.isnan(y[2]) and np.isnan(y[3])
    np.testing.assert_allclose(y[[0, 1, 4]], expected[[0, 1, 4]])


def test_energy_curves_label_operators_with_their_family_and_say_when_all_diverged() -> None:
    data = series(n=2)
    data[1] = np.nan
    preview = plots.energy_curves(
        data, energy_column=4, operator_indices=[5, 9], labels=["blobs", "structured"]
    )
    words = texts(preview.figure)
    assert {"operator 5 (blobs)", "operator 9 (structured)", "no finite energy (diverged)"} <= words
    decode(preview.png)


def test_energy_within_one_decade_is_labelled_with_plain_numbers() -> None:
    data = np.ones((1, 1, 5, 1, 10), dtype=np.float32)
    data[0, 0, :, 0, 4] = np.linspace(0.840, 0.848, 5)
    panel = data_axes(energy(data).figure)[0]
    panel.figure.canvas.draw()
    labels = [
        t.get_text() for t in panel.get_yticklabels(minor=True) + panel.get_yticklabels() if t.get_text()
    ]
    assert labels and all("10^" not in label and "times" not in label for label in labels), labels
    assert "0.844" in labels


def test_energy_curves_reject_a_column_outside_k() -> None:
    with pytest.raises(IndexError):
        plots.energy_curves(series(k=3), energy_column=3, operator_indices=range(4))


def test_ic_grid_names_operators_families_and_gives_each_tile_its_own_symmetric_scale() -> None:
    fields = RNG.standard_normal((3, 2, 8, 8)) * np.array([1.0, 10.0, 100.0])[:, None, None, None]
    preview = plots.ic_grid(fields, operator_indices=[40, 41, 42], families=["blobs", "multiscale", "blobs"])
    images = [a.get_images()[0] for a in data_axes(preview.figure) if a.get_images()]
    assert len(images) == 3
    for i, image in enumerate(images):
        limit = np.abs(fields[i, 0]).max()
        assert image.get_clim() == pytest.approx((-limit, limit))
        assert image.colorbar is not None  # every tile's own scale is shown next to it
    assert {"operator 40\nblobs", "operator 41\nmultiscale"} <= texts(preview.figure)
    assert "channel 0 of 2" in preview.caption and "40–42" in preview.caption
    assert "own colour scale" in preview.caption


def test_ic_grid_shows_at_most_max_operators_and_masks_non_finite_pixels() -> None:
    fields = RNG.standard_normal((12, 1, 6, 6))
    fields[0, 0, 1, 1] = np.inf
    preview = plots.ic_grid(fields, operator_indices=range(12), families=["grf"] * 12, max_operators=8)
    images = [a.get_images()[0] for a in data_axes(preview.figure) if a.get_images()]
    assert len(images) == 8
    shown = images[0].get_array()
    assert shown.mask[1, 1] and shown.mask.sum() == 1
    assert "0–7" in preview.caption and "magenta non-finite" in preview.caption


def test_feature_heatmap_z_scores_each_column_and_names_every_feature() -> None:
    matrix = np.column_stack([np.arange(5.0), 1e6 * np.arange(5.0) + 3, np.full(5, 7.0)])
    matrix[4, 0] = np.nan
    preview = heatmap(matrix)
    (image,) = data_axes(preview.figure)[0].get_images()
    z = image.get_array()
    finite = matrix[:4, 0]
    np.testing.assert_allclose(z[:4, 0], (finite - finite.mean()) / finite.std())
    assert z.mask[4, 0]  # non-finite: masked, drawn magenta
    np.testing.assert_allclose(z[:, 1], z[:, 2] * 0 + (np.arange(5) - 2) / np.sqrt(2))  # scale-free
    np.testing.assert_array_equal(z[:, 2], 0.0)  # a constant column is z = 0, white
    assert image.get_clim() == (-plots.Z_LIMIT, plots.Z_LIMIT)
    words = texts(preview.figure)
    assert {"feature_0", "feature_1", "feature_2", "8", "12", "operator", "feature"} <= words
    assert "z-score per feature" in words  # the colour bar's label
    assert "8–12" in preview.caption and "standard deviation" in preview.caption


def test_feature_heatmap_requires_one_name_per_column() -> None:
    with pytest.raises(ValueError, match="feature names"):
        plots.feature_heatmap(np.ones((2, 3)), ["a", "b"], operator_indices=[0, 1], title="t")


def test_feature_matrix_cuts_other_axes_at_their_first_entry_and_names_the_cut() -> None:
    data = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    matrix, columns, cut = plots.feature_matrix(
        data,
        ("operator", "channel", "feature", "statistic"),
        ["a", "b", "c", "d"],
        {"statistic": ("time_mean", "time_std")},
    )
    np.testing.assert_array_equal(matrix, data[:, 0, :, 0])
    assert columns == ["a", "b", "c", "d"] and cut == "channel 0, statistic time_mean"
    plain, _, none = plots.feature_matrix(data[:, 0, :, 0], ("operator", "feature"), ["a", "b", "c", "d"])
    assert none == "" and plain.shape == (2, 4)
    with pytest.raises(ValueError, match="field names"):
        plots.feature_matrix(data, ("operator", "channel", "feature", "statistic"), ["a"])
    with pytest.raises(ValueError, match="need axes"):
        plots.feature_matrix(data, ("channel", "operator", "x", "statistic"), ["a"])


def test_feature_matrix_of_an_array_without_a_feature_axis_shows_its_last_axis() -> None:
    """A plugin family may store ``("realization", "channel")`` per operator: its map shows the channels."""
    data = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    matrix, columns, cut = plots.feature_matrix(data, ("operator", "realization", "channel"), ())
    np.testing.assert_array_equal(matrix, data[:, 0, :])
    assert columns == ["channel 0", "channel 1"] and cut == "realization 0"
    labelled, columns, _ = plots.feature_matrix(
        data, ("operator", "realization", "channel"), None, {"channel": ("u", "v")}
    )
    assert columns == ["u", "v"]
    per_operator, columns, _ = plots.feature_matrix(data[:, 0, 0], ("operator",), None)
    assert per_operator.shape == (2, 1) and columns == ["value"]


@pytest.mark.parametrize(
    "preview",
    [
        lambda: energy(np.full((2, 2, 4, 1, 10), np.nan, dtype=np.float32)),
        lambda: ic(np.full((2, 1, 4, 4), np.nan)),
        lambda: heatmap(np.full((3, 2), np.nan)),
    ],
    ids=["energy", "ic", "heatmap"],
)
def test_all_non_finite_inputs_render_without_error(preview) -> None:
    decode(preview().png)


@pytest.mark.parametrize(
    "preview",
    [
        lambda: energy(np.zeros((0, 2, 4, 1, 10), dtype=np.float32), n=0),
        lambda: ic(np.zeros((0, 1, 4, 4))),
        lambda: heatmap(np.zeros((0, 2))),
    ],
    ids=["energy", "ic", "heatmap"],
)
def test_empty_inputs_say_there_is_nothing_to_show(preview) -> None:
    shown = preview()
    assert "no " in shown.caption or "nothing" in shown.caption
    assert shown.caption in texts(shown.figure)
    decode(shown.png)


def test_pngs_are_deterministic() -> None:
    assert energy(series()).png == energy(series()).png
    fields = np.random.default_rng(1).standard_normal((4, 1, 8, 8))
    assert ic(fields).png == ic(fields).png


def test_markdown_embeds_the_png_and_shows_the_caption_under_it() -> None:
    preview = heatmap(np.eye(3))
    markdown = preview.markdown()
    image, caption = markdown.split("\n\n")
    assert (
        image.startswith("![spectral / summary: operators 8–10") and "[" not in image[2 : image.index("](")]
    )
    encoded = image[image.index("base64,") + len("base64,") : -1]
    assert base64.b64decode(encoded) == preview.png
    assert caption == preview.caption


def test_plots_import_neither_torch_nor_dagster_and_matplotlib_only_when_drawing() -> None:
    code = (
        "import sys, numpy as np\n"
        "from spinlock_assets.figures import plots\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported with the module'\n"
        "plots.ic_grid(np.ones((1, 1, 4, 4)), operator_indices=[0], families=['blobs']).png\n"
        "assert 'matplotlib' in sys.modules\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot keeps global state'\n"
        "bad = sorted(m for m in ('torch', 'dagster') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
