# Times int32_to_weight in place during TSN iterations (perf_counter), three calls back to back.
import sys, time, torch
sys.path.insert(0, 'tools/benchmarks')
import mmdaq.ops.int8_layer as L
from mmdaq.engine.hooks import DAQHook
from mmdaq.engine.stock_models import build_stock_model, demo_batch, load_stock_config, training_loss
import bench_layers as bl
orig = L.int32_to_weight
rec = []
def timed(acc, scale, shape):
    t0 = time.perf_counter(); out = orig(acc, scale, shape); t1 = time.perf_counter()
    out2 = orig(acc, scale, shape); t2 = time.perf_counter()
    del out2
    out3 = orig(acc, scale, shape); t3 = time.perf_counter()
    rec.append((tuple(acc.shape), (t1-t0)*1e3, (t2-t1)*1e3, (t3-t2)*1e3))
    return out
L.int32_to_weight = timed
origmm = torch._int_mm
config, kw = bl.E2E_MODELS['tsn']
torch.manual_seed(0)
model, task = build_stock_model(load_stock_config(config)); model.train()
DAQHook().convert(model)
data = demo_batch(model, task, batch_size=2, seed=0, **kw)
for _ in range(4):
    model.zero_grad(set_to_none=True); training_loss(model, data).backward()
for r in rec[-52:]:
    if r[1] > 0.5: print(r)
