//! Each GPU's memory as NVIDIA's management library (NVML) sees it, for `/metrics`: what this
//! process holds on it (its CUDA context and everything libtorch's caching allocator reserved,
//! so growth over a long batch shows) and what the whole device has in use.
//!
//! NVML is loaded when a worker drives GPUs, never on the CPU: the same binary runs where
//! there is no driver.

use std::sync::OnceLock;

use nvml_wrapper::{Nvml, enums::device::UsedGpuMemory};
use tch::Device;

/// The GPUs this process drives and how NVML names them.
pub struct GpuMemory {
    nvml: Nvml,
    /// (`cuda:N`, NVML's name for it: an index or a UUID).
    devices: Vec<(String, NvmlDevice)>,
}

enum NvmlDevice {
    Index(u32),
    Uuid(String),
}

static WATCHED: OnceLock<GpuMemory> = OnceLock::new();

/// Starts reporting the memory of `devices` at each scrape; nothing for the CPU, and a warning
/// (not a failure: metrics are not the job) where NVML or the device order is unavailable.
pub fn watch(devices: &[Device]) {
    let gpus: Vec<usize> = devices
        .iter()
        .filter_map(|d| match d {
            Device::Cuda(n) => Some(*n),
            _ => None,
        })
        .collect();
    if gpus.is_empty() || WATCHED.get().is_some() {
        return;
    }
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(e) => {
            tracing::warn!(error = %e, "NVML is unavailable: GPU memory is not reported");
            return;
        }
    };
    // NVML counts GPUs in PCI bus order. So does CUDA with CUDA_DEVICE_ORDER=PCI_BUS_ID, and
    // by default too where every GPU is the same model (it puts the fastest first, ties in bus
    // order); on a mix of models, cuda:N cannot be told apart without it.
    let pci_order = std::env::var("CUDA_DEVICE_ORDER").as_deref() == Ok("PCI_BUS_ID");
    if !pci_order && !all_alike(&nvml) {
        tracing::warn!(
            "GPUs of several models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: cuda:N cannot be \
             matched to a GPU, so GPU memory is not reported"
        );
        return;
    }
    // CUDA numbers the visible GPUs from 0; NVML sees every GPU of the machine.
    let visible: Option<Vec<String>> = std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let devices = gpus
        .into_iter()
        .filter_map(|n| {
            let name = match visible.as_ref().map(|v| v.get(n)) {
                None => NvmlDevice::Index(n as u32),
                Some(Some(id)) => match id.parse() {
                    Ok(index) => NvmlDevice::Index(index),
                    Err(_) if id.starts_with("GPU-") => NvmlDevice::Uuid(id.clone()),
                    Err(_) => return None,
                },
                Some(None) => return None,
            };
            Some((format!("cuda:{n}"), name))
        })
        .collect();
    let _ = WATCHED.set(GpuMemory { nvml, devices });
}

/// Whether every GPU NVML sees is the same model.
fn all_alike(nvml: &Nvml) -> bool {
    let count = nvml.device_count().unwrap_or(0);
    let names: Vec<String> = (0..count)
        .filter_map(|i| nvml.device_by_index(i).and_then(|d| d.name()).ok())
        .collect();
    names.len() == count as usize && names.windows(2).all(|w| w[0] == w[1])
}

/// Sets the GPU memory gauges, if [`watch`] found GPUs.
pub fn record() {
    let Some(watched) = WATCHED.get() else { return };
    let pid = std::process::id();
    for (label, name) in &watched.devices {
        let device = match name {
            NvmlDevice::Index(i) => watched.nvml.device_by_index(*i),
            NvmlDevice::Uuid(uuid) => watched.nvml.device_by_uuid(uuid.as_str()),
        };
        let Ok(device) = device else { continue };
        if let Ok(info) = device.memory_info() {
            metrics::gauge!("xcam_worker_gpu_memory_used_bytes", "device" => label.clone())
                .set(info.used as f64);
            metrics::gauge!("xcam_worker_gpu_memory_total_bytes", "device" => label.clone())
                .set(info.total as f64);
        }
        let held = device.running_compute_processes().ok().and_then(|ps| {
            ps.into_iter()
                .find(|p| p.pid == pid)
                .and_then(|p| match p.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => Some(bytes),
                    UsedGpuMemory::Unavailable => None,
                })
        });
        if let Some(bytes) = held {
            metrics::gauge!("xcam_worker_gpu_process_memory_bytes", "device" => label.clone())
                .set(bytes as f64);
        }
    }
}
