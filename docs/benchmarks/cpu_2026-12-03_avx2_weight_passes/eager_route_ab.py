import torch, time, statistics, sys
import mmdaq.ops.layer_op as LO
from mmdaq.cnn import DAQConv3d
torch.manual_seed(0); torch.set_num_threads(1)
d = DAQConv3d(16, 16, (3,1,1), padding=(1,0,0), bias=False)
x = torch.randn(2,16,2,4,4, requires_grad=True)
orig = LO.eager_route_applies
g = torch.ones(2,16,2,4,4)
def it():
    y = d(x); y.backward(g)
def timed(mode, n=50):
    LO.eager_route_applies = (lambda *a: False) if mode == 'op' else orig
    for _ in range(5): it()
    t = time.perf_counter()
    for _ in range(n): it()
    return (time.perf_counter()-t)/n*1e3
ratios, ops, eag = [], [], []
for r in range(40):
    a = timed('op'); b = timed('eager'); ops.append(a); eag.append(b); ratios.append(a / b)
print('op med %.3f min %.3f | eager med %.3f min %.3f | op/eager median %.3f (q1 %.3f q3 %.3f)' % (
    statistics.median(ops), min(ops), statistics.median(eag), min(eag), statistics.median(ratios),
    *statistics.quantiles(ratios, n=4)[::2]))
