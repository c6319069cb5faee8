# The G_W GEMM and int32_to_weight of a 512x512 3x3 layer at 4x4 (TSN), reused vs fresh outputs.
import torch, time
from mmdaq.kernels import int32_to_weight
torch.set_num_threads(2)
def t(f, n=10):
    f(); f()
    s=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-s)/n*1e3
a = torch.randint(-127,127,(512,96),dtype=torch.int8); b = torch.randint(-127,127,(96,4608),dtype=torch.int8)
c = torch._int_mm(a, b); print(c.shape, c.stride())
print('int_mm NN %.3f' % t(lambda: torch._int_mm(a, b)))
bt = b.t().contiguous().t()
print('int_mm N,colmajor %.3f' % t(lambda: torch._int_mm(a, bt)))
a2 = torch.randint(-127,127,(96,4608),dtype=torch.int8); b2 = torch.randint(-127,127,(4608,512),dtype=torch.int8)
print('int_mm 96x4608x512 %.3f' % t(lambda: torch._int_mm(a2, b2)))
sc = torch.rand(512)
print('i2w on mm out %.3f' % t(lambda: int32_to_weight(c, sc, (512,512,3,3))))
r = torch.randint(-1000,1000,(512,4608),dtype=torch.int32)
print('i2w on random %.3f' % t(lambda: int32_to_weight(r, sc, (512,512,3,3))))
print('float on mm out %.3f' % t(lambda: c.float()))
keep = []
def f1(): keep.append(torch._int_mm(a, b))
print('int_mm NN, outputs kept %.3f' % t(f1))
keep.clear()
def f2(): keep.append(int32_to_weight(c, sc, (512,512,3,3)))
print('i2w, outputs kept %.3f' % t(f2))
keep.clear()
def f3(): keep.append(torch.empty(512*4608, dtype=torch.float32).fill_(1))
print('empty+fill 9.4MB kept %.3f' % t(f3))
keep.clear()
print('empty+fill 9.4MB freed %.3f' % t(lambda: torch.empty(512*4608, dtype=torch.float32).fill_(1)))
