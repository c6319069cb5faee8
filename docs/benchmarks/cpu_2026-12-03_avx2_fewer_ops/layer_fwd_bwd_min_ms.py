import torch, sys, timeit, json
import mmdaq
from mmdaq.cnn import DAQConv2d, DAQConv3d
torch.set_num_threads(2)
res = {}
shapes = [(2,16,16,4,3,1,2),(2,64,64,80,3,1,2),(2,256,64,80,1,1,2),(2,128,128,40,3,2,2),(2,512,512,10,3,1,2),(6,256,256,7,3,1,2),(2,64,64,8,3,1,3),(2,512,2048,4,1,1,3)]
for n,c,co,s,k,st,nd in shapes:
    torch.manual_seed(0)
    D = DAQConv2d if nd == 2 else DAQConv3d
    daq = D(c,co,k,st,k//2,bias=False)
    x = torch.randn((n,c)+(s,)*nd,requires_grad=True)
    y = daq(x); g = torch.randn_like(y)
    f = lambda: daq(x).backward(g)
    for _ in range(3): f()
    res[str((n,c,co,s,k,st,nd))] = min(timeit.repeat(f, number=2, repeat=8))/2*1e3
print(json.dumps([mmdaq.__file__.split('/')[2], res]))
