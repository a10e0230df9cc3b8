"""Periodic Fourier helpers (spectra, wavenumbers, Gaussian low-pass) of the families F1 ``spectral`` and F3
``invariant_drift``.

Conventions (design doc, "Conventions for this section"):

- Fields are periodic ``[..., H, W]`` float32 tensors; ``x`` is the last axis (W), ``y`` the one before (H).
- ``P = |rfft2(u, norm="ortho")|**2`` on the half plane ``kx = 0..W//2``. Every column whose conjugate partner
  ``-kx`` is not stored in the half plane (``0 < kx`` and ``2*kx != W``) is weighted x2, so that
  ``sum(P_weighted) == sum_px u**2`` (Parseval), for even and odd W.
- Wavenumbers are integers in cycles per domain in each direction: ``kx = 0..W//2`` and ``ky`` wrapped to
  ``[-H/2, H/2)`` (``torch.fft.fftfreq`` order). On non-square grids ``k = sqrt(kx**2 + ky**2)`` therefore
  mixes cycles per domain width with cycles per domain height (the grid is treated as a unit square).
"""

from __future__ import annotations

import math

from ..lazy_torch import torch

__all__ = [
    "gaussian_lowpass",
    "gaussian_multiplier",
    "half_plane_weights",
    "power_spectrum",
    "wavenumbers",
]


def wavenumbers(
    height: int, width: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer rfft2 half-plane wavenumbers (float32): ``ky`` ``[H, 1]`` and ``kx`` ``[1, W//2+1]``.

    ``ky`` follows ``torch.fft.fftfreq`` order (row index of rfft2), ``kx`` is ``0..W//2`` (column index).
    """
    ky = torch.fft.fftfreq(height, d=1.0 / height, dtype=torch.float64).round()
    kx = torch.fft.rfftfreq(width, d=1.0 / width, dtype=torch.float64).round()
    return (
        ky.to(device=device, dtype=torch.float32).reshape(height, 1),
        kx.to(device=device, dtype=torch.float32).reshape(1, width // 2 + 1),
    )


def half_plane_weights(width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Parseval weights ``[W//2+1]`` float32: 1 for kx=0 (and kx=W/2 when W is even), else 2."""
    kx = torch.arange(width // 2 + 1)
    # These columns have no conjugate partner missing from the half plane, so they count once.
    single = (kx == 0) | (2 * kx == width)
    return torch.where(single, 1.0, 2.0).to(device=device, dtype=torch.float32)


def power_spectrum(u: torch.Tensor) -> torch.Tensor:
    """Unweighted power ``|rfft2(u, norm="ortho")|**2``: ``[..., H, W]`` -> ``[..., H, W//2+1]`` float32.

    Multiply by ``half_plane_weights(W)`` to get the Parseval-weighted P of the design doc.
    """
    spectrum = torch.fft.rfft2(u, norm="ortho")
    return spectrum.real.square() + spectrum.imag.square()


def gaussian_multiplier(
    height: int, width: int, sigma: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Fourier multiplier ``exp(-2 pi^2 sigma^2 (kx^2/W^2 + ky^2/H^2))`` on the full ``[H, W]`` fft2 grid.

    This is the transfer function of a periodic Gaussian blur of standard deviation ``sigma`` pixels.
    Built in float64 so the multiplier itself carries no float32 rounding of the exponent.
    """
    ky = torch.fft.fftfreq(height, d=1.0 / height, dtype=torch.float64).reshape(height, 1)
    kx = torch.fft.fftfreq(width, d=1.0 / width, dtype=torch.float64).reshape(1, width)
    exponent = -2.0 * math.pi**2 * sigma**2 * (kx**2 / width**2 + ky**2 / height**2)
    return torch.exp(exponent).to(device=device, dtype=torch.float32)


def gaussian_lowpass(u: torch.Tensor, sigma: float, multiplier: torch.Tensor | None = None) -> torch.Tensor:
    """Periodic Gaussian low-pass of ``u`` ``[..., H, W]`` (same shape), applied as a Fourier multiplier.

    Uses the complex fft2/ifft2 pair rather than rfft2/irfft2: on the MKL CPU backend the batched
    complex-to-real inverse rounds differently with the intra-op thread count, the complex one does not.
    The imaginary part of the result is rounding noise (the multiplier is real and even) and is dropped.
    ``multiplier`` may be passed to reuse a precomputed ``gaussian_multiplier`` for the same grid and sigma.
    """
    height, width = u.shape[-2:]
    if multiplier is None:
        multiplier = gaussian_multiplier(height, width, sigma, u.device)
    return torch.fft.ifft2(torch.fft.fft2(u) * multiplier).real
