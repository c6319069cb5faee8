"""The INT8 (and ShiftQuant, low-bit) layers as ``torch.library`` custom ops: their forward and
backward passes, im2col, the integer GEMMs and the per-device convolution paths. The compiled
kernels they call are in :mod:`mmdaq.kernels`."""
