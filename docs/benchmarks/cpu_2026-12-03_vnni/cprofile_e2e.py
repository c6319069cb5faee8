# cProfile of DAQ training iterations of a stock model: python cprofile_e2e.py tsn
import sys, cProfile, pstats, torch
sys.path.insert(0, 'tools/benchmarks')
from mmdaq.engine.hooks import DAQHook
from mmdaq.engine.stock_models import build_stock_model, demo_batch, load_stock_config, training_loss
import bench_layers as bl
key = sys.argv[1]
config, kw = bl.E2E_MODELS[key]
torch.manual_seed(0)
model, task = build_stock_model(load_stock_config(config)); model.train()
DAQHook().convert(model)
data = demo_batch(model, task, batch_size=2, seed=0, **kw)
def step():
    model.zero_grad(set_to_none=True)
    loss = training_loss(model, data); loss.backward()
for _ in range(3): step()
pr = cProfile.Profile(); pr.enable()
for _ in range(5): step()
pr.disable()
st = pstats.Stats(pr); st.sort_stats('tottime').print_stats(45)
