"""Seeded initial conditions (ICs) on a periodic 2-D grid: ``[C, H, W]`` float32 fields.

Four families, each with ``scale`` in [0, 1] (one unit-cube coordinate of the operator's parameters)
controlling its characteristic length; in every family a larger ``scale`` means larger structures:

- ``gaussian_random_field``: stationary Gaussian field with squared-exponential covariance
  ``exp(-r^2 / l^2)``, so ``l`` is the 1/e correlation length; ``l = (min(H, W) / 8) ** scale`` px,
  log-uniform from 1 px to ``min(H, W) / 8``.
- ``multiscale``: Gaussian field with power-law spectral density ``|k|^-beta`` (DC removed), spectral
  slope ``beta = 1 + 3 * scale`` (rough at 0, smooth at 1).
- ``blobs``: shot noise, ``K`` periodic Gaussian bumps of width ``sigma = (min(H, W) / 8) ** scale`` px at
  uniform pixel positions with random signs and magnitudes; ``K = max(1, round(H * W / (16 sigma^2)))``
  keeps the coverage fixed, so ``scale`` changes the blob size, not how sparse the field looks.
- ``structured``: plane wave (``sqrt(2) cos``), stripes (square wave) or checkerboard, type, orientation
  and phase random; wavenumber ``k = (min(H, W) / 4) ** (1 - scale)`` cycles per domain, rounded to an
  integer wave vector so the pattern is periodic on the torus.

Statistics: every family has zero mean and unit variance per pixel *in expectation*, by construction
(the amplitude is computed analytically from the filter or kernel, never by standardising the sample),
so the statistics tests check the construction. The original system's "GRF" was white noise of std
0.011 because of a wrong spectral filter; ``correlation_length`` is the check that catches that.

Randomness: channel ``k`` uses its own generator ``PCG64(SeedSequence(seed).spawn(C)[k])``, whose
stream depends only on ``(seed, k)``, so channel ``k`` is the same field whatever ``C`` is.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["IC_FAMILIES", "correlation_length", "initial_condition"]

IC_FAMILIES: tuple[str, ...] = ("gaussian_random_field", "multiscale", "blobs", "structured")
_STRUCTURED_TYPES = ("wave", "stripes", "checkerboard")


def _wavenumbers(height: int, width: int) -> np.ndarray:
    """``[H, W]`` angular wavenumber magnitude (radians per pixel) on the full FFT grid."""
    ky = 2.0 * np.pi * np.fft.fftfreq(height)[:, None]
    kx = 2.0 * np.pi * np.fft.fftfreq(width)[None, :]
    return np.sqrt(ky**2 + kx**2)


def _filtered_noise(amplitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White noise filtered by a real, even spectral ``amplitude`` [H, W] (full FFT grid).

    With ortho FFTs the white noise has E|w_k|^2 = 1 at every k, so the pixel variance is
    ``sum(amplitude^2) / (H W)``; the amplitude is rescaled so that this is exactly 1.
    """
    height, width = amplitude.shape
    amplitude = amplitude * math.sqrt(height * width / float(np.sum(amplitude**2)))
    white = rng.standard_normal((height, width))
    half = amplitude[:, : width // 2 + 1]  # the even filter restricted to the rfft half-plane
    return np.fft.irfft2(np.fft.rfft2(white, norm="ortho") * half, s=(height, width), norm="ortho")


def _gaussian_random_field(scale: float, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    ell = (min(height, width) / 8.0) ** scale
    # Covariance exp(-r^2/l^2) <=> spectral density exp(-k^2 l^2 / 4) <=> amplitude exp(-k^2 l^2 / 8).
    return _filtered_noise(np.exp(-(_wavenumbers(height, width) ** 2) * ell**2 / 8.0), rng)


def _multiscale(scale: float, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    beta = 1.0 + 3.0 * scale
    k = _wavenumbers(height, width)
    k[0, 0] = 1.0  # placeholder, zeroed below: a power law has no finite DC value
    amplitude = k ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    if height * width == 1:  # a single pixel has only DC; fall back to white noise
        amplitude[0, 0] = 1.0
    return _filtered_noise(amplitude, rng)


def _blobs(scale: float, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (min(height, width) / 8.0) ** scale
    count = max(1, round(height * width / (16.0 * sigma**2)))
    dy = np.minimum(np.arange(height), height - np.arange(height))[:, None]  # periodic distance
    dx = np.minimum(np.arange(width), width - np.arange(width))[None, :]
    kernel = np.exp(-(dy**2 + dx**2) / (2.0 * sigma**2))
    # Shot noise u = sum_j a_j g(x - c_j), c_j uniform on the pixels, a_j = +-U(0.5, 1.5) (E a^2 = 13/12):
    # E u = 0 and Var u = K E[a^2] sum(g^2) / (H W), exactly; divide by its square root.
    spikes = np.zeros(height * width)
    positions = rng.integers(0, height * width, size=count)
    amplitudes = rng.choice([-1.0, 1.0], size=count) * rng.uniform(0.5, 1.5, size=count)
    np.add.at(spikes, positions, amplitudes)  # add.at: two blobs may share a pixel
    field = np.fft.irfft2(
        np.fft.rfft2(spikes.reshape(height, width)) * np.fft.rfft2(kernel), s=(height, width)
    )
    return field / math.sqrt(count * (13.0 / 12.0) * float(np.sum(kernel**2)) / (height * width))


def _structured(scale: float, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    kind = _STRUCTURED_TYPES[int(rng.integers(len(_STRUCTURED_TYPES)))]
    k = max(1.0, min(height, width) / 4.0) ** (1.0 - scale)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=2)
    # Integer wave vector (cycles per domain): the pattern is periodic. max(|cos|,|sin|) >= 1/sqrt(2)
    # and k >= 1, so it is never zero.
    ky, kx = round(k * math.sin(theta)), round(k * math.cos(theta))
    y = np.arange(height)[:, None] / height
    x = np.arange(width)[None, :] / width
    arg1 = 2.0 * np.pi * (ky * y + kx * x) + phases[0]
    if kind == "wave":  # spatial mean of 2 cos^2 is exactly 1 for a nonzero, sub-Nyquist wave vector
        return math.sqrt(2.0) * np.cos(arg1)
    stripes = np.where(np.cos(arg1) >= 0.0, 1.0, -1.0)  # +-1 everywhere: variance exactly 1
    if kind == "stripes":
        return stripes
    arg2 = 2.0 * np.pi * (kx * y - ky * x) + phases[1]  # the perpendicular wave vector
    return stripes * np.where(np.cos(arg2) >= 0.0, 1.0, -1.0)


_GENERATORS = {
    "gaussian_random_field": _gaussian_random_field,
    "multiscale": _multiscale,
    "blobs": _blobs,
    "structured": _structured,
}


def initial_condition(
    family: str, *, scale: float, channels: int, height: int, width: int, seed: int
) -> np.ndarray:
    """One seeded initial condition, ``[C, H, W]`` float32, C-contiguous.

    ``family`` is one of ``IC_FAMILIES``; ``scale`` in [0, 1] sets the characteristic length (see the
    module docstring); ``seed`` is a non-negative integer. Same arguments give identical bytes; channel
    ``k`` depends only on ``(family, scale, height, width, seed, k)``. Raises ``ValueError`` on any bad
    argument before doing any work.
    """
    if family not in IC_FAMILIES:
        raise ValueError(f"family must be one of {IC_FAMILIES}, got {family!r}")
    if not isinstance(scale, (int, float, np.floating, np.integer)) or not 0.0 <= float(scale) <= 1.0:
        raise ValueError(f"scale must be a number in [0, 1], got {scale!r}")
    for name, value in (("channels", channels), ("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    make = _GENERATORS[family]
    children = np.random.SeedSequence(int(seed)).spawn(int(channels))
    out = np.empty((int(channels), int(height), int(width)), dtype=np.float32)
    for k, child in enumerate(children):
        out[k] = make(float(scale), int(height), int(width), np.random.Generator(np.random.PCG64(child)))
    return out


def correlation_length(field: np.ndarray) -> float:
    """1/e correlation length, in pixels, of a periodic field ``[..., H, W]``.

    The autocorrelation is computed per ``[H, W]`` field via FFT (Wiener-Khinchin, periodic lags, each
    field's own mean removed), averaged over any leading axes (e.g. channels), normalised to 1 at lag 0
    and averaged radially in bins of rounded lag distance ``r = 0 .. min(H, W) // 2``. The result is the
    first crossing below 1/e, linearly interpolated between the mean distances of the two bins around
    it, so it is a real number (for the GRF family it estimates the designed ``l``). White noise gives
    about 0.5-0.8 px. Returns ``nan`` for a field with zero variance and ``inf`` if the ACF stays above
    1/e out to half the domain.
    """
    arr = np.asarray(field, dtype=np.float64)
    if arr.ndim < 2:
        raise ValueError(f"field must have shape [..., H, W] with at least 2 dims, got shape {arr.shape}")
    height, width = arr.shape[-2:]
    arr = arr.reshape(-1, height, width)
    arr = arr - arr.mean(axis=(-2, -1), keepdims=True)
    spectrum = np.abs(np.fft.rfft2(arr)) ** 2
    acf = np.fft.irfft2(spectrum, s=(height, width)).mean(axis=0)
    if not np.isfinite(acf[0, 0]) or acf[0, 0] <= 0.0:
        return float("nan")
    acf = acf / acf[0, 0]
    dy = np.minimum(np.arange(height), height - np.arange(height))[:, None]
    dx = np.minimum(np.arange(width), width - np.arange(width))[None, :]
    dist = np.sqrt(dy**2 + dx**2)
    bins = np.rint(dist).astype(np.int64).ravel()
    n_bins = min(height, width) // 2 + 1
    counts = np.bincount(bins, minlength=n_bins)[:n_bins]
    radial = np.bincount(bins, weights=acf.ravel(), minlength=n_bins)[:n_bins] / np.maximum(counts, 1)
    radius = np.bincount(bins, weights=dist.ravel(), minlength=n_bins)[:n_bins] / np.maximum(counts, 1)
    threshold = math.exp(-1.0)
    below = np.nonzero(radial < threshold)[0]
    if below.size == 0:
        return float("inf")
    i = int(below[0])  # i >= 1 since radial[0] == 1
    r0, r1, a0, a1 = radius[i - 1], radius[i], radial[i - 1], radial[i]
    return float(r0 + (a0 - threshold) / (a0 - a1) * (r1 - r0))
