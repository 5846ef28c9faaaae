//! Machine facts: cores, cgroup limits, memory, process and thread limits, and the tier.
//!
//! Everything here is read from `/proc` and `/sys` (Linux-only). A fact that cannot be read is
//! `None` and shows as "unknown"; a limit that is not set ("max", RLIM_INFINITY) is `None` too,
//! and shows as "none".

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Martelli's tiers of scale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tier {
    /// 1: one core; 2: 2–8 cores; 3: 9 or more cores.
    pub(crate) level: u8,
    /// "1 core", "2–8 cores" or "9+ cores".
    pub(crate) name: String,
    /// What the tier means for the choice of backend.
    pub(crate) advice: String,
}

impl Tier {
    /// The tier of a machine on which a process may use `cores` cores.
    pub(crate) fn for_cores(cores: u64) -> Tier {
        let (level, name, advice) = match cores {
            0 | 1 => (
                1,
                "1 core",
                "one core: run CPU-bound work inline; parallel workers only add switching. Use \
                 async (or threads) to overlap waits",
            ),
            2..=8 => (
                2,
                "2–8 cores",
                "a few cores: processes (or threads, for Rust code) for CPU-bound work, threads or \
                 async for I/O-bound work",
            ),
            _ => (
                3,
                "9+ cores",
                "many cores: processes and threads on this machine; beyond it, distributed \
                 processing: use the cluster backend",
            ),
        };
        Tier {
            level,
            name: name.to_owned(),
            advice: advice.to_owned(),
        }
    }
}

/// What `martelli probe` reports about the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) cpu_model: Option<String>,
    pub(crate) kernel: String,
    pub(crate) logical_cores: u64,
    pub(crate) physical_cores: Option<u64>,
    pub(crate) available_cores: u64,
    pub(crate) cgroup_version: Option<u8>,
    pub(crate) cgroup_cpu_quota_cores: Option<f64>,
    pub(crate) cgroup_memory_max_bytes: Option<u64>,
    pub(crate) cgroup_pids_max: Option<u64>,
    pub(crate) memory_total_bytes: u64,
    pub(crate) memory_available_bytes: u64,
    pub(crate) rlimit_nproc: Option<u64>,
    pub(crate) threads_max: Option<u64>,
    pub(crate) pid_max: Option<u64>,
    pub(crate) page_size_bytes: u64,
    /// The load average over 1, 5 and 15 minutes when the probe started (runnable tasks).
    pub(crate) load_average: [f64; 3],
    pub(crate) tier: Tier,
}

impl Machine {
    /// The most threads plus processes this user can have at once, and the limit that sets it.
    pub(crate) fn task_limit(&self) -> Option<(u64, &'static str)> {
        [
            (self.rlimit_nproc, "RLIMIT_NPROC"),
            (self.threads_max, "threads-max"),
            (self.cgroup_pids_max, "cgroup pids.max"),
            (self.pid_max, "pid_max"),
        ]
        .into_iter()
        .filter_map(|(v, name)| v.map(|v| (v, name)))
        .min_by_key(|&(v, _)| v)
    }

    /// Memory this process can count on: the cgroup limit when there is one, else what the kernel
    /// reports as available.
    pub(crate) fn usable_memory_bytes(&self) -> u64 {
        match self.cgroup_memory_max_bytes {
            Some(limit) => limit.min(self.memory_total_bytes),
            None => self.memory_available_bytes,
        }
    }
}

/// Reads the machine facts.
pub(crate) fn read() -> Machine {
    let root = Path::new("/");
    let logical_cores = online_cpus(root).unwrap_or_else(|| martelli::available_cores() as u64);
    let available_cores = martelli::available_cores() as u64;
    let cgroup = Cgroup::read(root);
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let uname = rustix::system::uname();
    Machine {
        cpu_model: cpu_model(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default()),
        kernel: format!(
            "{} {}",
            uname.sysname().to_string_lossy(),
            uname.release().to_string_lossy()
        ),
        logical_cores,
        physical_cores: physical_cores(root),
        available_cores,
        cgroup_version: cgroup.version,
        cgroup_cpu_quota_cores: cgroup.cpu_quota_cores,
        cgroup_memory_max_bytes: cgroup.memory_max,
        cgroup_pids_max: cgroup.pids_max,
        memory_total_bytes: meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) * 1024,
        memory_available_bytes: meminfo_kib(&meminfo, "MemAvailable").unwrap_or(0) * 1024,
        rlimit_nproc: rustix::process::getrlimit(rustix::process::Resource::Nproc).current,
        threads_max: read_u64("/proc/sys/kernel/threads-max"),
        pid_max: read_u64("/proc/sys/kernel/pid_max"),
        page_size_bytes: rustix::param::page_size() as u64,
        load_average: parse_loadavg(&fs::read_to_string("/proc/loadavg").unwrap_or_default())
            .unwrap_or([0.0; 3]),
        tier: Tier::for_cores(effective_cores(available_cores, cgroup.cpu_quota_cores)),
    }
}

/// The cores that work can really use: the affinity count, capped by the cgroup quota (rounded up:
/// a quota of 1.5 cores still lets two threads run at once part of the time).
pub(crate) fn effective_cores(available: u64, quota: Option<f64>) -> u64 {
    match quota {
        Some(q) if q > 0.0 => available.min(q.ceil() as u64).max(1),
        _ => available.max(1),
    }
}

fn read_u64(path: impl AsRef<Path>) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            let key = key.trim();
            (key == "model name" || key == "Model" || key == "cpu model")
                .then(|| value.trim().to_owned())
        })
        .filter(|m| !m.is_empty())
}

fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Counts the CPUs in a list like `0-3,8,10-11` (sysfs `online`, `core_cpus_list`).
pub(crate) fn count_cpu_list(list: &str) -> Option<u64> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<u64>().ok()?;
                n += 1;
            }
        }
    }
    (n > 0).then_some(n)
}

fn online_cpus(root: &Path) -> Option<u64> {
    count_cpu_list(&fs::read_to_string(root.join("sys/devices/system/cpu/online")).ok()?)
}

/// Physical cores: distinct (package, core) pairs in sysfs topology, or in /proc/cpuinfo.
fn physical_cores(root: &Path) -> Option<u64> {
    let mut cores = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(root.join("sys/devices/system/cpu")) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_cpu = name
                .strip_prefix("cpu")
                .is_some_and(|n| n.parse::<u32>().is_ok());
            if !is_cpu {
                continue;
            }
            let topo = entry.path().join("topology");
            if let (Some(pkg), Some(core)) = (
                read_u64(topo.join("physical_package_id")),
                read_u64(topo.join("core_id")),
            ) {
                cores.insert((pkg, core));
            }
        }
    }
    if cores.is_empty() {
        return physical_cores_from_cpuinfo(&fs::read_to_string(root.join("proc/cpuinfo")).ok()?);
    }
    Some(cores.len() as u64)
}

/// Physical cores from /proc/cpuinfo's "physical id" and "core id" fields.
pub(crate) fn physical_cores_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    let mut cores = BTreeSet::new();
    for block in cpuinfo.split("\n\n") {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().parse::<u64>().ok())?
            })
        };
        if let (Some(pkg), Some(core)) = (field("physical id"), field("core id")) {
            cores.insert((pkg, core));
        }
    }
    (!cores.is_empty()).then_some(cores.len() as u64)
}

/// Limits from the cgroup this process is in: v2 when its unified hierarchy is mounted, v1 otherwise.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Cgroup {
    pub(crate) version: Option<u8>,
    pub(crate) cpu_quota_cores: Option<f64>,
    pub(crate) memory_max: Option<u64>,
    pub(crate) pids_max: Option<u64>,
}

/// Above this, a v1 memory limit means "no limit" (the kernel reports a page-rounded i64::MAX).
const V1_UNLIMITED: u64 = 1 << 62;

impl Cgroup {
    /// Reads the limits, with `root` standing for `/` (tests point it at a fake tree).
    pub(crate) fn read(root: &Path) -> Cgroup {
        let membership = fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
        let base = root.join("sys/fs/cgroup");
        if base.join("cgroup.controllers").exists() {
            // Pure v2: one hierarchy. Limits nest, so the tightest one on the path up counts.
            let rel = membership
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/");
            let dirs = ancestors(&base, rel);
            return Cgroup {
                version: Some(2),
                cpu_quota_cores: tightest(&dirs, |d| {
                    parse_cpu_max(&fs::read_to_string(d.join("cpu.max")).ok()?)
                }),
                memory_max: tightest(&dirs, |d| {
                    parse_max(&fs::read_to_string(d.join("memory.max")).ok()?)
                }),
                pids_max: tightest(&dirs, |d| {
                    parse_max(&fs::read_to_string(d.join("pids.max")).ok()?)
                }),
            };
        }
        if !base.join("cpu").is_dir() && !base.join("memory").is_dir() {
            return Cgroup::default();
        }
        // v1: one hierarchy per controller; in a container the recorded path often does not exist
        // inside the mount, whose root is then the container's own group.
        let controller_dirs = |controller: &str| -> Vec<PathBuf> {
            let mount = base.join(controller);
            let rel = membership
                .lines()
                .find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                    names.split(',').any(|n| n == controller).then_some(path)
                })
                .unwrap_or("/");
            ancestors(&mount, rel)
        };
        Cgroup {
            version: Some(1),
            cpu_quota_cores: tightest(&controller_dirs("cpu"), |d| {
                let quota: i64 = fs::read_to_string(d.join("cpu.cfs_quota_us"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                let period: i64 = fs::read_to_string(d.join("cpu.cfs_period_us"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
            }),
            memory_max: tightest(&controller_dirs("memory"), |d| {
                read_u64(d.join("memory.limit_in_bytes")).filter(|&v| v < V1_UNLIMITED)
            }),
            pids_max: tightest(&controller_dirs("pids"), |d| {
                parse_max(&fs::read_to_string(d.join("pids.max")).ok()?)
            }),
        }
    }
}

/// The directories from `base/rel` up to `base` that exist.
fn ancestors(base: &Path, rel: &str) -> Vec<PathBuf> {
    let mut dir = base.join(rel.trim().trim_start_matches('/'));
    let mut out = Vec::new();
    while dir.starts_with(base) {
        if dir.is_dir() {
            out.push(dir.clone());
        }
        if !dir.pop() {
            break;
        }
    }
    out
}

fn tightest<T: PartialOrd + Copy>(
    dirs: &[PathBuf],
    read: impl Fn(&Path) -> Option<T>,
) -> Option<T> {
    dirs.iter()
        .filter_map(|d| read(d))
        .fold(None, |best, v| match best {
            Some(b) if b <= v => Some(b),
            _ => Some(v),
        })
}

/// The three load averages of `/proc/loadavg`.
pub(crate) fn parse_loadavg(s: &str) -> Option<[f64; 3]> {
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// `max` → no limit; a number → that limit.
pub(crate) fn parse_max(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" { None } else { s.parse().ok() }
}

/// cgroup v2 `cpu.max`: `"$QUOTA $PERIOD"` or `"max $PERIOD"`, as a number of cores.
pub(crate) fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    Some(quota.parse::<f64>().ok()? / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_martellis_model() {
        assert_eq!(Tier::for_cores(1).level, 1);
        assert_eq!(Tier::for_cores(0).level, 1);
        assert_eq!(Tier::for_cores(2).level, 2);
        assert_eq!(Tier::for_cores(8).level, 2);
        assert_eq!(Tier::for_cores(9).level, 3);
        assert_eq!(Tier::for_cores(128).level, 3);
        assert!(Tier::for_cores(64).advice.contains("cluster"));
        assert_eq!(Tier::for_cores(4).name, "2–8 cores");
    }

    #[test]
    fn quota_caps_the_cores_that_count() {
        assert_eq!(effective_cores(16, None), 16);
        assert_eq!(effective_cores(16, Some(1.0)), 1);
        assert_eq!(effective_cores(16, Some(1.5)), 2);
        assert_eq!(effective_cores(2, Some(8.0)), 2);
        assert_eq!(Tier::for_cores(effective_cores(16, Some(0.5))).level, 1);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-3\n"), Some(4));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn cgroup_v2_values() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("50000"), Some(0.5));
        assert_eq!(parse_max("max\n"), None);
        assert_eq!(parse_max("1073741824\n"), Some(1 << 30));
    }

    #[test]
    fn load_averages() {
        assert_eq!(
            parse_loadavg("0.52 1.25 2.00 3/120 4567\n"),
            Some([0.52, 1.25, 2.0])
        );
        assert_eq!(parse_loadavg("0.52"), None);
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn hyperthreads_share_a_physical_core() {
        let cpuinfo = "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\n\
                       processor\t: 1\nphysical id\t: 0\ncore id\t: 0\n\n\
                       processor\t: 2\nphysical id\t: 0\ncore id\t: 1\n\n\
                       processor\t: 3\nphysical id\t: 1\ncore id\t: 0\n";
        assert_eq!(physical_cores_from_cpuinfo(cpuinfo), Some(3));
        assert_eq!(physical_cores_from_cpuinfo("processor : 0\n"), None);
    }

    #[test]
    fn cgroup_v2_tree_takes_the_tightest_limit() {
        let root = tempfile::tempdir().expect("temp dir");
        let r = root.path();
        fs::create_dir_all(r.join("proc/self")).expect("mkdir");
        fs::write(r.join("proc/self/cgroup"), "0::/app/job\n").expect("write");
        let cg = r.join("sys/fs/cgroup");
        fs::create_dir_all(cg.join("app/job")).expect("mkdir");
        fs::write(cg.join("cgroup.controllers"), "cpu memory pids\n").expect("write");
        fs::write(cg.join("app/cpu.max"), "200000 100000\n").expect("write");
        fs::write(cg.join("app/job/cpu.max"), "max 100000\n").expect("write");
        fs::write(cg.join("app/memory.max"), "max\n").expect("write");
        fs::write(cg.join("app/job/memory.max"), "536870912\n").expect("write");
        fs::write(cg.join("app/job/pids.max"), "max\n").expect("write");
        let got = Cgroup::read(r);
        assert_eq!(
            got,
            Cgroup {
                version: Some(2),
                cpu_quota_cores: Some(2.0),
                memory_max: Some(512 << 20),
                pids_max: None,
            }
        );
    }

    #[test]
    fn cgroup_v1_tree_and_unlimited_memory() {
        let root = tempfile::tempdir().expect("temp dir");
        let r = root.path();
        fs::create_dir_all(r.join("proc/self")).expect("mkdir");
        fs::write(
            r.join("proc/self/cgroup"),
            "4:memory:/gone\n3:cpu,cpuacct:/\n2:pids:/\n",
        )
        .expect("write");
        let cg = r.join("sys/fs/cgroup");
        for d in ["cpu", "memory", "pids"] {
            fs::create_dir_all(cg.join(d)).expect("mkdir");
        }
        fs::write(cg.join("cpu/cpu.cfs_quota_us"), "-1\n").expect("write");
        fs::write(cg.join("cpu/cpu.cfs_period_us"), "100000\n").expect("write");
        fs::write(
            cg.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .expect("write");
        fs::write(cg.join("pids/pids.max"), "4096\n").expect("write");
        let got = Cgroup::read(r);
        assert_eq!(
            got,
            Cgroup {
                version: Some(1),
                cpu_quota_cores: None,
                memory_max: None,
                pids_max: Some(4096),
            }
        );
    }

    #[test]
    fn no_cgroup_mount() {
        let root = tempfile::tempdir().expect("temp dir");
        assert_eq!(Cgroup::read(root.path()), Cgroup::default());
    }

    #[test]
    fn task_limit_is_the_smallest() {
        let mut m = read();
        m.rlimit_nproc = Some(500);
        m.threads_max = Some(100_000);
        m.cgroup_pids_max = None;
        m.pid_max = Some(32_768);
        assert_eq!(m.task_limit(), Some((500, "RLIMIT_NPROC")));
        m.rlimit_nproc = None;
        assert_eq!(m.task_limit(), Some((32_768, "pid_max")));
    }

    #[test]
    fn reads_this_machine() {
        let m = read();
        assert!(m.logical_cores >= 1);
        assert!(m.available_cores >= 1 && m.available_cores <= m.logical_cores.max(1024));
        assert!(m.memory_total_bytes > 0);
        assert!(m.page_size_bytes >= 4096);
        assert!(m.kernel.starts_with("Linux"));
    }
}
