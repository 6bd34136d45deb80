//! Which device inference runs on (`auto`, `cpu` or `cuda:N`, and what was actually used), and
//! how many copies of the model share it.

use std::{fmt, num::NonZero, str::FromStr};

use tch::{Cuda, Device, Kind};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first GPU if libtorch sees one, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (set by --device or XCAM_DEVICE): use auto, cpu or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The device to use; an explicit GPU that libtorch cannot see is an error, not a silent
    /// fall-back to the CPU.
    pub fn resolve(self) -> Result<Device, String> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto if Cuda::is_available() => Ok(Device::Cuda(0)),
            Self::Auto => Ok(Device::Cpu),
            Self::Cuda(n) => {
                let count = usize::try_from(Cuda::device_count()).unwrap_or(0);
                if n < count {
                    Ok(Device::Cuda(n))
                } else {
                    Err(format!(
                        "cuda:{n} was requested but libtorch sees {count} CUDA device(s)"
                    ))
                }
            }
        }
    }
}

/// The arithmetic a model's backbone and head run in (`--precision`). Maps, probabilities,
/// summaries and the out-of-distribution score are computed in fp32 whatever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    pub fn kind(self) -> Kind {
        match self {
            Self::Fp32 => Kind::Float,
            Self::Fp16 => Kind::Half,
            Self::Bf16 => Kind::BFloat16,
        }
    }

    /// What was asked for, else what a device runs unless told: fp32 on the CPU (its
    /// reduced-precision kernels are emulated on most CPUs, slower rather than faster), bf16 on
    /// a GPU.
    pub fn resolve(asked: Option<Self>, device: Device) -> Self {
        asked.unwrap_or(if device.is_cuda() {
            Self::Bf16
        } else {
            Self::Fp32
        })
    }
}

impl fmt::Display for Precision {
    /// The name `--precision` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().ok_or(fmt::Error)?;
        f.write_str(value.get_name())
    }
}

/// The name a device is reported under (`cpu`, `cuda:0`).
pub fn describe(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        _ => "cpu".into(),
    }
}

/// How many copies of a model run side by side on one device, and the CPU threads each gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    pub replicas: usize,
    /// libtorch intra-op threads per replica.
    pub threads: usize,
}

impl Parallelism {
    /// Most replicas `auto` starts on the CPU: each holds its own activations and gradients.
    const AUTO_CPU_REPLICAS: usize = 4;

    /// `requested` replicas, or by default: one on a GPU (batching keeps it busy); on the CPU one
    /// per core, up to four, the cores shared evenly. A DenseNet-sized model runs hundreds of
    /// small ops per pass, and with several threads each ends at a barrier: on 2 cores, two
    /// single-threaded replicas explained about 1.4× the images/s of one two-threaded copy, and
    /// a busy neighbour thread slows one replica instead of stalling every barrier.
    pub fn resolve(requested: Option<usize>, device: Device) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, NonZero::get);
        let replicas = requested
            .unwrap_or(if device.is_cuda() {
                1
            } else {
                cores.min(Self::AUTO_CPU_REPLICAS)
            })
            .max(1);
        Self {
            replicas,
            threads: (cores / replicas).max(1),
        }
    }

    /// Gives the calling thread, which is about to run a replica, its share of the cores. Per
    /// thread: OpenMP's thread count is each thread's own setting. A GPU keeps libtorch's default.
    pub fn enter(&self, device: Device) {
        if !device.is_cuda() {
            tch::set_num_threads(self.threads as i32);
        }
    }
}
