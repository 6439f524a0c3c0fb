//! What the figures of a run depend on besides the code, recorded with them: the CPU (hosts
//! of one machine kind differ), a calibration loop's speed, how busy the machine was before
//! and during the run (other processes, steal time), and the environment variables that
//! change how the measured programs run, which the benchmark removes from their environment.

use std::time::Instant;

use serde_json::json;

/// Variables that would change how the measured programs run (log level, runtime threads,
/// allocator tuning): removed from every process the benchmark starts, so that they run on
/// their defaults whatever the caller's shell has exported (`tunnel-server` gets its log
/// level set explicitly).
pub const NEUTRALISED_ENV: [&str; 11] = [
    "RUST_LOG",
    "TOKIO_WORKER_THREADS",
    "TUNNEL_WORKERS",
    "MIMALLOC_PURGE_DELAY",
    "GLIBC_TUNABLES",
    "MALLOC_ARENA_MAX",
    "MALLOC_ARENA_TEST",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
];

/// Removes [`NEUTRALISED_ENV`] from `cmd`'s environment.
pub fn neutral_env(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    for v in NEUTRALISED_ENV {
        cmd.env_remove(v);
    }
    cmd
}

/// Aggregate CPU times of the machine from `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    total: u64,
    idle: u64,
    steal: u64,
}

impl CpuTimes {
    /// Now.
    pub fn now() -> Self {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        Self::parse(&text).unwrap_or_default()
    }

    fn parse(text: &str) -> Option<Self> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest times are inside user).
        let steal = *f.get(7)?;
        Some(Self {
            total: f.iter().take(8).sum(),
            idle: f.get(3)? + f.get(4)?,
            steal,
        })
    }
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Nanoseconds per step of a dependent multiply-rotate-xor chain on one core (no closed form
/// for the compiler to find, no parallelism for the core to find): a stand-in for the core's
/// clock, to tell hosts apart (the same code runs slower per request on a slower host).
/// Best of 20 runs of about 2 ms, shorter than a scheduler slice, so that on a busy machine
/// some run is not preempted.
pub fn calibration_ns() -> f64 {
    const STEPS: u64 = 1_000_000;
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let t0 = Instant::now();
        let mut x = std::hint::black_box(1u64);
        for i in 0..STEPS {
            x = x.wrapping_mul(6364136223846793005).rotate_left(7) ^ i;
        }
        std::hint::black_box(x);
        best = best.min(t0.elapsed().as_nanos() as f64 / STEPS as f64);
    }
    best
}

fn cpuinfo(field: &str) -> Option<String> {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn vulnerability(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/devices/system/cpu/vulnerabilities/{name}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The machine as the run started.
#[derive(Debug, Clone)]
pub struct Before {
    load: Option<f64>,
    cpu: CpuTimes,
    calibration_ns: f64,
    env: Vec<(String, String)>,
}

/// Takes the machine's state before the run.
pub fn before() -> Before {
    Before {
        load: load_average(),
        cpu: CpuTimes::now(),
        calibration_ns: calibration_ns(),
        env: NEUTRALISED_ENV
            .iter()
            .filter_map(|v| Some((v.to_string(), std::env::var(v).ok()?)))
            .collect(),
    }
}

impl Before {
    /// Variables set in the caller's environment that the benchmark removed.
    pub fn removed_env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The JSON `machine` object at the end of the run.
    pub fn describe(&self) -> serde_json::Value {
        let after = CpuTimes::now();
        let total = after.total.saturating_sub(self.cpu.total).max(1) as f64;
        let steal = after.steal.saturating_sub(self.cpu.steal) as f64;
        let idle = after.idle.saturating_sub(self.cpu.idle) as f64;
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": cpuinfo("model name"),
            "cpu_family_model": format!(
                "{}/{}",
                cpuinfo("cpu family").unwrap_or_default(),
                cpuinfo("model\t").unwrap_or_default()
            ),
            "cpu_mhz": cpuinfo("cpu MHz"),
            "calibration_ns_per_step": self.calibration_ns,
            "kernel": kernel.trim(),
            "mitigations": {
                "spec_rstack_overflow": vulnerability("spec_rstack_overflow"),
                "spectre_v2": vulnerability("spectre_v2"),
            },
            "load_average_before": self.load,
            "load_average_after": load_average(),
            "steal_percent": 100.0 * steal / total,
            "idle_percent": 100.0 * idle / total,
            "removed_env": self.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "load_generator": "wrk -t1 -c50 --latency",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::CpuTimes;

    #[test]
    fn parses_proc_stat() {
        let t = CpuTimes::parse("cpu  100 5 50 800 10 0 3 7 0 0\ncpu0 1 2 3 4 5 6 7 8\n")
            .expect("cpu line");
        assert_eq!(t.total, 975);
        assert_eq!(t.idle, 810);
        assert_eq!(t.steal, 7);
        assert!(CpuTimes::parse("intr 1 2 3\n").is_none());
    }
}
