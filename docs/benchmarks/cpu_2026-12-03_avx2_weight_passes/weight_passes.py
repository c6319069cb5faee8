import torch, time, sys
torch.set_num_threads(2)
import mmdaq.kernels as K, mmdaq
from mmdaq.ops.phase_grad_input import transposed_weight
from mmdaq.ops.im2col import weight_columns
print(mmdaq.__file__)
def t(f, n=20):
    f(); best = 1e9
    for _ in range(7):
        s = time.perf_counter()
        for _ in range(n): f()
        best = min(best, (time.perf_counter() - s) / n)
    return best * 1e3
for shape in [(2048,512,3,1,1), (512,512,1,3,3), (512,2048,3,1,1), (256,256,1,3,3), (512,512,3,3), (2048,512,1,1,1), (256, 64, 1,1,1)]:
    w = torch.randint(-127, 128, shape, dtype=torch.int8)
    k = w[0,0].numel(); co, ci = shape[:2]
    acc = torch.randint(-1000, 1000, (co, k * ci), dtype=torch.int32); sc = torch.rand(co)
    a = t(lambda: K.int8_channels_last(w, False))
    b = t(lambda: K.int32_to_weight(acc, sc, list(shape)))
    c = t(lambda: weight_columns(transposed_weight(w, 1), 1))
    print(f'{str(shape):20s} channels_last {a:6.3f} ms  int32_to_weight {b:6.3f}  dgrad weight operand {c:6.3f}')
