//! Matrix products on Intel AMX (Advanced Matrix Extensions, Sapphire Rapids and later) in
//! bfloat16 with f32 accumulation, for weights rounded to bfloat16 once at load and inputs
//! rounded at each product. A re-ranking's time is mostly the re-ranker's products; on AMX
//! they take it to about half of what f32 products (`gemm`'s AVX-512 kernels) take
//! (BENCHMARKS.md).
//!
//! candle has no AMX path and Rust's AMX intrinsics are unstable, so the tile instructions are
//! written as inline assembly. The kernel keeps four 16 × 16 f32 accumulator tiles (a 32 × 32
//! block of the output) and runs the inner dimension in steps of 32.
//!
//! Linux hands AMX's tile state to a process only when asked (`arch_prctl`); [`available`]
//! asks once and answers false when the CPU or the kernel says no.

use std::sync::OnceLock;

use candle_core::{Storage, Tensor};

/// Rows and f32 columns of an accumulator tile; bf16 pairs of the inner dimension per tile row.
const TILE: usize = 16;
/// The inner dimension covered by one tile product (16 pairs of bf16).
const TILE_K: usize = 32;
/// bf16 values in one packed B tile (16 rows of 64 bytes).
const TILE_VALUES: usize = TILE * TILE_K;
/// Bytes of a tile row, for every tile used here.
const TILE_ROW_BYTES: usize = 64;

/// Whether this CPU and kernel run AMX bf16 tile products (asked once per process).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
    let leaf = core::arch::x86_64::__cpuid_count(7, 0);
    if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
        return false;
    }
    // The tile data state is off until the process asks for it (Linux 5.16+).
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// f32 rounded to the nearest bfloat16 (ties to even), as bits.
fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    ((bits + rounding) >> 16) as u16
}

/// A weight matrix [out, in] in bfloat16, laid out as AMX's B operand: for each block of 16
/// outputs and each step of 32 inputs, one tile of 16 rows, row r holding the pairs
/// (w[o][2r], w[o][2r + 1]) of the 16 outputs o side by side.
pub struct PackedWeight {
    outputs: usize,
    inputs: usize,
    tiles: Vec<u16>,
}

impl PackedWeight {
    /// Whether a weight of this shape can be packed: both sides in whole pairs of tiles.
    pub fn fits(outputs: usize, inputs: usize) -> bool {
        outputs > 0 && inputs > 0 && outputs.is_multiple_of(2 * TILE) && inputs.is_multiple_of(TILE_K)
    }

    /// Packs `weight`, row-major [outputs, inputs]; None when the shape does not [`fit`](Self::fits).
    pub fn pack(weight: &[f32], outputs: usize, inputs: usize) -> Option<PackedWeight> {
        if !Self::fits(outputs, inputs) || weight.len() != outputs * inputs {
            return None;
        }
        let steps = inputs / TILE_K;
        let mut tiles = vec![0u16; outputs * inputs];
        for block in 0..outputs / TILE {
            for step in 0..steps {
                let tile = &mut tiles[(block * steps + step) * TILE_VALUES..][..TILE_VALUES];
                for pair in 0..TILE {
                    for column in 0..TILE {
                        let row = &weight[(block * TILE + column) * inputs + step * TILE_K + 2 * pair..];
                        tile[pair * 2 * TILE + 2 * column] = to_bf16(row[0]);
                        tile[pair * 2 * TILE + 2 * column + 1] = to_bf16(row[1]);
                    }
                }
            }
        }
        Some(PackedWeight { outputs, inputs, tiles })
    }

    /// x [rows, inputs] (row-major) times the weight's transpose: [rows, outputs]. Only call
    /// when [`available`] is true.
    pub fn product(&self, x: &[f32], rows: usize) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.inputs, "the input is not [rows, {}]", self.inputs);
        assert!(available(), "AMX is not available in this process");
        // Rows padded to whole pairs of tiles (zeros), rounded to bf16 once.
        let padded_rows = rows.div_ceil(2 * TILE) * 2 * TILE;
        let mut a = vec![0u16; padded_rows * self.inputs];
        for (rounded, &value) in a.iter_mut().zip(x) {
            *rounded = to_bf16(value);
        }
        let mut out = vec![0f32; padded_rows * self.outputs];
        let block_pairs = self.outputs / (2 * TILE);
        let threads = rayon::current_num_threads().clamp(1, block_pairs);
        let per_thread = block_pairs.div_ceil(threads);
        let out_address = out.as_mut_ptr() as usize;
        rayon::scope(|scope| {
            for first in (0..block_pairs).step_by(per_thread) {
                let a = &a;
                scope.spawn(move |_| {
                    let last = (first + per_thread).min(block_pairs);
                    // Each task writes its own columns of `out`: disjoint stores.
                    unsafe { self.blocks(a, padded_rows, first..last, out_address as *mut f32) };
                });
            }
        });
        out.truncate(rows * self.outputs);
        out
    }

    /// The output columns of `block_pairs` (32 each) for every pair of tile rows of `a`.
    ///
    /// Safety: AMX is available; `a` holds `rows` (a multiple of 32) rows of `inputs` bf16
    /// values; `out` points to `rows` × `outputs` f32 values no other thread writes in these
    /// columns.
    #[cfg(target_arch = "x86_64")]
    unsafe fn blocks(&self, a: &[u16], rows: usize, block_pairs: std::ops::Range<usize>, out: *mut f32) {
        use std::arch::asm;
        // Palette 1; tiles 0-3 accumulators (16 rows × 64 bytes), 4-5 A, 6-7 B: all 16 × 64.
        let mut config = [0u8; 64];
        config[0] = 1;
        for tile in 0..8 {
            config[16 + 2 * tile] = TILE_ROW_BYTES as u8;
            config[48 + tile] = TILE as u8;
        }
        let steps = self.inputs / TILE_K;
        let a_stride = self.inputs * 2;
        let out_stride = self.outputs * 4;
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) config.as_ptr(), options(nostack, readonly));
            for pair in block_pairs {
                let b0 = self.tiles.as_ptr().add(2 * pair * steps * TILE_VALUES);
                let b1 = b0.add(steps * TILE_VALUES);
                for row in (0..rows).step_by(2 * TILE) {
                    let a0 = a.as_ptr().add(row * self.inputs);
                    let a1 = a0.add(TILE * self.inputs);
                    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                    for step in 0..steps {
                        asm!(
                            "tileloadd tmm4, [{a0} + {sa}]",
                            "tileloadd tmm5, [{a1} + {sa}]",
                            "tileloadd tmm6, [{b0} + {sb}]",
                            "tileloadd tmm7, [{b1} + {sb}]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            "tdpbf16ps tmm2, tmm5, tmm6",
                            "tdpbf16ps tmm3, tmm5, tmm7",
                            a0 = in(reg) a0.add(step * TILE_K),
                            a1 = in(reg) a1.add(step * TILE_K),
                            b0 = in(reg) b0.add(step * TILE_VALUES),
                            b1 = in(reg) b1.add(step * TILE_VALUES),
                            sa = in(reg) a_stride,
                            sb = in(reg) TILE_ROW_BYTES,
                            options(nostack, readonly),
                        );
                    }
                    let c = out.add(row * self.outputs + 2 * pair * TILE);
                    asm!(
                        "tilestored [{c00} + {sc}], tmm0",
                        "tilestored [{c01} + {sc}], tmm1",
                        "tilestored [{c10} + {sc}], tmm2",
                        "tilestored [{c11} + {sc}], tmm3",
                        c00 = in(reg) c,
                        c01 = in(reg) c.add(TILE),
                        c10 = in(reg) c.add(TILE * self.outputs),
                        c11 = in(reg) c.add(TILE * self.outputs + TILE),
                        sc = in(reg) out_stride,
                        options(nostack),
                    );
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn blocks(&self, _: &[u16], _: usize, _: std::ops::Range<usize>, _: *mut f32) {
        unreachable!("AMX is x86-64 only")
    }
}

/// `x` [..., inputs] (f32, on the CPU) times the packed weight's transpose: [..., outputs].
pub fn linear(x: &Tensor, weight: &PackedWeight) -> candle_core::Result<Tensor> {
    let dims = x.dims();
    if dims.last() != Some(&weight.inputs) {
        candle_core::bail!("input {:?} does not end in the weight's {} inputs", dims, weight.inputs);
    }
    let x = x.contiguous()?;
    let rows = x.elem_count() / weight.inputs;
    let (storage, layout) = x.storage_and_layout();
    let product = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(cpu), Some((start, end))) => weight.product(&cpu.as_slice::<f32>()?[start..end], rows),
        _ => candle_core::bail!("bfloat16 tile products run on the CPU only"),
    };
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("checked above") = weight.outputs;
    Tensor::from_vec(product, shape, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-1, 1).
    fn random(count: usize, seed: u64) -> Vec<f32> {
        let mut random = belink_core::random::SeededRandom::new(seed);
        (0..count).map(|_| random.unit() * 2.0 - 1.0).collect()
    }

    fn bf16_value(x: f32) -> f32 {
        f32::from_bits((to_bf16(x) as u32) << 16)
    }

    #[test]
    fn rounds_to_the_nearest_bfloat16() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_value(-2.5), -2.5);
        // 1 + 2^-8 lies halfway between 1 and the next bfloat16 (1 + 2^-7): ties to even, 1.
        assert_eq!(bf16_value(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(bf16_value(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert!(bf16_value(f32::NAN).is_nan());
        assert_eq!(bf16_value(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn shapes_that_are_not_whole_tiles_are_not_packed() {
        assert!(PackedWeight::pack(&[0.0; 16 * 32], 16, 32).is_none());
        assert!(PackedWeight::pack(&[0.0; 32 * 48], 32, 48).is_none());
        assert!(PackedWeight::pack(&[0.0; 32 * 32], 32, 32).is_some());
    }

    /// The product equals an f64 product of the bf16-rounded operands (AMX accumulates in f32),
    /// for row counts that are and are not whole tiles.
    #[test]
    fn the_tile_product_is_the_product_of_the_rounded_operands() {
        if !available() {
            eprintln!("skipped: this CPU or kernel has no AMX");
            return;
        }
        let (outputs, inputs) = (96, 640);
        let weight = random(outputs * inputs, 1);
        let packed = PackedWeight::pack(&weight, outputs, inputs).unwrap();
        for rows in [1, 17, 32, 45] {
            let x = random(rows * inputs, rows as u64 + 2);
            let product = packed.product(&x, rows);
            assert_eq!(product.len(), rows * outputs);
            for r in 0..rows {
                for o in 0..outputs {
                    let expected: f64 = (0..inputs)
                        .map(|i| bf16_value(x[r * inputs + i]) as f64 * bf16_value(weight[o * inputs + i]) as f64)
                        .sum();
                    let got = product[r * outputs + o] as f64;
                    assert!((got - expected).abs() < 1e-3, "row {r} output {o}: {got} against {expected}");
                }
            }
        }
    }
}
