"""One 3x3 convolution weight gradient, four ways, at the U-Net's training shapes.

    .venv/bin/python experiments/benchmark/weight_grad.py

Prints ms and GFLOP/s of: XLA's own gradient (jax.vjp of lax.conv), im2col + one einsum in
XLA, the 9 taps as split-K batched dots in XLA (the batch*space contraction cut into P
blocks, summed; P = batch, i.e. one block per image), 9 shifted matmuls on flat views in XLA
(the custom-VJP candidate) and in NumPy
(OpenBLAS), the NumPy one through jax.pure_callback, and (batch 16) XLA and the XLA flat
shifts on 8 batch slices of 2 (what model.batch_chunks=8 does). Run it idle.
"""
import time, numpy as np, jax, jax.numpy as jnp
from jax import lax
def med(fn, *a, r=15):
  jax.block_until_ready(fn(*a)); ts=[]
  for _ in range(r):
    t=time.perf_counter(); jax.block_until_ready(fn(*a)); ts.append(time.perf_counter()-t)
  return np.median(ts)
def conv(x,w): return lax.conv_general_dilated(x,w,(1,1),'SAME',dimension_numbers=('NHWC','HWIO','NHWC'))
def np_wgrad(x, dy):
  # x (b,H,W,Ci), dy (b,H,W,Co) -> (3,3,Ci,Co) via flat-shift views, OpenBLAS
  b,H,W,Ci = x.shape; Co = dy.shape[-1]
  Wp = W+2; Hp = H+2
  xp = np.zeros((b*Hp*Wp + 2*Wp+2, Ci), np.float32)
  xp[:b*Hp*Wp].reshape(b,Hp,Wp,Ci)[:,1:H+1,1:W+1] = x
  dyp = np.zeros((b*Hp*Wp, Co), np.float32)
  dyp.reshape(b,Hp,Wp,Co)[:,:H,:W] = dy
  N = b*Hp*Wp
  out = np.empty((3,3,Ci,Co), np.float32)
  for ky in range(3):
    for kx in range(3):
      o = ky*Wp+kx
      out[ky,kx] = xp[o:o+N].T @ dyp
  return out
def xla_flat_wgrad(x, dy):
  # the same 9 flat-shift products as np_wgrad, in XLA: (N, Ci)^T @ (N, Co) per tap
  b,H,W,Ci = x.shape; Hp, Wp = H+2, W+2; N = b*Hp*Wp
  xp = jnp.pad(jnp.pad(x,((0,0),(1,1),(1,1),(0,0))).reshape(N,Ci), ((0,2*Wp+2),(0,0)))
  dyp = jnp.pad(dy,((0,0),(0,2),(0,2),(0,0))).reshape(N,-1)
  taps = [lax.dot_general(lax.slice_in_dim(xp,o,o+N), dyp, (((0,),(0,)),((),())))
          for o in (ky*Wp+kx for ky in range(3) for kx in range(3))]
  return jnp.stack(taps).reshape(3,3,Ci,-1)
def splitk_wgrad(x, dy):
  # each tap as a batched dot over P = b blocks of H*W rows, then summed over the blocks
  b,H,W,Ci = x.shape; Co = dy.shape[-1]
  xp = jnp.pad(x,((0,0),(1,1),(1,1),(0,0))); dyb = dy.reshape(b,-1,Co)
  taps = [jnp.einsum('pnc,pno->co', xp[:,ky:ky+H,kx:kx+W].reshape(b,-1,Ci), dyb)
          for ky in range(3) for kx in range(3)]
  return jnp.stack(taps).reshape(3,3,Ci,Co)
def main(b, H, Ci, Co):
  k = jax.random.key(0)
  x = jax.random.normal(k,(b,H,H,Ci)); w = jax.random.normal(k,(3,3,Ci,Co))*0.1
  dy = jax.random.normal(jax.random.key(1),(b,H,H,Co))
  flop = 2*b*H*H*9*Ci*Co
  f_xla = jax.jit(lambda x,dy: jax.vjp(lambda w: conv(x,w), w)[1](dy)[0])
  ref = np.asarray(f_xla(x,dy))
  t = med(f_xla,x,dy); print(f"b{b} {H} {Ci}->{Co} xla wgrad {t*1e3:.2f} ms {flop/t/1e9:.0f} GF/s")
  def im2col(x,dy):
    xp = jnp.pad(x,((0,0),(1,1),(1,1),(0,0)))
    cols = jnp.concatenate([xp[:,ky:ky+H,kx:kx+H] for ky in range(3) for kx in range(3)],-1)
    return jnp.einsum('bhwk,bhwo->ko',cols,dy).reshape(3,3,Ci,Co)
  f = jax.jit(im2col); np.testing.assert_allclose(f(x,dy),ref,rtol=1e-3,atol=1e-2)
  t = med(f,x,dy); print(f"   xla im2col {t*1e3:.2f} ms {flop/t/1e9:.0f}")
  f = jax.jit(splitk_wgrad); np.testing.assert_allclose(f(x,dy),ref,rtol=1e-3,atol=2e-2)
  t = med(f,x,dy); print(f"   xla split-K taps {t*1e3:.2f} ms {flop/t/1e9:.0f}")
  f = jax.jit(xla_flat_wgrad); np.testing.assert_allclose(f(x,dy),ref,rtol=1e-3,atol=2e-2)
  t = med(f,x,dy); print(f"   xla flat-shift {t*1e3:.2f} ms {flop/t/1e9:.0f}")
  xn, dyn = np.asarray(x), np.asarray(dy)
  np.testing.assert_allclose(np_wgrad(xn,dyn),ref,rtol=1e-3,atol=1e-2)
  t = med(lambda a,c: np_wgrad(a,c), xn, dyn); print(f"   numpy flat-shift {t*1e3:.2f} ms {flop/t/1e9:.0f}")
  cb = jax.jit(lambda x,dy: jax.pure_callback(np_wgrad, jax.ShapeDtypeStruct((3,3,Ci,Co),jnp.float32), x, dy))
  t = med(cb,x,dy); print(f"   pure_callback {t*1e3:.2f} ms {flop/t/1e9:.0f}")
  # 8 slices in one program (batch_chunks)
  if b==16:
    def sl(fn):
      return jax.jit(lambda x,dy: sum(fn(x[i*2:(i+1)*2],dy[i*2:(i+1)*2]) for i in range(8)))
    t = med(sl(lambda a,c: jax.vjp(lambda w: conv(a,w), w)[1](c)[0]),x,dy); print(f"   xla 8 slices {t*1e3:.2f} ms {flop/t/1e9:.0f}")
    t = med(sl(xla_flat_wgrad),x,dy); print(f"   xla flat-shift 8 slices {t*1e3:.2f} ms {flop/t/1e9:.0f}")
    t = med(sl(lambda a,c: jax.pure_callback(np_wgrad, jax.ShapeDtypeStruct((3,3,Ci,Co),jnp.float32), a, c)),x,dy); print(f"   callback 8 slices {t*1e3:.2f} ms {flop/t/1e9:.0f}")
a = np.random.rand(2048,2048).astype(np.float32)
t=time.perf_counter(); [a@a for _ in range(5)]; print("numpy matmul GF/s", 5*2*2048**3/(time.perf_counter()-t)/1e9)
for s in [(16,64,32,32),(2,64,32,32),(16,32,64,64),(16,16,128,64)]:
  main(*s)
