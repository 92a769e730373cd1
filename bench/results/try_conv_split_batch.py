import time, torch, statistics
torch.set_num_threads(2)
aten = torch.ops.aten
def t(fn, n=9):
    fn(); ts=[]
    for _ in range(n):
        t0=time.perf_counter(); fn(); ts.append(time.perf_counter()-t0)
    return statistics.median(ts)*1e3
for (C,H,O) in [(256,66,256),(128,130,256),(64,258,128)]:
    x=torch.randn(2,C,H,H); w=torch.randn(O,C,3,3)*0.05
    y=torch.nn.functional.conv2d(x,w); go=torch.randn_like(y)
    bw=lambda g,xx,m: aten.convolution_backward(g,xx,w,[O],[1,1],[0,0],[1,1],False,[0,0],1,m)
    res={}
    for rnd in range(3):
        res.setdefault('b2 both',[]).append(t(lambda: bw(go,x,[True,True,True])))
        def split():
            a=bw(go[:1],x[:1],[True,True,True]); b=bw(go[1:],x[1:],[True,True,True])
            return torch.cat([a[0],b[0]]), a[1]+b[1], a[2]+b[2]
        res.setdefault('split both',[]).append(t(split))
        def split_w():
            gi=bw(go,x,[True,False,False])[0]
            a=bw(go[:1],x[:1],[False,True,True]); b=bw(go[1:],x[1:],[False,True,True])
            return gi,a[1]+b[1],a[2]+b[2]
        res.setdefault('b2 in + split w',[]).append(t(split_w))
    print(C,H,{k:[round(v,1) for v in vs] for k,vs in res.items()}, flush=True)
