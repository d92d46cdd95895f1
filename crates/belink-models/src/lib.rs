//! BeLink's neural models on candle, used by the model server only (never inside PostgreSQL).

pub mod bert;
pub mod cli;
pub mod encoder;
mod kernels;
pub mod llm;
mod norm;
pub mod streams;
pub mod train;

use candle_core::Device;

/// Sets candle's thread counts; call at the start of `main`, before any other thread exists.
/// Explicit `CANDLE_NUM_THREADS` and `RAYON_NUM_THREADS` are respected.
///
/// - Element-wise operations run inline on the calling thread. By default candle hands them
///   to one global pool of its own, shared by every thread behind a lock, so our streams (one
///   single-thread pool per core, see [`streams`]) would queue for it and its threads spin
///   between operations. Measured on 2 cores: encoder batches of 256 went from 317 to 532
///   names/s.
/// - Matrix products ask for the thread count at every call; unset, candle counts physical
///   cores by parsing /proc/cpuinfo each time (5% of the encoder's time on one short text).
pub fn prepare_candle_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        std::env::set_var("RAYON_NUM_THREADS", cores.to_string());
    }
}

/// Makes the allocator keep freed memory for reuse instead of returning it to the system.
/// Training allocates and frees buffers of megabytes at every step (activations, gradients);
/// glibc serves each from fresh pages of the kernel, which it zeroes: measured on 2 cores, 30%
/// of a training step went to page faults and page clearing, and names/s rose from 57 to 76 at
/// batch 64 with this. Call at the start of a process that trains.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: mallopt only changes allocator thresholds.
    unsafe {
        // 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Gives the memory that [`keep_freed_memory`] kept back to the system: a long-running
/// process calls it when a training run ends, so its peak does not stay resident.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: malloc_trim only returns free pages of the heap to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Why a model could not be loaded or run. Each message names the file involved.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Weights(String),
    #[error("{0}")]
    Inference(String),
}

/// The device named by `belink.device`: `cpu`, `cuda` (or `cuda:N`), or `auto` (CUDA when this
/// build has it and a GPU answers, else CPU).
pub fn select_device(name: &str) -> Result<Device, ModelError> {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" | "" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        cuda if cuda.starts_with("cuda") => {
            let ordinal = cuda.strip_prefix("cuda").unwrap_or("").trim_start_matches(':');
            let ordinal = if ordinal.is_empty() {
                0
            } else {
                ordinal.parse().map_err(|_| ModelError::Config(format!("bad device '{name}'")))?
            };
            Device::new_cuda(ordinal).map_err(|e| {
                ModelError::Config(format!(
                    "device '{name}' is not available ({e}); this build has CUDA: {}",
                    cfg!(feature = "cuda")
                ))
            })
        }
        other => Err(ModelError::Config(format!("unknown device '{other}': use auto, cpu or cuda[:N]"))),
    }
}
