import time, torch, statistics
torch.set_num_threads(2)
aten = torch.ops.aten
shapes = [  # (N, Cin, H, W, Cout, k, stride, pad)
 (2,256,66,66,256,3,1,0),
 (1,256,66,66,256,3,1,0),
 (2,64,258,258,128,3,1,0),  # roughly
 (2,128,130,130,256,3,1,0),
 (1,128,128,128,256,4,2,1),
 (2,64,262,262,3,7,1,0),
]
def t(fn, n=7):
    fn(); ts=[]
    for _ in range(n):
        t0=time.perf_counter(); fn(); ts.append(time.perf_counter()-t0)
    return statistics.median(ts)*1e3
for (N,C,H,W,O,k,s,p) in shapes:
    x=torch.randn(N,C,H,W); w=torch.randn(O,C,k,k)*0.05
    y=torch.nn.functional.conv2d(x,w,None,s,p)
    go=torch.randn_like(y)
    args=lambda gox,xx,ww,mask: aten.convolution_backward(gox,xx,ww,[O],[s,s],[p,p],[1,1],False,[0,0],1,mask)
    nchw_in = t(lambda: args(go,x,w,[True,False,False]))
    cl = torch.channels_last
    def cl_in():
        gi = args(go.contiguous(memory_format=cl), x, w.contiguous(memory_format=cl), [True,False,False])[0]
        return gi.contiguous()
    cl_in_t = t(cl_in)
    nchw_w = t(lambda: args(go,x,w,[False,True,False]))
    both = t(lambda: args(go,x,w,[True,True,False]))
    print(f"{(N,C,H,W,O,k)}: in NCHW {nchw_in:.1f}  in CL+conv {cl_in_t:.1f}  w NCHW {nchw_w:.1f}  both NCHW {both:.1f}  hybrid {cl_in_t+nchw_w:.1f}", flush=True)
