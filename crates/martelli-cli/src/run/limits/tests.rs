use super::figures::*;
use super::*;
use std::path::PathBuf;

#[test]
fn load_takes_the_syntax_of_jobs() {
    assert_eq!(parse_load("3", 4).ok(), Some(3.0));
    assert_eq!(parse_load("1.5", 4).ok(), Some(1.5));
    assert_eq!(parse_load("100%", 4).ok(), Some(4.0));
    assert_eq!(parse_load("50%", 2).ok(), Some(1.0));
    assert_eq!(parse_load("+2", 4).ok(), Some(6.0));
    assert_eq!(parse_load("-1", 4).ok(), Some(3.0));
    // 0 is 0.01, as in GNU parallel; so is anything below.
    assert_eq!(parse_load("0", 4).ok(), Some(0.01));
    assert_eq!(parse_load("-8", 4).ok(), Some(0.01));
    for bad in [
        "", "x", "1.", ".5", "1e3", "%", "+", "2.5%", "-1.5", "inf", "NaN", "1 ",
    ] {
        let err = parse_load(bad, 4).expect_err(bad).to_string();
        assert!(err.contains("invalid --load"), "{bad:?}: {err}");
    }
}

#[test]
fn memfree_takes_gnu_suffixes() {
    assert_eq!(parse_memory("--memfree", "1G").ok(), Some(1 << 30));
    assert_eq!(parse_memory("--memfree", "500M").ok(), Some(500 << 20));
    assert_eq!(parse_memory("--memfree", "2k").ok(), Some(2000));
    assert_eq!(parse_memory("--memfree", "1000").ok(), Some(1000));
    assert_eq!(parse_memory("--memfree", "0").ok(), Some(0));
    for bad in ["", "G", "1X", "-1G", "lots"] {
        let err = parse_memory("--memfree", bad).expect_err(bad).to_string();
        assert!(err.contains("invalid --memfree"), "{bad:?}: {err}");
    }
}

#[test]
fn memfree_zero_sets_no_limit() {
    let options = LimitOptions {
        memfree: Some("0"),
        memsuspend: Some("0"),
        ..LimitOptions::default()
    };
    let limits = Limits::parse(&options, 2).expect("parses");
    assert!(!limits.any());
}

const STAT: &str = "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0 0 0\nintr 1 2 3\nctxt 99\nbtime 1\nprocesses 500\nprocs_running 3\nprocs_blocked 2\nsoftirq 1 2\n";

#[test]
fn load_is_running_and_blocked_less_the_reader() {
    assert_eq!(parse_stat(STAT).ok(), Some(4.0));
    assert!(parse_stat("procs_running 1\n").is_err());
    assert!(parse_stat("cpu 1 2 3\n").is_err());
    // Only the reader runs: load 0.
    assert_eq!(
        parse_stat("procs_running 1\nprocs_blocked 0\n").ok(),
        Some(0.0)
    );
}

const MEMINFO: &str = "MemTotal:        8000000 kB\nMemFree:         1000 kB\nMemAvailable:    5000000 kB\nBuffers:         200 kB\nCached:          30 kB\nSwapCached:      4 kB\nActive:          77777 kB\n";

#[test]
fn free_memory_is_gnu_parallels_sum() {
    assert_eq!(
        parse_meminfo(MEMINFO).ok(),
        Some((1000 + 200 + 30 + 4) * 1024)
    );
    assert!(parse_meminfo("MemTotal: 1 kB\n").is_err());
}

#[test]
fn swap_counters_are_read() {
    let text = "nr_free_pages 10\npswpin 7\npswpout 9\npgfault 100\n";
    assert_eq!(parse_vmstat(text).ok(), Some((7, 9)));
    assert!(parse_vmstat("pswpin 7\n").is_err());
}

#[test]
fn bytes_read_for_a_person() {
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(3 << 30), "3.0 GiB");
}

/// The figures of this machine can be read here (the test suite runs on Linux).
#[test]
fn this_machines_figures_read() {
    let proc = Proc {
        root: PathBuf::from("/proc"),
    };
    let load = proc.load().expect("/proc/stat");
    assert!(load >= 0.0);
    let free = proc.free_memory().expect("/proc/meminfo");
    assert!(free > 0);
    proc.swap_counters().expect("/proc/vmstat");
}

#[test]
fn limit_knows_gnu_parallels_built_in_checks() {
    assert_eq!(parse_limit("io 50").ok(), Some(LimitCommand::Io(50.0)));
    assert_eq!(parse_limit("load 2.5").ok(), Some(LimitCommand::Load(2.5)));
    assert_eq!(parse_limit("mem 1G").ok(), Some(LimitCommand::Mem(1 << 30)));
    assert_eq!(
        parse_limit("  mem   2k ").ok(),
        Some(LimitCommand::Mem(2000))
    );
    // Anything else is a command for the shell, kept as written.
    for script in [
        "./check.sh 3",
        "io",
        "load 1 2",
        "test -e ok",
        "memcheck 1G",
    ] {
        assert_eq!(
            parse_limit(script).ok(),
            Some(LimitCommand::Script(script.to_owned())),
            "{script}"
        );
    }
    for bad in ["", "   ", "io fifty", "load -1", "mem lots"] {
        let err = parse_limit(bad).expect_err(bad).to_string();
        assert!(err.contains("invalid --limit"), "{bad:?}: {err}");
    }
}

const DISKSTATS: &str = "   7       0 loop0 10 0 20 5 0 0 0 0 0 12 5 0 0 0 0 0 0\n   8       0 sda 900 10 8000 300 500 20 9000 700 0 1500 1000 0 0 0 0 0 0\n   8       1 sda1 800 10 7000 250 400 20 8000 600 0 1400 850 0 0 0 0 0 0\n";

#[test]
fn disk_activity_is_iostats_util_of_the_busiest_device() {
    let before = parse_diskstats(DISKSTATS).expect("parses");
    assert_eq!(before.get("sda"), Some(&1500));
    assert_eq!(before.get("loop0"), Some(&12));
    let mut after = before.clone();
    after.insert("sda".into(), 1500 + 250);
    after.insert("loop0".into(), 12 + 900);
    after.insert("new0".into(), 999_999);
    // 900 ms busy of 1000 for loop0: 90 %; a device that appeared in between is left out.
    assert!((busiest(&before, &after, 1000.0) - 90.0).abs() < 1e-9);
    // Never above 100 %, nothing for no time.
    assert_eq!(busiest(&before, &after, 100.0), 100.0);
    assert_eq!(busiest(&before, &after, 0.0), 0.0);
    assert!(parse_diskstats("").is_err());
    assert!(parse_diskstats("8 0 sda 1 2 3 4 5 6 7 8 9 x 11\n").is_err());
}
