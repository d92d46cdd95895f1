//! Differentiable layer norm and softmax. candle's fused kernels for these have no backward
//! and its composed versions run 5 to 8 passes over memory, each with its own allocation, in
//! both directions. On the CPU these are one fused pass forward and one backward (custom ops
//! with a `bwd`); on other devices the composed, differentiable candle operations.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};

/// Layer norm over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op3(weight, bias, LayerNorm { eps })
    } else {
        candle_nn::ops::layer_norm_slow(x, weight, bias, eps)
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// The f32 contents of a contiguous CPU tensor.
fn slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<f32>()?[start..end]),
        None => candle_core::bail!("norm kernels need contiguous inputs"),
    }
}

/// Mean and 1 / standard deviation of a row.
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "belink-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let n = w.len();
        let mut out = vec![0f32; x.len()];
        for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let (mean, rstd) = moments(row, self.eps);
            for i in 0..n {
                dst[i] = (row[i] - mean) * rstd * w[i] + b[i];
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = weight.dim(0)?;
        let rows = x.elem_count() / n;
        // One flat result: grad x (rows * n), then grad weight (n), then grad bias (n).
        let all = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &LayerNormBackward { eps: self.eps })?;
        let grad_x = all.narrow(0, 0, rows * n)?.reshape(x.shape())?;
        let grad_w = all.narrow(0, rows * n, n)?;
        let grad_b = all.narrow(0, rows * n + n, n)?;
        Ok((Some(grad_x), Some(grad_w), Some(grad_b)))
    }
}

struct LayerNormBackward {
    eps: f32,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "belink-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let n = w.len();
        let rows = x.len() / n;
        let mut out = vec![0f32; x.len() + 2 * n];
        let (grad_x, grad_wb) = out.split_at_mut(x.len());
        let (grad_w, grad_b) = grad_wb.split_at_mut(n);
        let mut xhat = vec![0f32; n];
        for r in 0..rows {
            let (row, g) = (&x[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]);
            let (mean, rstd) = moments(row, self.eps);
            // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = g * w.
            let (mut sum_d, mut sum_dx) = (0f32, 0f32);
            for i in 0..n {
                xhat[i] = (row[i] - mean) * rstd;
                let d = g[i] * w[i];
                sum_d += d;
                sum_dx += d * xhat[i];
                grad_w[i] += g[i] * xhat[i];
                grad_b[i] += g[i];
            }
            let (mean_d, mean_dx) = (sum_d / n as f32, sum_dx / n as f32);
            let dst = &mut grad_x[r * n..(r + 1) * n];
            for i in 0..n {
                dst[i] = rstd * (g[i] * w[i] - mean_d - xhat[i] * mean_dx);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * n)))
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "belink-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(storage, layout)?;
        let n = layout.dims()[layout.dims().len() - 1];
        let mut out = vec![0f32; x.len()];
        for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (d, v) in dst.iter_mut().zip(row) {
                *d = (v - max).exp();
                sum += *d;
            }
            dst.iter_mut().for_each(|d| *d /= sum);
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward)?))
    }
}

/// dx = y * (g - sum(g * y)) per row.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "belink-softmax-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let n = l1.dims()[l1.dims().len() - 1];
        let mut out = vec![0f32; y.len()];
        for ((y, g), dst) in y.chunks_exact(n).zip(g.chunks_exact(n)).zip(out.chunks_exact_mut(n)) {
            let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
            for i in 0..n {
                dst[i] = y[i] * (g[i] - dot);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var, D};

    /// The fused ops give the composed operations' values and gradients.
    #[test]
    fn fused_ops_match_composed_ones_forward_and_backward() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, (5, 7), &dev)? + 0.5)?)?;
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, 7, &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 7, &dev)?)?;
        let probe = Tensor::randn(0f32, 1.0, (5, 7), &dev)?;
        let max_diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f32> {
            (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
        };
        let check = |fused: Tensor, composed: Tensor| -> candle_core::Result<()> {
            assert!(max_diff(&fused, &composed)? < 1e-5);
            let (g1, g2) = ((fused * &probe)?.sum_all()?.backward()?, (composed * &probe)?.sum_all()?.backward()?);
            for var in [&x, &w, &b] {
                if let (Some(a), Some(c)) = (g1.get(var), g2.get(var)) {
                    assert!(max_diff(a, c)? < 1e-4, "gradient differs by {}", max_diff(a, c)?);
                }
            }
            Ok(())
        };
        check(super::layer_norm(&x, &w, &b, 1e-5)?, candle_nn::ops::layer_norm_slow(&x, &w, &b, 1e-5)?)?;
        check(super::softmax_last_dim(&x)?, candle_nn::ops::softmax(&x, D::Minus1)?)?;
        Ok(())
    }
}
