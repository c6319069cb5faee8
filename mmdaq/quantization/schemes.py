"""Quantization schemes: how one layer quantizes the operands of its three GEMMs.

A scheme is the per-layer policy and state behind a DAQ layer::

    forward:   X   -> quantize_input(X)              per tensor            Y   = Xq (*) Wq
               W   -> quantize_weight(W)             per tensor
    backward:  G_Y -> quantize_grad_for_weight(G_Y)  per output channel    G_W = Xq^T (*) G_Yq
               G_Y -> quantize_grad_for_input(G_Y)   per tensor            G_X = G_Yq (*)^T Wq

``quantize_grad_for_weight`` always returns one scale per output channel (a
per-tensor method repeats its one scale), so the G_W GEMM is the same code for
every method. Methods are selected by name (:data:`SCHEMES`, :func:`build_scheme`):

=============  =====================================================================
``per_tensor`` abs-max per tensor everywhere, no clipping (the plain INT8 baseline)
``per_channel`` G_Y for G_W per output channel (vectorized), abs-max, no clipping
``daq``        G_Y for G_W per output channel with the Magnitude-aware Clipping
               Strategy (:mod:`.clipping`); everything else abs-max per tensor
``ui8``        G_Y once per tensor with UI8's direction-sensitive clip and stochastic
               rounding, for both GEMMs; weight gradient scaled by UI8's DCLRS factor
               (:mod:`.direction_sensitive`)
``shiftquant`` sub-8-bit codes with power-of-two group scales along each GEMM's reduction
               axis, run by the ShiftMM layer path (:mod:`.shift_scheme`)
``zhuang_w4a4`` Zhuang et al.'s k-bit weights and activations with float gradients: not a
               scheme of the DAQ layers but the options of their own low-bit layers
               (:class:`~.lowbit.LowBitConfig`), which ``convert_model`` picks by this name
=============  =====================================================================

Other methods subclass :class:`QuantScheme` and register with :func:`register_scheme`: this is
the one registry of methods.
Scheme state (e.g. DAQ's clip of the previous iteration) is kept out of the module's
``state_dict``; :meth:`QuantScheme.state_dict` exposes it for the training hook to
checkpoint separately.
"""
import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from .clipping import MCSConfig, mcs_clip_from_stats
from .direction_sensitive import DSGCConfig, dclrs_factor, direction_sensitive_clip
from .distribution import gradient_statistics
from .histogram_clip import objective_clip
from .quantize import abs_max, dequantize, quantize, quantize_per_channel_and_tensor
from .scheme_handles import register_scheme_handle

QuantResult = Tuple[Tensor, Tensor]  # (codes int8, scale float32)


class FusedGradRule(NamedTuple):
    """How a scheme's G_W copy of G_Y is clipped, for the fused backward kernels.

    ``kind``: ``'per_tensor'`` (the G_X copy serves both GEMMs), ``'abs_max'`` (per channel,
    no clipping) or ``'objective'`` (DAQ's objective clip; channels with ``P(|g| > sigma) >
    threshold`` keep their abs-max); ``alpha`` and ``num_bins`` as in
    :func:`~.histogram_clip.objective_clip`.
    """
    kind: str
    threshold: float = 0.0
    alpha: float = 3.0
    num_bins: int = 1024


class FusedClipState(NamedTuple):
    """DAQ's clip state of one call slot, for the fused G_Y pass to update in place.

    Attributes:
        prev_clip (Tensor[C], float32): The last clip (``DAQScheme.prev_clips[slot]``).
        clip_ratio (Tensor[C], float32): Its ratio to the abs-max (``clip_ratios[slot]``).
        is_gaussian (Tensor[C], bool): The distribution test's result (``is_gaussian``).
        has_history (bool): Whether the first two hold an earlier update's values (kept where
            the new one is not finite) or are new.
    """
    prev_clip: Tensor
    clip_ratio: Tensor
    is_gaussian: Tensor
    has_history: bool


def _clip_ratio(clip: Tensor, g_max: Tensor) -> Tensor:
    """``clip / g_max`` per channel, 1 where the channel is all zero."""
    return torch.where(g_max > 0, clip / g_max.clamp_min(1e-30), torch.ones_like(clip))


_ROUNDINGS = ('nearest', 'stochastic')
_LONG_TAIL_RULES = ('ema', 'objective')
_FORWARDS = ('int8', 'fp32')
_WEIGHT_SCALES = ('per_tensor', 'per_channel')


@dataclasses.dataclass
class QuantScheme:
    """Base scheme: symmetric INT8, abs-max, per tensor everywhere (method ``'per_tensor'``).

    Args:
        grad_rounding (str): Rounding of the gradient codes, ``'nearest'`` (the paper's
            reading) or ``'stochastic'``. Defaults to ``'nearest'``.
        seed (int, optional): Seed of the stochastic-rounding generator. Defaults to None.
        forward (str): ``'int8'`` runs the forward GEMM on the int8 codes of X and W (the
            paper); ``'fp32'`` runs it in float, the backward GEMMs still on the codes (an
            ablation: how much of a gap the forward costs). Defaults to ``'int8'``.
        weight_scale (str): ``'per_tensor'`` (the paper) or ``'per_channel'``: one scale per
            output channel of W. The forward stays one integer GEMM (row c of Y only involves
            row c of W, so its scale factors out of the sum); for the G_X GEMM, which sums over
            output channels, the per-tensor copy of G_Y is quantized from ``G_Y[:, c] * s_w[c]``
            so that the weight codes enter it without their scales. Defaults to
            ``'per_tensor'``.
        weight_bits (int): Bits of W's codes, 2 to 8 (codes in ``[-Q, Q]``,
            ``Q = 2^(b-1) - 1``, still stored and multiplied as int8). Defaults to 8.
        input_bits (int): Bits of X's codes, 2 to 8. Defaults to 8.
        grad_bits (int): Bits of both copies of G_Y, 2 to 8; a clipping method chooses its
            clip for this width. Defaults to 8.
        grad_input_bits (int, optional): Bits of the G_X copy of G_Y alone, 2 to 8 (the G_W
            copy keeps ``grad_bits``), to find out which copy a low width costs; None: the
            same as ``grad_bits``. Defaults to None.
    """
    grad_rounding: str = 'nearest'
    seed: Optional[int] = None
    forward: str = 'int8'
    weight_scale: str = 'per_tensor'
    weight_bits: int = 8
    input_bits: int = 8
    grad_bits: int = 8
    grad_input_bits: Optional[int] = None

    name = 'per_tensor'
    #: Which layer function runs the scheme: ``'int8'`` (:mod:`mmdaq.ops.int8_layer`, per-tensor
    #: or per-channel scales) or ``'shift'`` (:mod:`mmdaq.ops.shift_layer`, ShiftQuant).
    dataflow = 'int8'

    def __post_init__(self) -> None:
        if self.grad_rounding not in _ROUNDINGS:
            raise ValueError(f'grad_rounding must be one of {_ROUNDINGS}, but got '
                             f'{self.grad_rounding!r}')
        if self.forward not in _FORWARDS:
            raise ValueError(f'forward must be one of {_FORWARDS}, but got {self.forward!r}')
        if self.weight_scale not in _WEIGHT_SCALES:
            raise ValueError(f'weight_scale must be one of {_WEIGHT_SCALES}, but got '
                             f'{self.weight_scale!r}')
        for option in ('weight_bits', 'input_bits', 'grad_bits', 'grad_input_bits'):
            value = getattr(self, option)
            if value is None and option == 'grad_input_bits':
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8:
                raise ValueError(f'{option} must be an int in [2, 8], but got {value!r}')
        if self.dataflow != 'int8' and (self.forward, self.weight_scale) != ('int8',
                                                                             'per_tensor'):
            raise ValueError(f"forward and weight_scale must keep their defaults ('int8', "
                             f"'per_tensor') for method {self.name!r}, but got "
                             f'{self.forward!r}, {self.weight_scale!r}: they are options of '
                             f'the INT8 dataflow only')
        self._generators: Dict[torch.device, torch.Generator] = {}
        #: Diagnostics of the last backward, filled when ``collect_stats`` is True.
        self.collect_stats = False
        self.last_stats: Dict[str, Tensor] = {}
        self.last_grad_weight_scale: Optional[Tensor] = None
        #: Set by the fidelity guard: the next backward also measures its error against float
        #: GEMMs into ``last_error`` (``{'grad_input': Tensor[], 'grad_weight': Tensor[]}``).
        self.measure_error = False
        self.last_error: Dict[str, Tensor] = {}
        self._calls = 0
        self._backward_seen = False
        self._register_op_handle()

    def _register_op_handle(self) -> None:
        # The layer's custom ops (mmdaq/ops/int8_conv_op.py) take the scheme as an int handle;
        # it is set here, outside traced code, so torch.compile reads a plain int attribute.
        self.op_handle = register_scheme_handle(self)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # copy.deepcopy and unpickling build a new object: it gets its own handle.
        self.__dict__.update(state)
        self._register_op_handle()

    # -- call slots -----------------------------------------------------------------------
    # A layer may run several times per iteration (an RPN head on every FPN level), each call
    # with its own gradient statistics. Stateful schemes keep one state per call slot: the
    # k-th training forward of an iteration gets slot k; the first forward after a backward
    # starts a new iteration.
    def next_call_slot(self) -> int:
        """Slot of a training forward call (see above)."""
        if self._backward_seen:
            self._calls, self._backward_seen = 0, False
        self._calls += 1
        return self._calls - 1

    def note_backward(self) -> None:
        """Called by the layer's backward: the next forward starts a new iteration."""
        self._backward_seen = True

    # -- forward operands ---------------------------------------------------------------
    def quantize_input(self, x: Tensor) -> QuantResult:
        """X (Tensor[N, C_in, ...]) -> (int8 codes, scale Tensor[])."""
        return quantize(x, num_bits=self.input_bits)

    def quantize_weight(self, w: Tensor) -> QuantResult:
        """W (Tensor[C_out, C_in/groups, ...]) -> (int8 codes, scale Tensor[], or Tensor[C_out]
        with ``weight_scale='per_channel'``)."""
        return quantize(w, dim=0 if self.weight_scale == 'per_channel' else None,
                        num_bits=self.weight_bits)

    # -- backward operands --------------------------------------------------------------
    def grad_weight_clip(self, g: Tensor, dim: int = 1, slot: int = 0) -> Optional[Tensor]:
        """Clip per output channel (Tensor[C_out]) for the G_W copy of G_Y (channels along
        ``dim``); None means per-tensor abs-max.

        A method overrides this or :meth:`grad_weight_clip_and_max` (either works)."""
        if type(self).grad_weight_clip_and_max is not QuantScheme.grad_weight_clip_and_max:
            return self.grad_weight_clip_and_max(g, dim, slot)[0]
        return None

    def grad_weight_clip_and_max(self, g: Tensor, dim: int = 1,
                                 slot: int = 0) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """:meth:`grad_weight_clip` and, when it was computed on the way, the abs-max of each
        channel (Tensor[C_out], exactly ``abs_max(g, dim)``), else None (the backward then
        computes what it needs itself)."""
        return self.grad_weight_clip(g, dim, slot), None

    def quantize_grad_for_weight(self, g: Tensor, dim: int = 1, slot: int = 0) -> QuantResult:
        """G_Y (Tensor[N, C_out, ...]) -> (int8 codes, scale Tensor[C_out]), for the G_W GEMM.

        ``slot`` is the call slot of the forward this gradient belongs to.
        """
        return self.quantize_grads(g, dim, slot, for_input=False)[0]

    @property
    def grad_input_copy_bits(self) -> int:
        """Bits of the G_X copy of G_Y: ``grad_input_bits``, else ``grad_bits``."""
        return self.grad_bits if self.grad_input_bits is None else self.grad_input_bits

    def quantize_grad_for_input(self, g: Tensor, slot: int = 0) -> QuantResult:
        """G_Y (Tensor[N, C_out, ...]) -> (int8 codes, scale Tensor[]), for the G_X GEMM."""
        return quantize(g, rounding=self.grad_rounding, generator=self._generator(g),
                        num_bits=self.grad_input_copy_bits)

    def quantize_grads(self, g: Tensor, dim: int = 1, slot: int = 0, for_weight: bool = True,
                       for_input: bool = True) -> Tuple[Optional[QuantResult],
                                                        Optional[QuantResult]]:
        """The copies of G_Y the backward GEMMs need: (G_W copy or None, G_X copy or None).

        The two quantizations share their reductions over G_Y: the G_X copy's abs-max is the
        max of the per-channel abs-max that came with the G_W clip (or, for a per-tensor G_W
        copy, one abs-max serves both), and with nearest rounding a per-tensor G_W copy *is*
        the G_X copy. The codes are those of :meth:`quantize_grad_for_input` and separate
        quantizations with :meth:`grad_weight_clip` (tested). A method whose copies differ in
        kind overrides this.
        """
        if not for_weight:
            return None, (self.quantize_grad_for_input(g, slot) if for_input else None)
        channels = g.shape[dim]
        clip, channel_max = self.grad_weight_clip_and_max(g, dim, slot)
        rounding, generator = self.grad_rounding, self._generator(g)
        bits, bits_x = dict(num_bits=self.grad_bits), dict(num_bits=self.grad_input_copy_bits)
        shared = rounding == 'nearest' and bits == bits_x  # the copies can share their passes
        if clip is None:  # one scale for the tensor, repeated per channel
            tensor_max = abs_max(g)
            q, scale = quantize(g, rounding=rounding, generator=generator, data_max=tensor_max,
                                **bits)
            self._note_weight_copy(g, dim, q, scale.expand(channels).contiguous())
            for_x = None
            if for_input:
                for_x = (q, scale) if shared else quantize(
                    g, rounding=rounding, generator=generator, data_max=tensor_max, **bits_x)
            return (q, self.last_grad_weight_scale), for_x
        if for_input and shared and channel_max is not None and channels:
            # Both copies from one read of G_Y.
            for_w, for_x = quantize_per_channel_and_tensor(g, clip, dim, data_max=channel_max,
                                                           tensor_max=channel_max.amax(), **bits)
            self._note_weight_copy(g, dim, *for_w)
            return for_w, for_x
        q, scale = quantize(g, clip=clip, dim=dim, rounding=rounding, generator=generator,
                            data_max=channel_max, **bits)
        self._note_weight_copy(g, dim, q, scale)
        if not for_input:
            return (q, scale), None
        tensor_max = channel_max.amax() if channel_max is not None and channels else None
        return (q, scale), quantize(g, rounding=rounding, generator=generator,
                                    data_max=tensor_max, **bits_x)

    def _note_weight_copy(self, g: Tensor, dim: int, q: Tensor, scale: Tensor) -> None:
        self.last_grad_weight_scale = scale  # [C_out]; for diagnostics (clip = scale * 127)
        if self.collect_stats:
            g_hat = dequantize(q, scale, dim=dim)
            norm = g.float().norm()
            error = (g.float() - g_hat).norm() / norm if norm > 0 else norm
            self.last_stats = dict(self.last_stats, grad_rel_error=error)

    def weight_grad_scale(self, slot: int = 0) -> Union[float, Tensor]:
        """Factor on the layer's weight and bias gradients (UI8's learning-rate scaling): 1, or
        a device tensor."""
        return 1.0

    # -- fused kernels ------------------------------------------------------------------
    def fused_grad_rule(self, slot: int = 0) -> Optional[FusedGradRule]:
        """The rule of this backward's G_W copy for the fused kernels
        (:mod:`mmdaq.ops.fused_layer`), or None where they do not apply: a method of another
        kind, options they do not implement (stochastic rounding, FP32 forward, per-channel
        weight scales) or diagnostics asked for."""
        if type(self) is not QuantScheme or not self._fusable():
            return None
        return FusedGradRule('per_tensor')

    def _fusable(self) -> bool:
        return (self.grad_rounding == 'nearest' and self.fuses_forward()
                and self.grad_input_copy_bits == self.grad_bits and not self.collect_stats
                and not self.measure_error)

    def fuses_forward(self) -> bool:
        """Whether the fused kernels implement this scheme's forward: INT8, per-tensor abs-max
        scales of X and W (the base quantizers, at any bit width)."""
        return (self.forward == 'int8' and self.weight_scale == 'per_tensor'
                and type(self).quantize_input is QuantScheme.quantize_input
                and type(self).quantize_weight is QuantScheme.quantize_weight)

    def fused_clip_state(self, slot: int, channels: int,
                         device: torch.device) -> Optional[FusedClipState]:
        """The clip state the fused G_Y pass updates in place for call ``slot`` (counted as
        one update), or None for a scheme without one."""
        return None

    def record_fused_grads(self, slot: int, rule: FusedGradRule, codes: Any) -> None:
        """Keep what :meth:`quantize_grads` keeps besides the clip state, from the fused G_Y
        pass's results (``codes``: a :class:`~mmdaq.ops.triton_grad_stats.GradCodes`, device
        tensors: no sync). ``slot`` is the call slot of the forward this gradient belongs to."""
        channels = codes.s_w.shape[0]
        self.last_grad_weight_scale = codes.s_x.expand(channels) if rule.kind == 'per_tensor' \
            else codes.s_w

    # -- state ----------------------------------------------------------------------------
    #: Names of the scheme's per-slot tensor states (dicts call slot -> Tensor), which are
    #: checkpointed with the update counters and averaged over ranks; none when stateless.
    slot_states = ()

    def state_dict(self) -> Dict[str, Any]:
        """Scheme state to checkpoint (tensors on CPU); empty before the first update and for
        stateless schemes."""
        if not self.slot_states or not getattr(self, self.slot_states[0]):
            return {}
        # copies: the fused kernels update the state in place
        state = {name: {k: v.detach().to('cpu', copy=True)
                        for k, v in getattr(self, name).items()} for name in self.slot_states}
        return dict(state, updates=dict(self._updates))

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; an empty dict resets the state."""
        for name in self.slot_states:
            setattr(self, name, dict(state.get(name, {})))
        if self.slot_states:
            self._updates = dict(state.get('updates', {}))

    def rank_synced_state(self) -> Tuple[Dict[int, Tensor], ...]:
        """The per-slot tensor states that must be equal on every rank (averaged by DAQHook)."""
        return tuple(getattr(self, name) for name in self.slot_states)

    def _generator(self, g: Tensor) -> Optional[torch.Generator]:
        if self.grad_rounding != 'stochastic' or self.seed is None:
            return None
        if g.device not in self._generators:
            self._generators[g.device] = torch.Generator(g.device).manual_seed(self.seed)
        return self._generators[g.device]


@dataclasses.dataclass
class PerChannelScheme(QuantScheme):
    """Gradient Vectorized Quantization with abs-max clips (method ``'per_channel'``)."""
    name = 'per_channel'

    def grad_weight_clip_and_max(self, g: Tensor, dim: int = 1,
                                 slot: int = 0) -> Tuple[Tensor, Tensor]:
        clip = abs_max(g, dim=dim)  # [C_out]
        if self.collect_stats:
            self.last_stats = {'clip_ratio': torch.ones_like(clip)}
        return clip, clip

    def fused_grad_rule(self, slot: int = 0) -> Optional[FusedGradRule]:
        return FusedGradRule('abs_max') if self._fusable() else None


@dataclasses.dataclass
class DAQScheme(QuantScheme):
    """The paper's scheme (method ``'daq'``): GVQ with the Magnitude-aware Clipping Strategy.

    Every channel of the G_W copy of G_Y is classified (``P(|g| > sigma) > threshold``:
    bell-shaped, clip = abs-max, as the paper derives). Sharp long-tailed channels get their
    clip from ``long_tail_rule``:

    - ``'objective'`` (default): the clip minimising the paper's magnitude-weighted error on the
      channel's own histogram (:mod:`.histogram_clip`). The paper closes its derivation with
      an update rule whose link to the objective was not recovered; on real layers that rule
      was measured *worse* than no clipping at all, while minimising the objective directly is
      never worse than abs-max (docs/fidelity.md, "Gradient quantization error on real layers").
    - ``'ema'``: the paper's iterative update ``s_t = (1 - k A) s_(t-1) + A |g|max_t``
      (:func:`~.clipping.magnitude_aware_clip`), for fidelity studies.

    Args:
        threshold (float): lambda of the distribution test. Defaults to 0.3 (the paper's).
        k (float): k of the ``'ema'`` update. Defaults to 1.0 (the paper's).
        a (float): A of the ``'ema'`` update. Defaults to 0.8 (the paper's).
        clip_interval (int): Iterations between clip updates. In between, ``'ema'`` reuses
            the last clips and ``'objective'`` the last clip *ratios* (clip / abs-max) times
            the current abs-max, so the clip follows the gradient's scale. Defaults to 1
            (every iteration, the paper's reading).
        cap_at_abs_max (bool): Cap the ``'ema'`` clip at the current abs-max (not in the
            paper; see :class:`~.clipping.MCSConfig`). Defaults to False.
        long_tail_rule (str): ``'objective'`` or ``'ema'``, see above. Defaults to
            'objective'.
        alpha (float): Magnitude weight exponent of the ``'objective'`` rule (the weight is
            ``exp(alpha * |g| / |g|max)``; the paper gives no value). Defaults to 3.0.
    """
    threshold: float = 0.3
    k: float = 1.0
    a: float = 0.8
    clip_interval: int = 1
    cap_at_abs_max: bool = False
    long_tail_rule: str = 'objective'
    alpha: float = 3.0

    #: Histogram bins of the ``'objective'`` rule: the clip resolution is ``|g|max / 1024``.
    num_bins = 1024
    slot_states = ('prev_clips', 'clip_ratios')

    name = 'daq'

    def __post_init__(self) -> None:
        super().__post_init__()
        self.mcs = MCSConfig(threshold=self.threshold, k=self.k, a=self.a,
                             cap_at_abs_max=self.cap_at_abs_max)
        if isinstance(self.clip_interval, bool) or not isinstance(self.clip_interval, int) \
                or self.clip_interval < 1:
            raise ValueError(f'clip_interval must be an int >= 1, but got {self.clip_interval!r}')
        if self.long_tail_rule not in _LONG_TAIL_RULES:
            raise ValueError(f'long_tail_rule must be one of {_LONG_TAIL_RULES}, but got '
                             f'{self.long_tail_rule!r}')
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not 0 <= self.alpha < float('inf'):
            raise ValueError(f'alpha must be a finite number >= 0, but got {self.alpha!r}')
        self.prev_clips: Dict[int, Tensor] = {}  # call slot -> clip of the last update [C]
        self.clip_ratios: Dict[int, Tensor] = {}  # call slot -> clip / abs-max ('objective')
        self.is_gaussian: Optional[Tensor] = None
        self._updates: Dict[int, int] = {}  # call slot -> clip requests so far

    @property
    def prev_clip(self) -> Optional[Tensor]:
        """The clip state of the first call slot (the only one of most layers)."""
        return self.prev_clips.get(0)

    def grad_weight_clip_and_max(self, g: Tensor, dim: int = 1,
                                 slot: int = 0) -> Tuple[Tensor, Optional[Tensor]]:
        channels = g.shape[dim]
        prev = self.prev_clips.get(slot)
        if prev is not None and prev.shape[0] != channels:
            prev = None  # the layer changed shape: no usable history
        step = self._updates.get(slot, 0)
        self._updates[slot] = step + 1
        if prev is not None and step % self.clip_interval != 0:
            if self.long_tail_rule == 'ema':
                return prev.to(g.device), None
            g_max = abs_max(g, dim=dim)
            clip = self.clip_ratios[slot].to(g.device) * g_max
            self.prev_clips[slot] = clip
            return clip, g_max
        if self.long_tail_rule == 'ema':
            stats = gradient_statistics(g, dim)
            g_max = stats.abs_max  # [C]
            clip, is_gaussian = mcs_clip_from_stats(g_max, stats.frac_above_sigma, prev, self.mcs)
        else:
            # Fewer bins than values per channel would only add work: resolution 1/64 at least.
            values = g.numel() // max(channels, 1)
            bins = min(self.num_bins, max(64, values))
            g_max, frac_above, objective = objective_clip(g, dim, self.alpha, bins,
                                                          self.grad_bits)
            is_gaussian = frac_above > self.threshold
            clip = torch.where(is_gaussian, g_max, objective)
        self._keep_clip(slot, clip, g_max, is_gaussian, prev)
        return clip, g_max

    def _keep_clip(self, slot: int, clip: Tensor, g_max: Tensor, is_gaussian: Tensor,
                   prev: Optional[Tensor]) -> None:
        """Store an update's clip (and, for ``'objective'``, its ratio to the abs-max) as the
        slot's state. A non-finite channel (AMP overflow) keeps the history it would poison."""
        if self.long_tail_rule == 'objective':
            ratio = _clip_ratio(clip, g_max)
            old = self.clip_ratios.get(slot)
            self.clip_ratios[slot] = ratio if old is None or old.shape != ratio.shape else \
                torch.where(torch.isfinite(ratio), ratio, old.to(ratio.device))
        finite = torch.isfinite(clip)
        self.prev_clips[slot] = clip if prev is None else torch.where(finite, clip,
                                                                      prev.to(clip.device))
        self.is_gaussian = is_gaussian
        if self.collect_stats:
            self.last_stats = {'clip_ratio': _clip_ratio(clip, g_max), 'is_gaussian': is_gaussian}

    def fused_clip_state(self, slot: int, channels: int,
                         device: torch.device) -> Optional[FusedClipState]:
        if self.long_tail_rule != 'objective':
            return None
        self._updates[slot] = self._updates.get(slot, 0) + 1
        prev, ratio = self.prev_clips.get(slot), self.clip_ratios.get(slot)
        history = all(t is not None and t.shape == (channels, ) and t.device == device
                      and t.dtype == torch.float32 and t.is_contiguous() for t in (prev, ratio))
        if not history:  # first update, or the layer changed shape or device
            prev = torch.zeros(channels, dtype=torch.float32, device=device)
            ratio = torch.ones(channels, dtype=torch.float32, device=device)
            self.prev_clips[slot], self.clip_ratios[slot] = prev, ratio
        self.is_gaussian = torch.empty(channels, dtype=torch.bool, device=device)  # written
        return FusedClipState(prev, ratio, self.is_gaussian, history)

    def fused_grad_rule(self, slot: int = 0) -> Optional[FusedGradRule]:
        # The fused kernels compute the objective clip on every call (clip_interval 1).
        if not self._fusable() or self.long_tail_rule != 'objective' or self.clip_interval != 1:
            return None
        return FusedGradRule('objective', float(self.threshold), float(self.alpha),
                             self.num_bins)


@dataclasses.dataclass
class UI8Scheme(QuantScheme):
    """UI8 (Zhu et al., CVPR 2020), method ``'ui8'``: one per-tensor INT8 copy of G_Y.

    G_Y is quantized once per backward with stochastic rounding and the clip of Direction
    Sensitive Gradient Clipping, and that one copy feeds both the G_W and the G_X GEMM. The
    clip ratio ``c / max|g|`` and the cosine distance are searched every ``update_interval``
    iterations and reused in between (the ratio times the current abs-max). Deviation
    Counteractive LR Scaling multiplies the layer's weight and bias gradients by
    ``max(exp(-alpha d), beta)``: for SGD that is the paper's per-layer learning-rate factor
    and it works with any optimizer and param scheduler (adaptive optimizers such as Adam
    largely undo a gradient scale; use SGD, as the paper does).

    Args:
        grad_rounding (str): Defaults to ``'stochastic'`` (the paper's).
        update_interval (int): Iterations between clip searches. Defaults to 100 (the notes'
            reading of the paper; not confirmed).
        num_candidates (int): Clip ratios searched. Defaults to 48.
        alpha (float): DCLRS decay. Defaults to 20 (the paper's).
        beta (float): DCLRS floor. Defaults to 0.1 (the paper's).
        lr_scaling (bool): Apply DCLRS. Defaults to True.
    """
    grad_rounding: str = 'stochastic'
    update_interval: int = 100
    num_candidates: int = 48
    alpha: float = 20.0
    beta: float = 0.1
    lr_scaling: bool = True

    name = 'ui8'
    slot_states = ('clip_ratios', 'distances')

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.update_interval, bool) or not isinstance(self.update_interval, int) \
                or self.update_interval < 1:
            raise ValueError(f'update_interval must be an int >= 1, but got '
                             f'{self.update_interval!r}')
        if self.grad_input_bits not in (None, self.grad_bits):
            raise ValueError(f'UI8 quantizes G_Y once for both GEMMs: grad_input_bits must be '
                             f'None or grad_bits ({self.grad_bits}), but got '
                             f'{self.grad_input_bits!r}')
        DSGCConfig(num_candidates=self.num_candidates)  # validates num_candidates
        dclrs_factor(0.0, self.alpha, self.beta)  # validates alpha and beta
        self.clip_ratios: Dict[int, Tensor] = {}  # call slot -> clip / max|g|, Tensor[1]
        self.distances: Dict[int, Tensor] = {}  # call slot -> cosine distance, Tensor[1]
        self._updates: Dict[int, int] = {}

    @property
    def dsgc(self) -> DSGCConfig:
        """The direction-sensitive search, quantizing its candidates at the gradient's width
        (read at each search, so a layer the fidelity guard moves to 8 bits searches there)."""
        return DSGCConfig(num_candidates=self.num_candidates, num_bits=self.grad_bits)

    def _clip(self, g: Tensor, slot: int) -> Tensor:
        g_max = abs_max(g).reshape(1)  # [1]
        step = self._updates.get(slot, 0)
        self._updates[slot] = step + 1
        if slot not in self.clip_ratios or step % self.update_interval == 0:
            result = direction_sensitive_clip(g.reshape(1, -1), self.dsgc)
            ratio, distance = _clip_ratio(result.clip, g_max), result.info['cosine_distance']
            old = self.clip_ratios.get(slot)
            if old is None or old.shape != ratio.shape:
                self.clip_ratios[slot], self.distances[slot] = ratio, distance
            else:  # a non-finite search keeps the last one (decided on the device: no sync)
                finite = torch.isfinite(ratio).all()
                self.clip_ratios[slot] = torch.where(finite, ratio, old.to(ratio.device))
                self.distances[slot] = torch.where(
                    finite, distance, self.distances[slot].to(distance.device))
        clip = self.clip_ratios[slot].to(g.device) * g_max
        if self.collect_stats:
            self.last_stats = {'clip_ratio': self.clip_ratios[slot],
                               'cosine_distance': self.distances[slot]}
        return clip

    def quantize_grad_for_input(self, g: Tensor, slot: int = 0) -> QuantResult:
        return quantize(g, clip=self._clip(g, slot)[0], rounding=self.grad_rounding,
                        generator=self._generator(g), num_bits=self.grad_bits)

    def quantize_grad_for_weight(self, g: Tensor, dim: int = 1, slot: int = 0) -> QuantResult:
        q, scale = self.quantize_grad_for_input(g, slot)
        scale = scale.expand(g.shape[dim]).contiguous()
        self.last_grad_weight_scale = scale
        return q, scale

    def quantize_grads(self, g: Tensor, dim: int = 1, slot: int = 0, for_weight: bool = True,
                       for_input: bool = True) -> Tuple[Optional[QuantResult],
                                                        Optional[QuantResult]]:
        """One INT8 copy of G_Y (one clip update, one rounding draw) for both GEMMs."""
        if not for_weight:
            return None, self.quantize_grad_for_input(g, slot) if for_input else None
        q, scale = self.quantize_grad_for_weight(g, dim, slot)
        return (q, scale), ((q, scale[0]) if for_input else None)

    def weight_grad_scale(self, slot: int = 0) -> Union[float, Tensor]:
        """The DCLRS factor as a device tensor (Tensor[1], no host sync); 1 before the first
        search or without ``lr_scaling``."""
        if not self.lr_scaling or slot not in self.distances:
            return 1.0
        return dclrs_factor(self.distances[slot], self.alpha, self.beta)


#: method name -> the class of its options and state: a :class:`QuantScheme` (DAQ layers) or
#: :class:`~.lowbit.LowBitConfig` (Zhuang et al.'s low-bit layers).
SCHEMES: Dict[str, type] = {}


def register_scheme(name: str) -> Callable[[type], type]:
    """Class decorator adding a method's options class (a dataclass) to :data:`SCHEMES`."""
    def decorator(cls: type) -> type:
        if name in SCHEMES:
            raise ValueError(f'scheme name must be new, but {name!r} is taken by '
                             f'{SCHEMES[name].__name__}')
        SCHEMES[name] = cls
        return cls
    return decorator


for _cls in (QuantScheme, PerChannelScheme, DAQScheme, UI8Scheme):
    register_scheme(_cls.name)(_cls)


def scheme_options(method: str) -> Tuple[str, ...]:
    """Names of the options ``method`` accepts."""
    return tuple(f.name for f in dataclasses.fields(_scheme_class(method)))


def build_scheme(method: str = 'daq', **options: Any) -> Any:
    """A new scheme of ``method`` with ``options`` (a :class:`QuantScheme`, or the
    :class:`~.lowbit.LowBitConfig` of ``'zhuang_w4a4'``); unknown options raise, naming them.

    Examples:
        >>> build_scheme('daq', a=0.5).a
        0.5
    """
    cls = _scheme_class(method)
    unknown = sorted(set(options) - set(scheme_options(method)))
    if unknown:
        raise TypeError(f'options of method {method!r} must be among {list(scheme_options(method))}'
                        f', but got unknown {unknown}')
    return cls(**options)


def _scheme_class(method: str) -> type:
    if method not in SCHEMES:
        raise ValueError(f'method must be one of {sorted(SCHEMES)}, but got {method!r}')
    return SCHEMES[method]
