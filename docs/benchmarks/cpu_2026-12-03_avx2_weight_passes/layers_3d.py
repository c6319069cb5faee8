import torch, time
from mmdaq.cnn import DAQConv3d
torch.manual_seed(0); torch.set_num_threads(2)
def bench(m, x, n=300):
    def it():
        y = m(x); y.backward(torch.ones_like(y))
    for _ in range(30): it()
    best = 1e9
    for r in range(5):
        t = time.perf_counter()
        for _ in range(n): it()
        best = min(best, (time.perf_counter()-t)/n*1e3)
    return best
for shape in [((2,16,2,4,4), 16, (3,1,1), (1,0,0)), ((2,64,4,16,16), 64, (1,3,3), (0,1,1)), ((2,512,2,2,2), 512, (3,1,1),(1,0,0))]:
    xs, co, k, p = shape
    f = torch.nn.Conv3d(xs[1], co, k, padding=p, bias=False)
    d = DAQConv3d(xs[1], co, k, padding=p, bias=False); d.load_state_dict(f.state_dict())
    x = torch.randn(xs, requires_grad=True)
    n = 300 if xs[1] < 100 else 50
    print(xs, co, k, 'fp32 ms %.3f  daq ms %.3f' % (bench(f, x, n), bench(d, x, n)), flush=True)
