"""The per-layer fidelity guard of DAQHook: probe INT8 layers' gradient error, move bad ones.

Every ``interval`` iterations one INT8 layer (round robin over the layer names) also runs its
backward GEMMs in float (:mod:`mmdaq.ops.grad_error`); its relative G_W / G_X errors are
logged. A layer whose error exceeds ``threshold`` in ``patience`` probes in a row is moved up:
to 8 bits if any of its operands has fewer, else to FP32, and the move is logged with the layer
and the errors. The moves (and the probe position) are state that DAQHook saves in checkpoints.
"""
import dataclasses
import math
from typing import Dict, NamedTuple, Optional, Set

from torch import nn

_BITS = ('weight_bits', 'input_bits', 'grad_bits', 'grad_input_bits')


class Probe(NamedTuple):
    """One probe: the layer, its relative errors (floats) and the move it caused, if any."""
    layer: str
    errors: Dict[str, float]
    action: Optional[str]


@dataclasses.dataclass
class FidelityGuard:
    """Probe one INT8 layer every ``interval`` iterations; move persistently bad layers up.

    Args:
        interval (int): Iterations between probes. Defaults to 50.
        threshold (float): Relative G_W or G_X error (against float GEMMs on the same saved
            operands) above which a probe counts against the layer. Defaults to 0.1.
        patience (int): Probes in a row above the threshold before the layer moves.
            Defaults to 2.
    """
    interval: int = 50
    threshold: float = 0.1
    patience: int = 2

    def __post_init__(self) -> None:
        for name in ('interval', 'patience'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'guard {name} must be an int >= 1, but got {value!r}')
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0 < self.threshold < math.inf:
            raise ValueError(f'guard threshold must be a number > 0, but got {self.threshold!r}')
        self.cursor = 0
        self.strikes: Dict[str, int] = {}
        self.fp32_layers: Set[str] = set()
        self.promoted: Set[str] = set()
        self._probing: Optional[str] = None

    def before_iter(self, iteration: int, layers: Dict[str, nn.Module]) -> Optional[str]:
        """Arm the probe of the next layer if ``iteration`` (0-based) ends an interval."""
        if (iteration + 1) % self.interval:
            return None
        candidates = [name for name in sorted(layers) if name not in self.fp32_layers]
        if not candidates:
            return None
        name = candidates[self.cursor % len(candidates)]
        self.cursor += 1
        layers[name].quant_scheme.measure_error = True
        self._probing = name
        return name

    def after_iter(self, layers: Dict[str, nn.Module]) -> Optional[Probe]:
        """Read the armed probe (one host sync per interval) and move the layer if it must."""
        name, self._probing = self._probing, None
        if name is None:
            return None
        scheme = layers[name].quant_scheme
        errors = {k: float(v) for k, v in scheme.last_error.items()}
        scheme.measure_error, scheme.last_error = False, {}
        if not errors:  # the layer ran no backward this iteration
            return Probe(name, errors, None)
        bad = not max(errors.values()) <= self.threshold  # NaN counts as bad
        self.strikes[name] = self.strikes.get(name, 0) + 1 if bad else 0
        action = None
        if self.strikes[name] >= self.patience:
            self.strikes[name] = 0
            if any((getattr(scheme, b, None) or 8) < 8 for b in _BITS):
                self.promoted.add(name)
                action = '8 bits'
            else:
                self.fp32_layers.add(name)
                action = 'FP32'
            self.apply(layers)
        return Probe(name, errors, action)

    def apply(self, layers: Dict[str, nn.Module]) -> None:
        """Put the moved layers where the guard moved them (after a move or a resume)."""
        for name in self.promoted & set(layers):
            for bits in _BITS:
                if getattr(layers[name].quant_scheme, bits, None) is not None:
                    setattr(layers[name].quant_scheme, bits, 8)
        for name in self.fp32_layers & set(layers):
            layers[name].quant_enabled = False

    def state_dict(self) -> dict:
        return dict(cursor=self.cursor, strikes=dict(self.strikes),
                    fp32_layers=sorted(self.fp32_layers), promoted=sorted(self.promoted))

    def load_state_dict(self, state: dict) -> None:
        self.cursor = int(state.get('cursor', 0))
        self.strikes = dict(state.get('strikes', {}))
        self.fp32_layers = set(state.get('fp32_layers', ()))
        self.promoted = set(state.get('promoted', ()))
