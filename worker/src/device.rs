//! Which devices inference runs on (`auto`, `cpu`, `cuda:N`, `cuda:all` or a list, and what was
//! actually used), and how many copies of the model share each.

use std::{fmt, num::NonZero, str::FromStr};

use tch::{Cuda, Device, Kind};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// Every GPU libtorch sees, else the CPU.
    Auto,
    Cpu,
    /// Every GPU libtorch sees; none is an error.
    CudaAll,
    /// These GPUs, in this order.
    Cuda(Vec<usize>),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "unknown device {s:?} (set by --device or XCAM_DEVICE): use auto, cpu, cuda:N, \
                 cuda:all or a list such as cuda:0,cuda:2"
            )
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(vec![0])),
            "cuda:all" => Ok(Self::CudaAll),
            list => {
                let mut gpus = Vec::new();
                for one in list.split(',') {
                    let n: usize = (one.trim().strip_prefix("cuda:"))
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(bad)?;
                    if gpus.contains(&n) {
                        return Err(format!("{s:?} names cuda:{n} twice"));
                    }
                    gpus.push(n);
                }
                Ok(Self::Cuda(gpus))
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::CudaAll => f.write_str("cuda:all"),
            Self::Cuda(gpus) => {
                let names: Vec<String> = gpus.iter().map(|n| format!("cuda:{n}")).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

impl DeviceSpec {
    /// The devices to use; an explicit GPU that libtorch cannot see is an error, not a silent
    /// fall-back to the CPU.
    pub fn resolve(&self) -> Result<Vec<Device>, String> {
        let count = usize::try_from(Cuda::device_count()).unwrap_or(0);
        let every_gpu = || (0..count).map(Device::Cuda).collect::<Vec<_>>();
        match self {
            Self::Cpu => Ok(vec![Device::Cpu]),
            Self::Auto if count > 0 && Cuda::is_available() => Ok(every_gpu()),
            Self::Auto => Ok(vec![Device::Cpu]),
            Self::CudaAll if count > 0 => Ok(every_gpu()),
            Self::CudaAll => Err("cuda:all was requested but libtorch sees no CUDA device".into()),
            Self::Cuda(gpus) => gpus
                .iter()
                .map(|&n| {
                    (n < count).then_some(Device::Cuda(n)).ok_or_else(|| {
                        format!("cuda:{n} was requested but libtorch sees {count} CUDA device(s)")
                    })
                })
                .collect(),
        }
    }

    /// The one device a single-device command (`explain`, `bench`) runs on: the first.
    pub fn resolve_one(&self) -> Result<Device, String> {
        Ok(self.resolve()?[0])
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

/// The names of several devices, as a worker registers them (`cuda:0,cuda:1`).
pub fn describe_all(devices: &[Device]) -> String {
    let names: Vec<String> = devices.iter().map(|&d| describe(d)).collect();
    names.join(",")
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

/// How many copies of a model run side by side on each device, and the CPU threads each gets.
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
        let cores = host_cores();
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

/// The cores this process may run on (1 when the system cannot say).
pub fn host_cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZero::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_parse_and_print_back() {
        for (text, spec) in [
            ("auto", DeviceSpec::Auto),
            ("CPU", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(vec![0])),
            ("cuda:all", DeviceSpec::CudaAll),
            ("cuda:0, cuda:2", DeviceSpec::Cuda(vec![0, 2])),
        ] {
            assert_eq!(text.parse::<DeviceSpec>(), Ok(spec.clone()), "{text}");
            assert_eq!(spec.to_string().parse::<DeviceSpec>(), Ok(spec));
        }
        for bad in ["gpu", "cuda:x", "cuda:0,cpu", "cuda:1,cuda:1", ""] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gpus_libtorch_cannot_see_are_an_error_not_the_cpu() {
        let count = usize::try_from(Cuda::device_count()).unwrap_or(0);
        let missing = DeviceSpec::Cuda(vec![count]);
        assert!(missing.resolve().unwrap_err().contains("libtorch sees"));
        assert_eq!(DeviceSpec::Cpu.resolve(), Ok(vec![Device::Cpu]));
        if count == 0 {
            assert!(DeviceSpec::CudaAll.resolve().is_err());
            assert_eq!(DeviceSpec::Auto.resolve(), Ok(vec![Device::Cpu]));
        } else {
            assert_eq!(DeviceSpec::CudaAll.resolve().unwrap().len(), count);
        }
    }
}
