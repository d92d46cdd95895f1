//! Hand-written CPU kernels of the serving path, where candle's scalar `exp`, `tanh` and `erf`
//! (one call per element) cost a large share of a re-ranking or an embedding:
//! - the log-probabilities of a few chosen tokens from logits over a whole vocabulary, the name
//!   answers' scores. candle's `log_softmax` then a gather makes four full-size temporaries and
//!   calls `exp` on every entry: on Gemma 3's 262k vocabulary, about 110 answer-tree nodes per
//!   mention at k = 10, that was a sixth of a re-ranking (make bench). Here each row's
//!   log-partition is one vectorised pass over the logits where they lie;
//! - Gemma's GELU (tanh approximation): through glibc's `tanhf`, 13 % of a re-ranking's
//!   samples under `perf record` (make bench's prompts); BERT's GELU (erf), for the sentence
//!   encoder, likewise through a scalar `erf`.
//!
//! All rest on one vectorisable `exp`, within a few ulp of the exact value.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

/// Log-probability of each pick (row, token) of `logits` [rows, vocab]: the token's logit minus
/// its row's log-sum-exp over the whole vocabulary, each row's computed once.
pub fn picked_log_probs(logits: &Tensor, picks: &[(usize, u32)]) -> candle_core::Result<Vec<f32>> {
    let logits = logits.contiguous()?;
    let (rows, vocab) = logits.dims2()?;
    let (storage, layout) = logits.storage_and_layout();
    let copied;
    let values: &[f32] = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(cpu), Some((start, end))) => &cpu.as_slice::<f32>()?[start..end],
        // On a GPU the rows come to the host once; a vocabulary of logits is small next to a pass.
        _ => {
            copied = logits.flatten_all()?.to_vec1::<f32>()?;
            &copied
        }
    };
    let mut log_partitions: Vec<Option<f32>> = vec![None; rows];
    picks
        .iter()
        .map(|&(row, token)| {
            if row >= rows || token as usize >= vocab {
                candle_core::bail!("token {token} of row {row} is outside logits [{rows}, {vocab}]");
            }
            let logits_of_row = &values[row * vocab..(row + 1) * vocab];
            let log_partition = *log_partitions[row].get_or_insert_with(|| log_sum_exp(logits_of_row));
            Ok(logits_of_row[token as usize] - log_partition)
        })
        .collect()
}

/// Whether the CPU has AVX2: the crate is built for baseline x86-64 (SSE2, 4 lanes), and the
/// kernels' loops are compiled a second time for AVX2 (8 lanes), chosen at run time.
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

const LANES: usize = 16;

/// ln Σ exp(x) over a row, shifted by its maximum so that no term overflows.
fn log_sum_exp(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // Safety: the CPU has AVX2.
        return unsafe { log_sum_exp_avx2(row) };
    }
    log_sum_exp_of(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn log_sum_exp_avx2(row: &[f32]) -> f32 {
    log_sum_exp_of(row)
}

#[inline(always)]
fn log_sum_exp_of(row: &[f32]) -> f32 {
    // Fixed lanes let the compiler vectorise the reductions (floating-point addition is not
    // associative, so it will not reorder a plain sum).
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks.clone() {
        for (m, &x) in lane_max.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = lane_max.iter().chain(tail).copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let mut lane_sum = [0f32; LANES];
    for chunk in chunks {
        for (s, &x) in lane_sum.iter_mut().zip(chunk) {
            *s += exp_non_positive(x - max);
        }
    }
    let sum: f64 =
        lane_sum.iter().map(|&s| s as f64).sum::<f64>() + tail.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>();
    max + sum.ln() as f32
}

/// e^x for x ≤ 0 (Cephes' expf: e^x = 2^n e^r with |r| ≤ ln 2 / 2 and e^r by a polynomial,
/// within 2 ulp of the exact value), written without calls or branches so that it vectorises.
/// Below -87.3 it returns about 1e-38 instead of a subnormal or 0: nothing next to the
/// maximum's e^0 = 1 in a sum.
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    const ROUND_TO_NEAREST: f32 = 12_582_912.0; // 1.5 × 2^23
    let x = if x < -87.3 { -87.3 } else { x };
    // Adding 1.5 × 2^23 rounds x log2(e) to the integer n, which then sits in the low bits.
    let shifted = x * std::f32::consts::LOG2_E + ROUND_TO_NEAREST;
    let n = shifted - ROUND_TO_NEAREST;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let polynomial = 1.0
        + r
        + r * r
            * (0.5
                + r * (1.666_666_5e-1
                    + r * (4.166_579_6e-2 + r * (8.333_452e-3 + r * (1.398_199_9e-3 + r * 1.987_569_2e-4)))));
    // 2^n from those bits: `n as i32` would be a saturating conversion, one lane at a time.
    let n_bits = shifted.to_bits() as i32 - ROUND_TO_NEAREST.to_bits() as i32;
    polynomial * f32::from_bits(((n_bits + 127) << 23) as u32)
}

/// Gemma's GELU, tanh approximation (PyTorch's `gelu(approximate="tanh")`): candle's own on other
/// devices and in training (which needs its gradient), this kernel when serving on the CPU.
pub fn gelu_tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    elementwise_on_cpu(x, Elementwise("gelu-tanh", gelu_tanh_of), Tensor::gelu)
}

/// BERT's GELU, exact form (erf): candle's own on other devices and in training, this kernel
/// when serving on the CPU, where candle's calls a scalar `erf` per element.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    elementwise_on_cpu(x, Elementwise("gelu-erf", gelu_erf_of), Tensor::gelu_erf)
}

/// `kernel` over an f32 tensor on the CPU; candle's `otherwise` elsewhere.
fn elementwise_on_cpu<F: Fn(f32) -> f32 + Send + Sync>(
    x: &Tensor,
    kernel: Elementwise<F>,
    otherwise: fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(&kernel)
    } else {
        otherwise(x)
    }
}

/// A function applied to every value of a contiguous f32 tensor on the CPU. `F` is a function
/// item, so each kernel is compiled (and vectorised) on its own.
struct Elementwise<F>(&'static str, F);

impl<F: Fn(f32) -> f32 + Send + Sync> CustomOp1 for Elementwise<F> {
    fn name(&self) -> &'static str {
        self.0
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: the input is not contiguous", self.0);
        };
        let values = &storage.as_slice::<f32>()?[start..end];
        Ok((CpuStorage::F32(map_values(values, &self.1)), layout.shape().clone()))
    }
}

/// `f` of every value, by the AVX2 compilation where the CPU has AVX2.
fn map_values<F: Fn(f32) -> f32>(values: &[f32], f: &F) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // Safety: the CPU has AVX2.
        return unsafe { map_values_avx2(values, f) };
    }
    values.iter().map(|&x| f(x)).collect()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn map_values_avx2<F: Fn(f32) -> f32>(values: &[f32], f: &F) -> Vec<f32> {
    values.iter().map(|&x| f(x)).collect()
}

/// 0.5 x (1 + tanh(u)) with u = √(2/π) (x + 0.044715 x³), written as x · sigmoid(2u) so that
/// one exp of a non-positive argument serves both signs without cancellation.
#[inline(always)]
fn gelu_tanh_of(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    let e = exp_non_positive(-2.0 * u.abs());
    let sigmoid = if u >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
    x * sigmoid
}

/// 0.5 x (1 + erf(z)) with z = x / √2. With erfc(|z|) ≈ p(t) e^(-z²), t = 1 / (1 + 0.3275911 |z|)
/// (Abramowitz and Stegun 7.1.26, absolute error at most 1.5e-7), 1 + erf(z) is 2 - erfc(|z|)
/// for z ≥ 0 and erfc(|z|) for z < 0: the negative side without cancellation.
#[inline(always)]
fn gelu_erf_of(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let p = t * (0.254_829_6 + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let erfc = p * exp_non_positive(-z * z);
    let one_plus_erf = if x >= 0.0 { 2.0 - erfc } else { erfc };
    0.5 * x * one_plus_erf
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn exp_is_within_a_few_ulp_of_the_exact_value_down_to_the_clamp() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let exact = (x as f64).exp();
            let relative = ((exp_non_positive(x) as f64 - exact) / exact).abs();
            assert!(relative < 3e-7, "e^{x}: relative error {relative}");
            x -= 0.0137;
        }
        assert!(exp_non_positive(-1000.0) < 1e-37);
        assert_eq!(exp_non_positive(0.0), 1.0);
    }

    #[test]
    fn picked_log_probs_are_log_softmax_then_gather() -> candle_core::Result<()> {
        // Logits of a real model's range (-79 to 40), over a vocabulary that is not a multiple
        // of the lanes, and a row whose maximum is in the tail.
        let vocab = 262_147;
        let row = |seed: u64| -> Vec<f32> {
            let mut state = seed;
            (0..vocab)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 119.0 - 79.0
                })
                .collect()
        };
        let mut last = row(3);
        last[vocab - 1] = 55.0;
        let values: Vec<f32> = row(1).into_iter().chain(row(2)).chain(last).collect();
        let logits = Tensor::from_vec(values, (3, vocab), &Device::Cpu)?;
        let picks = [(0, 7), (2, 262_146), (1, 0), (0, 262_000), (2, 5)];
        let got = picked_log_probs(&logits, &picks)?;
        assert!(picked_log_probs(&logits, &[(3, 0)]).is_err() && picked_log_probs(&logits, &[(0, 262_147)]).is_err());
        let reference = candle_nn::ops::log_softmax(&logits.to_dtype(candle_core::DType::F64)?, D::Minus1)?;
        for (&(row, token), got) in picks.iter().zip(got) {
            let want = reference.get(row)?.get(token as usize)?.to_scalar::<f64>()?;
            assert!((got as f64 - want).abs() < 1e-5, "({row}, {token}): {got} against {want}");
        }
        Ok(())
    }

    #[test]
    fn a_row_of_equal_logits_gives_the_uniform_log_probability() {
        let row = vec![-3.5f32; 1000];
        assert!((log_sum_exp(&row) - (-3.5 + 1000f32.ln())).abs() < 1e-5);
    }

    #[test]
    fn gelu_is_pytorchs_tanh_approximation() -> candle_core::Result<()> {
        let reference =
            |x: f64| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
        let xs: Vec<f32> =
            (-4000..=4000).map(|i| i as f32 * 0.005).chain([-30.0, -12.0, 12.0, 30.0, 1e-6, -1e-6]).collect();
        for &x in &xs {
            let want = reference(x as f64);
            let error = (gelu_tanh_of(x) as f64 - want).abs();
            assert!(error <= 1e-6 * want.abs().max(1e-3), "gelu({x}) = {} against {want}", gelu_tanh_of(x));
        }
        // The tensor form, and a non-contiguous input.
        let tensor = Tensor::from_vec(xs.clone(), xs.len(), &Device::Cpu)?;
        let candle = tensor.gelu()?.to_vec1::<f32>()?;
        for (got, want) in gelu_tanh(&tensor)?.to_vec1::<f32>()?.iter().zip(&candle) {
            assert!((got - want).abs() <= 2e-6 * want.abs().max(1.0));
        }
        let grid = Tensor::from_vec(xs[..16].to_vec(), (4, 4), &Device::Cpu)?.t()?;
        let want: Vec<f32> = grid.to_vec2::<f32>()?.concat().into_iter().map(gelu_tanh_of).collect();
        assert_eq!(gelu_tanh(&grid)?.to_vec2::<f32>()?.concat(), want);
        Ok(())
    }

    #[test]
    fn gelu_erf_is_the_exact_gelu() -> candle_core::Result<()> {
        let xs: Vec<f32> =
            (-4000..=4000).map(|i| i as f32 * 0.005).chain([-30.0, -12.0, 12.0, 30.0, 1e-6, -1e-6, 0.0]).collect();
        // candle's erf GELU in f64 as the reference.
        let tensor = Tensor::from_vec(xs.clone(), xs.len(), &Device::Cpu)?;
        let reference = tensor.to_dtype(candle_core::DType::F64)?.gelu_erf()?.to_vec1::<f64>()?;
        let got = gelu_erf(&tensor)?.to_vec1::<f32>()?;
        for ((&x, &got), &want) in xs.iter().zip(&got).zip(&reference) {
            let error = (got as f64 - want).abs();
            assert!(error <= 4e-7 * (x.abs() as f64).max(1e-3), "gelu({x}) = {got} against {want}");
        }
        // A non-contiguous input.
        let grid = Tensor::from_vec(xs[..16].to_vec(), (4, 4), &Device::Cpu)?.t()?;
        let want: Vec<f32> = grid.to_vec2::<f32>()?.concat().into_iter().map(gelu_erf_of).collect();
        assert_eq!(gelu_erf(&grid)?.to_vec2::<f32>()?.concat(), want);
        Ok(())
    }
}
