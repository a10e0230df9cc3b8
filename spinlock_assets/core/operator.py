"""The stochastic CNN operator O and its update policies.

Architecture (``L = n_layers`` convolutions, circular padding so fields live on a torus)::

    h = x                                              # [B, C, H, W]
    for l in 0 .. L-2:                                 # hidden layers
        h = act(instance_norm(conv_l(h))) + sigma * xi_l   # xi_l ~ N(0, I), [B, width, H, W]
    O(x) = conv_{L-1}(h) + bias                        # back to C channels

Instance normalisation uses each sample's own statistics, never the batch's, so realization m does
not depend on which realizations share its batch. Its epsilon is 1 (``(z - mean)/sqrt(var + 1)``), not
the usual 1e-5: with a vanishing epsilon the operator would be exactly scale-invariant
(O(a*x) = O(x) for every a > 0) and amplitude-blind; with a unit epsilon small fields pass almost
linearly and large ones saturate. Normalisation removes any per-channel offset, so hidden
convolutions carry no bias, and ``weight_gain`` scales the output convolution.
It is computed as ``F.group_norm`` with one group per channel (the same definition as
``F.instance_norm``, equal up to rounding): one fused kernel, about 5x cheaper than
``F.instance_norm`` on the CPU, and each (sample, channel) is reduced by one thread in a fixed order,
so its bits depend neither on the batch nor on the thread count (tested).

Convolutions are ``F.conv2d`` on the circularly padded input, except, on the CPU, layers with fewer than
``NARROW_CONV_CHANNELS`` outputs (always the output layer): oneDNN computes those at the cost of 16
output channels, so they run as one matrix product of the padded input with the stacked k*k taps,
followed by k*k shifted adds in a fixed order (:func:`_narrow_conv`: one product per sample, the adds on
the whole batch). Same convolution, other rounding; 1.4-2.7x faster for the output layers of the default
parameter space.

Activations: relu, gelu, tanh, and silu computed as ``x * (1 + tanh(x/2)) / 2`` (:func:`_silu`): every
elementwise op of a step rounds alike in ATen's vectorised body and scalar tail, so a sample's bits do not
depend on its slot in a batch (the batched engine, :mod:`.batching`, relies on it).

Weights are drawn on the CPU from ``torch.Generator().manual_seed(weight_seed)`` in this fixed order:
for l = 0..L-1 the weight ``[out, in, k, k]`` with ``randn`` (std ``1/sqrt(in*k*k)``, times
``weight_gain`` for the last layer), then the output bias ``[C]`` with ``rand`` mapped to
``[-1, 1]/sqrt(fan_in)``. Drawing on the CPU makes the weights identical on every device.

Policies (``x`` the state, ``o = O(x)``): autoregressive ``o``; residual ``x + dt*o``;
convex ``x + alpha*(o - x)`` (``torch.lerp``), i.e. ``(1-alpha)*x + alpha*o``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .parameters import OperatorHyperparameters

__all__ = [
    "Convolve",
    "GeneratorNoise",
    "NoiseSource",
    "OperatorStep",
    "StochasticCNN",
    "build_operator",
    "conv_layer",
    "layer_taps",
]

INSTANCE_NORM_EPS = 1.0
# On the CPU, layers with fewer output channels than this run as _narrow_conv: oneDNN computes output
# channels in blocks of 16, so a conv to 3 channels costs about as much as one to 16 (measured here:
# ~17 GFLOP/s against ~90 for the hidden layers, one thread), while _narrow_conv is 1.4-2.7x faster.
NARROW_CONV_CHANNELS = 16

# A noise source fills a hidden activation's noise: called as noise(layer_index, like) -> tensor shaped
# like ``like`` (or broadcastable to it).
NoiseSource = Callable[[int, torch.Tensor], torch.Tensor]
# A convolution as the operator runs it: called as convolve(layer_index, padded) -> [B, out, H, W].
Convolve = Callable[[int, torch.Tensor], torch.Tensor]


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU ``x * sigmoid(x)`` computed as ``x * (1 + tanh(x/2)) / 2``. ``F.silu`` (and ``torch.sigmoid``)
    round the last ``n mod 32`` elements of a tensor, which ATen computes with scalar code, differently from
    the vectorised rest, so a sample's bits would depend on where it sits in a batch; tanh, add and mul
    round alike on both paths (tested)."""
    return torch.tanh(x * 0.5).add_(1.0).mul_(x).mul_(0.5)


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return {"relu": F.relu, "gelu": F.gelu, "tanh": F.tanh, "silu": _silu}[name]


def _instance_norm(z: torch.Tensor) -> torch.Tensor:
    """``(z - mean) / sqrt(var + INSTANCE_NORM_EPS)`` per (sample, channel) of ``z`` ``[B, K, H, W]``
    (biased variance over the H*W pixels)."""
    return F.group_norm(z, z.shape[1], eps=INSTANCE_NORM_EPS)


def _narrow_conv(
    padded: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None, kernel: int
) -> torch.Tensor:
    """A convolution with few output channels as one matrix product per sample and k*k shifted adds
    ("kn2row").

    ``padded`` ``[B, I, H+k-1, W+k-1]``, ``taps`` ``[k*k*O, I]`` (rows in (dy, dx, o) order), ``bias``
    ``[O]`` or None. Per sample, ``g = taps @ x`` holds every tap's contribution at every padded pixel,
    then ``out[o, y, x] = bias[o] + sum over (dy, dx) of g[(dy, dx, o), y+dy, x+dx]``, added in (dy, dx)
    order. The products are computed sample by sample (one GEMM of a fixed shape each) and the adds are
    exact elementwise float additions in a fixed order, so a sample's bits depend neither on the batch
    size nor on its neighbours or slot; the adds run on the whole batch at once (k*k ops, not B*k*k).
    """
    batch, in_channels, padded_h, padded_w = padded.shape
    out_channels = taps.shape[0] // (kernel * kernel)
    height, width = padded_h - kernel + 1, padded_w - kernel + 1
    g = torch.empty((batch, taps.shape[0], padded_h * padded_w), dtype=padded.dtype, device=padded.device)
    for b in range(batch):
        torch.mm(taps, padded[b].reshape(in_channels, padded_h * padded_w), out=g[b])
    g = g.view(batch, kernel, kernel, out_channels, padded_h, padded_w)
    out = torch.zeros((batch, out_channels, height, width), dtype=padded.dtype, device=padded.device)
    if bias is not None:
        out += bias.view(1, out_channels, 1, 1)
    for dy in range(kernel):
        for dx in range(kernel):
            out += g[:, dy, dx, :, dy : dy + height, dx : dx + width]
    return out


def conv_layer(
    padded: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, taps: torch.Tensor | None = None
) -> torch.Tensor:
    """One convolution as the engine computes it: ``padded`` ``[B, in, H+k-1, W+k-1]`` -> ``[B, out, H, W]``.
    Layers with fewer than ``NARROW_CONV_CHANNELS`` outputs on the CPU run as :func:`_narrow_conv` (``taps``
    from :func:`layer_taps`, built here when not given); every other layer is ``F.conv2d``."""
    if weight.shape[0] < NARROW_CONV_CHANNELS and weight.device.type == "cpu":
        return _narrow_conv(padded, layer_taps(weight) if taps is None else taps, bias, weight.shape[-1])
    return F.conv2d(padded, weight, bias)


def layer_taps(weight: torch.Tensor) -> torch.Tensor:
    """A weight ``[out, in, k, k]`` as the ``[k*k*out, in]`` matrix of its taps, rows in (dy, dx, out)
    order (the narrow convolution's left operand)."""
    return weight.permute(2, 3, 0, 1).reshape(-1, weight.shape[1]).contiguous()


@dataclass
class StochasticCNN:
    """One rebuilt operator: its hyperparameters and weights on ``device``."""

    hyperparameters: OperatorHyperparameters
    weights: list[torch.Tensor]  # [out, in, k, k] per layer
    output_bias: torch.Tensor  # [C]

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def apply(
        self, x: torch.Tensor, noise: NoiseSource | None, *, convolve: Convolve | None = None
    ) -> torch.Tensor:
        """O(x) for ``x`` of shape ``[B, C, H, W]``; ``noise=None`` gives the noise-free operator.
        ``convolve(layer, padded)`` replaces :meth:`convolve` (the batched engine passes one that runs
        the convolutions at its canonical batch size)."""
        activation = _activation(self.hyperparameters.activation)
        sigma = self.hyperparameters.noise_sigma
        pad = (self.hyperparameters.kernel_size // 2,) * 4
        convolve = self.convolve if convolve is None else convolve
        h = x
        for layer in range(len(self.weights) - 1):
            h = activation(_instance_norm(convolve(layer, F.pad(h, pad, mode="circular"))))
            if noise is not None:
                h = h.add_(noise(layer, h), alpha=sigma)
        return convolve(len(self.weights) - 1, F.pad(h, pad, mode="circular"))

    def convolve(self, layer: int, padded: torch.Tensor) -> torch.Tensor:
        """Convolution ``layer`` (with the output bias for the last one) of an already padded input
        ``[B, in, H+k-1, W+k-1]`` -> ``[B, out, H, W]``, as :func:`conv_layer` computes it."""
        bias = self.output_bias if layer == len(self.weights) - 1 else None
        return conv_layer(padded, self.weights[layer], bias, self._taps(layer))

    def _taps(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s :func:`layer_taps`, built once per operator."""
        cache = self.__dict__.setdefault("_tap_cache", {})
        if layer not in cache:
            cache[layer] = layer_taps(self.weights[layer])
        return cache[layer]

    def update(self, x: torch.Tensor, o: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """The policy update of state ``x`` given ``o = O(x)`` (written into ``out`` when given)."""
        policy = self.hyperparameters.policy
        if policy == "autoregressive":
            return o if out is None else out.copy_(o)
        if policy == "residual":
            return torch.add(x, o, alpha=self.hyperparameters.dt, out=out)
        return torch.lerp(x, o, self.hyperparameters.alpha, out=out)

    def step(self, x: torch.Tensor, noise: NoiseSource | None) -> torch.Tensor:
        """F(x) = policy(x, O(x))."""
        return self.update(x, self.apply(x, noise))


def build_operator(
    hyperparameters: OperatorHyperparameters,
    *,
    channels: int,
    weight_seed: int,
    device: str | torch.device = "cpu",
) -> StochasticCNN:
    """Build the operator's weights from ``weight_seed`` (see the module docstring for the draw order)."""
    generator = torch.Generator(device="cpu").manual_seed(weight_seed)
    hp = hyperparameters
    sizes = [channels] + [hp.width] * (hp.n_layers - 1) + [channels]
    weights = []
    for layer, (fan_in_channels, out_channels) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        fan_in = fan_in_channels * hp.kernel_size**2
        scale = 1.0 / math.sqrt(fan_in)
        if layer == hp.n_layers - 1:
            scale *= hp.weight_gain
        shape = (out_channels, fan_in_channels, hp.kernel_size, hp.kernel_size)
        weights.append(torch.randn(shape, generator=generator, dtype=torch.float32).mul_(scale))
    fan_in = hp.width * hp.kernel_size**2
    bias = (
        torch.rand(channels, generator=generator, dtype=torch.float32).mul_(2).sub_(1).div_(math.sqrt(fan_in))
    )
    return StochasticCNN(hp, [w.to(device) for w in weights], bias.to(device))


class GeneratorNoise:
    """Hidden-layer noise drawn from one generator: each call draws one ``[1, width, H, W]`` standard normal
    tensor (broadcast over the batch), so the draw order is fixed: per operator call, per hidden layer.

    A rollout keeps one per realization for the whole rollout (realization m's noise comes only from
    its own seed); the probe step map makes a fresh one per call (common random numbers).
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.generator = torch.Generator(device=device).manual_seed(int(seed))
        self._buffer: torch.Tensor | None = None

    def __call__(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        shape = (1, *like.shape[1:])
        if self._buffer is None or self._buffer.shape != shape:
            self._buffer = torch.empty(shape, device=like.device, dtype=like.dtype)
        return self._buffer.normal_(generator=self.generator)


class OperatorStep:
    """The :class:`~spinlock_assets.core.features.family.StepFunction` of a rebuilt operator: one call of
    F (or of O with ``raw=True``) with common random numbers drawn from ``noise_seed``."""

    def __init__(self, operator: StochasticCNN) -> None:
        self.operator = operator
        self.device = operator.device

    def __call__(self, x: torch.Tensor, *, noise_seed: int, raw: bool = False) -> torch.Tensor:
        noise = GeneratorNoise(noise_seed, self.device)
        o = self.operator.apply(x.to(self.device, torch.float32), noise)
        return o if raw else self.operator.update(x, o)
