//! End-to-end tests of `martelli run`: arguments, replacement strings, quoting, output modes,
//! joblog, exit codes and bad input. Expected outputs follow GNU parallel's documented behaviour.

mod util;

use std::fs;

use util::{assert_code, lines, run, run_stdin, stderr, stdout};

#[test]
fn replacement_strings_on_paths_with_dots_slashes_and_spaces() {
    let o = run(&[
        "-k",
        "echo",
        "{}:{.}:{/}:{//}:{/.}",
        ":::",
        "dir.d/a.b.c",
        "sp ace/f.tar.gz",
        "noext",
        ".hidden",
        "/abs",
        "tr/",
        "a b.c/d e.f",
    ]);
    assert_code(&o, 0);
    assert_eq!(
        lines(&o),
        [
            "dir.d/a.b.c:dir.d/a.b:a.b.c:dir.d:a.b",
            "sp ace/f.tar.gz:sp ace/f.tar:f.tar.gz:sp ace:f.tar",
            "noext:noext:noext:.:noext",
            ".hidden::.hidden:.:",
            "/abs:/abs:abs:/:abs",
            "tr/:tr/::.:",
            "a b.c/d e.f:a b.c/d e:d e.f:a b.c:d e",
        ]
    );
}

#[test]
fn job_numbers_slots_and_positional_sources() {
    let o = run(&[
        "-j1", "-k", "echo", "{#}", "{%}", "{2}", "{1}", "{-1}", ":::", "a", "b", ":::", "1", "2",
    ]);
    assert_code(&o, 0);
    assert_eq!(
        lines(&o),
        ["1 1 1 a 1", "2 1 2 a 2", "3 1 1 b 1", "4 1 2 b 2"]
    );
    // {n.} and friends on one source of several.
    let o = run(&[
        "-k", "echo", "{2/.}", "{1//}", ":::", "x/y", ":::", "d/f.txt",
    ]);
    assert_eq!(lines(&o), ["f x"]);
}

#[test]
fn arguments_are_appended_without_a_replacement_string() {
    let o = run(&["-k", "echo", "x", ":::", "a", "b", ":::", "1"]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["x a 1", "x b 1"]);
}

#[test]
fn link_pairs_sources_and_wraps_the_shorter() {
    let o = run(&[
        "-k", "--link", "echo", ":::", "a", "b", "c", ":::", "1", "2",
    ]);
    assert_eq!(lines(&o), ["a 1", "b 2", "c 1"]);
    let o = run(&["-k", "echo", ":::", "a", "b", "c", ":::+", "1", "2"]);
    assert_eq!(lines(&o), ["a 1", "b 2"]);
}

#[test]
fn arguments_with_quotes_dollars_and_semicolons_reach_the_command_intact() {
    let args = [
        "it's",
        "a\"b",
        "$HOME",
        "a;b",
        "a b",
        "`id`",
        "*",
        "$(echo x)",
        "back\\slash",
        "",
    ];
    let mut argv = vec!["-k", "printf", "'[%s]\\n'", ":::"];
    argv.extend(args);
    let o = run(&argv);
    assert_code(&o, 0);
    let expected: Vec<String> = args.iter().map(|a| format!("[{a}]")).collect();
    assert_eq!(lines(&o), expected);
}

#[test]
fn dry_run_prints_gnu_parallel_quoting() {
    let o = run(&[
        "--dry-run",
        "-k",
        "echo",
        ":::",
        "a b",
        "it's",
        "x$y;z",
        "",
        "plain-1.2/x_y",
    ]);
    assert_code(&o, 0);
    assert_eq!(
        lines(&o),
        [
            "echo 'a b'",
            "echo 'it'\"'\"'s'",
            "echo 'x$y;z'",
            "echo ''",
            "echo plain-1.2/x_y"
        ]
    );
}

#[test]
fn quote_mode_and_no_shell_mode_keep_words_whole() {
    // Without -q the shell sees `;`; with -q it is part of the argument.
    let o = run(&["-q", "-k", "echo", "a;b", "{} x", ":::", "c d"]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["a;b c d x"]);
    let o = run(&[
        "--no-shell",
        "-k",
        "printf",
        "<%s>\\n",
        "{}",
        "$HOME",
        ":::",
        "a b",
    ]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["<a b>", "<$HOME>"]);
    // A program that does not exist fails the job (127, like a shell), not the runner.
    let o = run(&["--no-shell", "no-such-program-martelli", ":::", "a"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("no-such-program-martelli"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn arguments_from_stdin_files_and_nul_separated() {
    let o = run_stdin(&["-k", "echo", "x{}x"], b"a\n\nb c\n");
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["xax", "xx", "xb cx"]);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("args.txt");
    fs::write(&file, "x\ny\n").unwrap();
    let f = file.to_str().unwrap();
    let o = run(&["-k", "echo", ":::", "1", "2", "::::", f]);
    assert_eq!(lines(&o), ["1 x", "1 y", "2 x", "2 y"]);
    let o = run(&["-k", "-a", f, "echo"]);
    assert_eq!(lines(&o), ["x", "y"]);
    let o = run_stdin(&["-0", "-k", "echo", "x{}x"], b"a\nb\0c\0");
    assert_eq!(stdout(&o), "xa\nbx\nxcx\n");
}

/// Pseudo-random job durations from a fixed seed (no clock in the expected output).
fn durations(n: usize) -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("0.{:03}", x % 80)
        })
        .collect()
}

#[test]
fn keep_order_with_random_durations() {
    let d = durations(24);
    let mut argv = vec!["-k", "-j8", "sleep {}; echo {#} {}", ":::"];
    argv.extend(d.iter().map(String::as_str));
    let o = run(&argv);
    assert_code(&o, 0);
    let expected: Vec<String> = d
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {s}", i + 1))
        .collect();
    assert_eq!(lines(&o), expected);
}

#[test]
fn grouped_output_never_interleaves() {
    // Each job writes three lines with pauses between; other jobs write meanwhile.
    let d = durations(12);
    let mut argv = vec![
        "-j6",
        "echo {#}-1; sleep {}; echo {#}-2; sleep {}; echo {#}-3",
        ":::",
    ];
    argv.extend(d.iter().map(String::as_str));
    let o = run(&argv);
    assert_code(&o, 0);
    let out = lines(&o);
    assert_eq!(out.len(), 36);
    for block in out.chunks(3) {
        let job = block[0].trim_end_matches("-1");
        assert_eq!(
            block,
            [format!("{job}-1"), format!("{job}-2"), format!("{job}-3")]
        );
    }
}

#[test]
fn line_buffer_prints_lines_as_they_come() {
    // Job 1 prints a line, then waits; job 2 prints a line in the middle of that wait.
    let o = run(&[
        "--line-buffer",
        "-j2",
        "sh -c {}",
        ":::",
        "echo a1; sleep 1; echo a2",
        "sleep 0.3; echo b1",
    ]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["a1", "b1", "a2"]);
    // Grouped (the default), job 2 ends first and job 1 prints whole.
    let o = run(&[
        "-j2",
        "sh -c {}",
        ":::",
        "echo a1; sleep 1; echo a2",
        "sleep 0.3; echo b1",
    ]);
    assert_eq!(lines(&o), ["b1", "a1", "a2"]);
}

#[test]
fn tag_prefixes_every_line_of_both_streams() {
    let o = run(&[
        "-k",
        "--tag",
        "echo {}; echo err{} >&2",
        ":::",
        "a",
        "b",
        ":::",
        "1",
    ]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["a 1\ta 1", "b 1\tb 1"]);
    assert_eq!(stderr(&o), "a 1\terra 1\nb 1\terrb 1\n");
}

#[test]
fn results_directory_holds_each_jobs_output() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("out");
    let o = run(&[
        "--results",
        res.to_str().unwrap(),
        "echo {}; echo e >&2",
        ":::",
        "a/b",
        "c\\d",
    ]);
    assert_code(&o, 0);
    let job = res.join("1").join("a\\_b");
    assert_eq!(fs::read_to_string(job.join("stdout")).unwrap(), "a/b\n");
    assert_eq!(fs::read_to_string(job.join("stderr")).unwrap(), "e\n");
    assert_eq!(fs::read_to_string(job.join("seq")).unwrap(), "1");
    assert_eq!(
        fs::read_to_string(res.join("1").join("c\\\\d").join("stdout")).unwrap(),
        "c\\d\n"
    );
}

#[test]
fn json_prints_one_line_per_job() {
    let o = run(&[
        "-k",
        "--json",
        "echo out {}; echo err >&2; exit {}",
        ":::",
        "0",
        "3",
    ]);
    assert_code(&o, 1);
    let jobs: Vec<serde_json::Value> = lines(&o)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["type"], "job");
    let d = &jobs[1]["data"];
    assert_eq!(d["seq"], 2);
    assert_eq!(d["args"], serde_json::json!(["3"]));
    assert_eq!(d["command"], "echo out 3; echo err >&2; exit 3");
    assert_eq!(d["exit_code"], 3);
    assert_eq!(d["signal"], 0);
    assert_eq!(d["stdout"], "out 3\n");
    assert_eq!(d["stderr"], "err\n");
    assert!(d["start"].as_f64().unwrap() > 1.6e9);
    assert!(d["runtime"].as_f64().unwrap() >= 0.0);
}

#[test]
fn exit_status_counts_failed_jobs_up_to_101() {
    let o = run(&["exit {}", ":::", "0", "1", "2", "0", "7"]);
    assert_code(&o, 3);
    let many: Vec<String> = (0..105).map(|i| i.to_string()).collect();
    let mut argv = vec!["-j4", "exit 1; : {}", ":::"];
    argv.extend(many.iter().map(String::as_str));
    assert_code(&run(&argv), 101);
    // A job killed by a signal fails too.
    assert_code(&run(&["kill -9 $$; : {}", ":::", "x"]), 1);
}

#[test]
fn bad_input_is_a_one_line_error_with_exit_255() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--jbos", "2", "echo", ":::", "a"], "--jobs"),
        (vec!["-j", "two", "echo", ":::", "a"], "invalid -j 'two'"),
        (vec!["-d", "ab", "echo", ":::", "a"], "invalid -d 'ab'"),
        (vec!["--trim", "x", "echo", ":::", "a"], "invalid --trim"),
        (vec!["-S", "server", "echo", ":::", "a"], "--cluster"),
        (vec!["--tmux", "echo", ":::", "a"], "GNU parallel's --tmux"),
        (
            vec!["echo", "::::", missing.to_str().unwrap()],
            "missing.txt",
        ),
        (
            vec!["--halt", "now,fial=1", "echo", ":::", "a"],
            "invalid --halt",
        ),
        (
            vec!["--timeout", "soon", "echo", ":::", "a"],
            "invalid --timeout",
        ),
        (vec!["echo", "{2}", ":::", "a"], "{2}"),
        (vec!["echo", ":::"], ":::"),
        (vec!["--resume", "echo", ":::", "a"], "--joblog"),
        (
            vec!["--timeout", "0%", "echo", ":::", "a"],
            "invalid --timeout '0%'",
        ),
        (
            vec!["--timeout", "1x", "echo", ":::", "a"],
            "invalid --timeout '1x'",
        ),
        (
            vec![
                "--termseq",
                "TERM,100",
                "--cluster",
                "redis://127.0.0.1:1",
                "echo",
                ":::",
                "a",
            ],
            "--termseq is for jobs run here",
        ),
        (
            vec![
                "--timeout",
                "200%",
                "--cluster",
                "redis://127.0.0.1:1",
                "echo",
                ":::",
                "a",
            ],
            "--timeout N% follows the runtimes",
        ),
    ];
    for (args, needle) in cases {
        let o = run(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(255), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn help_is_printed_and_succeeds() {
    let o = run(&["--help"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("--halt"));
}

/// Parses a joblog into rows of fields, checking the header.
fn joblog_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let text = fs::read_to_string(path).unwrap();
    let mut rows = text.lines();
    assert_eq!(
        rows.next(),
        Some("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand")
    );
    rows.map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

#[test]
fn joblog_has_gnu_parallels_format() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let o = run(&[
        "-j1",
        "--joblog",
        log.to_str().unwrap(),
        "echo hi; exit {}",
        ":::",
        "0",
        "3",
    ]);
    assert_code(&o, 1);
    let rows = joblog_rows(&log);
    assert_eq!(rows.len(), 2);
    for (row, (seq, exit)) in rows.iter().zip([("1", "0"), ("2", "3")]) {
        assert_eq!(row.len(), 9, "{row:?}");
        assert_eq!(row[0], seq);
        assert_eq!(row[1], ":");
        let (secs, millis) = row[2].split_once('.').unwrap();
        assert!(
            secs.parse::<u64>().unwrap() > 1_600_000_000 && millis.len() == 3,
            "{row:?}"
        );
        assert_eq!(
            row[3].len(),
            10,
            "runtime is right-aligned in 10 columns: {row:?}"
        );
        assert!(row[3].trim_start().parse::<f64>().is_ok(), "{row:?}");
        assert_eq!(row[4], "0");
        assert_eq!(row[5], "3", "bytes received: 'hi\\n'");
        assert_eq!(row[6], exit);
        assert_eq!(row[7], "0");
        assert_eq!(row[8], format!("echo hi; exit {exit}"));
    }
}

#[test]
fn resume_skips_logged_jobs_and_resume_failed_reruns_failures() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let log = log.to_str().unwrap();
    let ran = dir.path().join("ran");
    let cmd = format!("echo {{}} >> {}; exit {{}}", ran.display());
    let args = ["0", "3", "0"];
    let with = |extra: &[&str]| {
        let mut v = vec!["-j1", "--joblog", log];
        v.extend_from_slice(extra);
        v.push(&cmd);
        v.push(":::");
        v.extend(args);
        run(&v)
    };
    assert_code(&with(&[]), 1);
    assert_eq!(fs::read_to_string(&ran).unwrap(), "0\n3\n0\n");
    // Everything is logged: nothing runs again.
    assert_code(&with(&["--resume"]), 0);
    assert_eq!(fs::read_to_string(&ran).unwrap(), "0\n3\n0\n");
    // Only the failed job (seq 2) runs again, and is logged again under its number.
    assert_code(&with(&["--resume-failed"]), 1);
    assert_eq!(fs::read_to_string(&ran).unwrap(), "0\n3\n0\n3\n");
    let rows = joblog_rows(std::path::Path::new(log));
    assert_eq!(
        rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["1", "2", "3", "2"]
    );
    // A file that is not a joblog is refused, not overwritten.
    fs::write(dir.path().join("bad"), "hello\n").unwrap();
    let bad = dir.path().join("bad");
    let o = run(&[
        "--joblog",
        bad.to_str().unwrap(),
        "--resume",
        "echo",
        ":::",
        "a",
    ]);
    assert_code(&o, 255);
    assert_eq!(fs::read_to_string(&bad).unwrap(), "hello\n");
}

#[test]
fn nice_lowers_the_jobs_priority() {
    let own: i32 = String::from_utf8(std::process::Command::new("nice").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let o = run(&["--nice", "5", "nice; : {}", ":::", "a"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim().parse::<i32>().unwrap(), (own + 5).min(19));
}

#[test]
fn delay_spaces_job_starts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let o = run(&[
        "-j3",
        "--delay",
        "0.3",
        "--joblog",
        log.to_str().unwrap(),
        "true",
        ":::",
        "a",
        "b",
        "c",
    ]);
    assert_code(&o, 0);
    let mut starts: Vec<f64> = joblog_rows(&log)
        .iter()
        .map(|r| r[2].parse().unwrap())
        .collect();
    starts.sort_by(f64::total_cmp);
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= 0.29, "starts {starts:?}");
    }
}

#[test]
fn delay_auto_grows_after_failures_and_durations_take_time_postfixes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    // 0.3 s, then 30 % longer after each failed job, as the jobs (`false`) end before the next
    // start: 0.39, 0.507, 0.659 (GNU parallel 20221122 gave 0.389, 0.506, 0.660 s). "0.005m" is
    // 0.3 s with GNU parallel's time postfix. Bounds only from below (a loaded machine starts late):
    // every gap at least 0.3 s, and the last at least 0.507, the delay after the first two jobs
    // failed, which they did long before.
    let o = run(&[
        "-j3",
        "--delay",
        "0.005mauto",
        "--joblog",
        log.to_str().unwrap(),
        "false",
        ":::",
        "a",
        "b",
        "c",
        "d",
    ]);
    assert_code(&o, 4);
    let mut starts: Vec<f64> = joblog_rows(&log)
        .iter()
        .map(|r| r[2].parse().unwrap())
        .collect();
    starts.sort_by(f64::total_cmp);
    let gaps: Vec<f64> = starts.windows(2).map(|p| p[1] - p[0]).collect();
    assert_eq!(gaps.len(), 3, "starts {starts:?}");
    assert!(gaps.iter().all(|&g| g >= 0.29), "gaps {gaps:?}");
    assert!(gaps[2] >= 0.5, "gaps {gaps:?}");
}

#[test]
fn retries_0_tries_until_the_job_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    // Fails four times, then succeeds: GNU parallel's --retries 0 is "for ever".
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 5 ] && echo done {{}}",
        c = count.display()
    );
    let o = run(&["--retries", "0", &script, ":::", "x"]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["done x"]);
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "5");
}

#[test]
fn progress_goes_to_stderr_only_and_only_when_asked() {
    let o = run(&["-k", "--bar", "echo", ":::", "a", "b", "c"]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["a", "b", "c"], "stdout holds job output only");
    assert!(
        stderr(&o).contains("3/3"),
        "the bar reached 3 of 3: {:?}",
        stderr(&o)
    );
    let o = run(&["-k", "--progress", "echo", ":::", "a", "b"]);
    assert!(stderr(&o).contains("done 2, failed 0"), "{:?}", stderr(&o));
    let o = run(&["-k", "echo", ":::", "a"]);
    assert!(o.stderr.is_empty());
}

#[test]
fn line_buffer_with_results_stores_the_output_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("out");
    let o = run(&[
        "--line-buffer",
        "--results",
        res.to_str().unwrap(),
        "echo",
        ":::",
        "a",
    ]);
    assert_code(&o, 0);
    // As GNU parallel: what --results stores is not printed too.
    assert_eq!(stdout(&o), "");
    assert_eq!(
        fs::read_to_string(res.join("1").join("a").join("stdout")).unwrap(),
        "a\n"
    );
}

#[test]
fn plain_commands_behave_as_under_the_shell() {
    // Plain commands are run without a shell; what only a shell does must still work.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("noshebang");
    fs::write(&script, "echo script ran with $1\n").unwrap();
    let mut perms = fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&script, perms).unwrap();
    let o = run(&[script.to_str().unwrap(), ":::", "x"]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["script ran with x"]);
    // A missing program: the shell's message and status 127 in the joblog.
    let log = dir.path().join("log");
    let o = run(&[
        "--joblog",
        log.to_str().unwrap(),
        "no-such-program-martelli",
        ":::",
        "x",
    ]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().nth(1).unwrap().split('\t').nth(6), Some("127"));
    // Builtins keep the shell's meaning (dash's echo interprets backslashes, /bin/echo does not).
    let o = util::martelli()
        .args(["run", "echo", "'a\\tb'", ":::", "x"])
        .env("PARALLEL_SHELL", "/bin/sh")
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "a\tb x\n");
}

#[test]
fn ungroup_and_job_counts() {
    // -u: output is not captured, so it reaches our pipe straight from the job.
    let o = run(&["-u", "-j1", "echo", ":::", "a", "b"]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["a", "b"]);
    // -j 0 (as many as can run), -j N%, -j +N: all jobs run, once each.
    for j in ["0", "50%", "+1", "-1"] {
        let o = run(&["-k", "-j", j, "echo", ":::", "1", "2", "3", "4", "5"]);
        assert_code(&o, 0);
        assert_eq!(lines(&o), ["1", "2", "3", "4", "5"], "-j {j}");
    }
    // {%} never exceeds -j.
    let o = run(&["-j3", "echo", "{%}", ":::", "a", "b", "c", "d", "e", "f"]);
    let slots: Vec<String> = lines(&o)
        .iter()
        .map(|l| l.split(' ').next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(slots.len(), 6);
    assert!(
        slots.iter().all(|s| ["1", "2", "3"].contains(&s.as_str())),
        "{:?}",
        lines(&o)
    );
}

#[test]
fn eta_is_shown_when_asked() {
    let o = run(&["--eta", "true", ":::", "a", "b"]);
    assert_code(&o, 0);
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("ETA"), "{:?}", stderr(&o));
}

/// Runs `martelli run ARGS…` with extra environment variables.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = util::martelli();
    cmd.arg("run").args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the martelli binary runs")
}

#[test]
fn the_shell_follows_gnu_parallels_rule() {
    // $PARALLEL_SHELL first: bash's echo prints a backslash as it is, dash's interprets it.
    let o = run_env(
        &["echo 'a\\tb'", ":::", "x"],
        &[("PARALLEL_SHELL", "/bin/bash")],
    );
    assert_eq!(stdout(&o), "a\\tb x\n");
    let o = run_env(&["echo $0", ":::", "x"], &[("PARALLEL_SHELL", "/bin/sh")]);
    assert_eq!(stdout(&o), "/bin/sh x\n");
    // Started from bash, jobs run in bash, so an exported function is a command.
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "greet() {{ echo hello \"$1\"; }}; export -f greet; {} run -k greet ::: a b; true",
            env!("CARGO_BIN_EXE_martelli")
        ))
        .env_remove("PARALLEL_SHELL")
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "hello a\nhello b\n", "{}", stderr(&o));
}

#[test]
fn parallel_variable_job_variables_and_slots() {
    // $PARALLEL's options go first; jobs see PARALLEL_SEQ and PARALLEL_JOBSLOT.
    let o = run_env(
        &["echo", "$PARALLEL_SEQ-$PARALLEL_JOBSLOT", ":::", "a", "b"],
        &[("PARALLEL", "-j1 --tag")],
    );
    assert_code(&o, 0);
    // The command uses no replacement string, so the argument is appended.
    assert_eq!(lines(&o), ["a\t1-1 a", "b\t2-1 b"]);
    // The first job gets slot 1, even with more slots than jobs.
    let o = run(&["-j4", "-k", "echo", "{%}", ":::", "a", "b"]);
    assert_eq!(lines(&o)[0], "1");
    // {#} and {%} alone: nothing is appended.
    let o = run(&["-k", "echo", "{#}", ":::", "A", "B", "C"]);
    assert_eq!(lines(&o), ["1", "2", "3"]);
}

#[test]
fn four_colons_plus_links_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::write(&a, "1\n2\n").unwrap();
    fs::write(&b, "x\ny\n").unwrap();
    let o = run(&[
        "-k",
        "echo",
        ":::",
        "p",
        "q",
        "::::+",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(lines(&o), ["p 1 x", "q 2 y"]);
}

#[test]
fn unimplemented_constructs_are_refused_before_any_job() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let m = marker.to_str().unwrap();
    // A Perl replacement string that perl cannot compile is refused before any job: it must never
    // reach the shell as text and run something else.
    for args in [
        vec![
            "-j1",
            "touch",
            m,
            "&&",
            "mv",
            "log.{}",
            "log.{= $_++ ( =}",
            ":::",
            "1",
        ],
        vec!["-j1", "touch", m, ";", "echo", "'{= s/a/ =}'", ":::", "1"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(255), "{args:?}");
        assert!(stderr(&o).contains("does not compile"), "{}", stderr(&o));
        assert!(!marker.exists(), "a job ran: {args:?}");
    }
    // GNU's log-rotation example, which once reached the shell as text, now runs as in GNU.
    std::fs::write(dir.path().join("log.1"), "one").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_martelli"))
        .current_dir(dir.path())
        .args(["run", "-j1", "mv", "log.{}", "log.{= $_++ =}", ":::", "1"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("log.2")).unwrap(),
        "one"
    );
    // Remote execution: named, pointing to --cluster.
    let o = run(&["--sshlogin", "host", "touch", m, ":::", "1"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(stderr(&o).contains("--sshlogin") && stderr(&o).contains("--cluster"));
    assert!(!marker.exists());
}

#[test]
fn results_csv_and_tsv_are_tables() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("my.csv");
    let o = run(&[
        "-k",
        "--results",
        csv.to_str().unwrap(),
        "echo",
        ":::",
        "a",
        "b,\"c",
    ]);
    assert_code(&o, 0);
    // Stored, not printed (as GNU parallel).
    assert_eq!(stdout(&o), "");
    let text = fs::read_to_string(&csv).unwrap();
    let mut rows = text.split_inclusive('\n');
    assert_eq!(
        rows.next().unwrap(),
        "Seq,Host,Starttime,JobRuntime,Send,Receive,Exitval,Signal,Command,V1,Stdout,Stderr\n"
    );
    assert!(csv.is_file());
    assert!(text.contains(",\"echo a\",a,\"a\n\",\n"), "{text}");
    assert!(text.contains("\"b,\"\"c\",\"b,\"\"c\n\",\n"), "{text}");
    // With -k the rows are in input order, as the output would be.
    let o = run(&[
        "-k",
        "-j2",
        "--results",
        csv.to_str().unwrap(),
        "sleep {}; echo",
        ":::",
        "0.3",
        "0",
    ]);
    assert_code(&o, 0);
    let text = fs::read_to_string(&csv).unwrap();
    let seqs: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .collect();
    assert_eq!(
        seqs.iter().filter(|s| **s == "1" || **s == "2").count(),
        2,
        "{text}"
    );
    assert!(
        text.find("\n1,").unwrap() < text.find("\n2,").unwrap(),
        "{text}"
    );
    let tsv = dir.path().join("my.tsv");
    run(&["--results", tsv.to_str().unwrap(), "echo", ":::", "a"]);
    let text = fs::read_to_string(&tsv).unwrap();
    assert!(text.starts_with("Seq\tHost\t"), "{text}");
    assert!(text.contains("\t\"echo a\"\ta\t\"a\n\"\t\n"), "{text}");
}

#[test]
fn no_command_runs_each_line() {
    let o = run_stdin(&["-k"], b"echo one\necho 'two  spaces'\n");
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["one", "two  spaces"]);
}

#[test]
fn gnu_input_options() {
    // -d, -E, -r, --trim, --arg-sep, -I.
    let o = run_stdin(&["-k", "-d", ",", "echo", "x{}x"], b"a,b,,c");
    assert_eq!(lines(&o), ["xax", "xbx", "xx", "xcx"]);
    let o = run(&["-k", "-E", "stop", "echo", ":::", "a", "stop", "b"]);
    assert_eq!(lines(&o), ["a"]);
    let o = run_stdin(&["-k", "-r", "echo", "x{}x"], b"a\n\n  \nb\n");
    assert_eq!(lines(&o), ["xax", "xbx"]);
    let o = run(&["--trim", "lr", "echo", "[{}]", ":::", "  a  "]);
    assert_eq!(lines(&o), ["[a]"]);
    let o = run(&["-k", "--arg-sep", ",,", "echo", ",,", "a", "b"]);
    assert_eq!(lines(&o), ["a", "b"]);
    let o = run(&["-I", "@@", "echo", "@@", "{}", ":::", "a"]);
    assert_eq!(lines(&o), ["a {}"]);
    // --shuf runs every job once.
    let o = run(&["--shuf", "echo", ":::", "1", "2", "3", "4"]);
    let mut got = lines(&o);
    got.sort();
    assert_eq!(got, ["1", "2", "3", "4"]);
}

#[test]
fn gnu_output_options() {
    // -v prints the command before the output; --tagstring tags with a template.
    let o = run(&["-k", "-v", "--tagstring", "<{}>", "echo", ":::", "a"]);
    assert_eq!(lines(&o), ["<a>\techo a", "<a>\ta"]);
    // --verbose prints it on stderr.
    let o = run(&["--verbose", "echo", ":::", "a"]);
    assert_eq!(stdout(&o), "a\n");
    assert_eq!(stderr(&o), "echo a\n");
    // --files: the name of a file that holds the output.
    let dir = tempfile::tempdir().unwrap();
    let o = run(&[
        "--files",
        "--tmpdir",
        dir.path().to_str().unwrap(),
        "echo",
        ":::",
        "a",
    ]);
    let name = stdout(&o);
    assert!(name.trim_end().ends_with(".par"), "{name}");
    assert_eq!(fs::read_to_string(name.trim_end()).unwrap(), "a\n");
    // --shellquote: quoted, nothing run.
    let o = run_stdin(&["--shellquote"], b"a b\nc\n");
    assert_eq!(lines(&o), ["'a b'", "c"]);
}

#[test]
fn retry_failed_reruns_the_failed_commands_of_the_joblog() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let l = log.to_str().unwrap();
    let o = run(&["--joblog", l, "exit", ":::", "1", "0", "2"]);
    assert_code(&o, 2);
    let o = run(&["--retry-failed", "--joblog", l]);
    assert_code(&o, 2);
    let rows = joblog_rows(&log);
    let seqs: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(seqs.len(), 5, "{rows:?}");
    let mut again: Vec<(String, String)> = rows[3..]
        .iter()
        .map(|r| (r[0].clone(), r[8].clone()))
        .collect();
    again.sort();
    assert_eq!(
        again,
        [
            ("1".to_string(), "exit 1".to_string()),
            ("3".to_string(), "exit 2".to_string())
        ]
    );
}

/// Writes an executable script whose `#!` line runs `interpreter` with `line`, followed by `body`.
fn script(dir: &std::path::Path, name: &str, interpreter: &str, line: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    fs::write(&path, format!("#!{interpreter} {line}\n{body}")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn shebang_scripts_run_as_with_gnu_parallel() {
    // The kernel passes the rest of the #! line as one word (`run --shebang -r -k echo`), then the
    // script's path and its arguments. The same scripts run through GNU parallel where present.
    let dir = tempfile::tempdir().unwrap();
    let mut tools = vec![(env!("CARGO_BIN_EXE_martelli"), "run ")];
    if util::gnu_present() {
        tools.push(("/usr/bin/parallel", ""));
    }
    for (i, (interpreter, prefix)) in tools.into_iter().enumerate() {
        let line = format!("{prefix}--shebang -r -k echo");
        let args = script(
            dir.path(),
            &format!("args{i}"),
            interpreter,
            &line,
            "x\ny z\n\nlast\n",
        );
        let o = std::process::Command::new(&args).output().unwrap();
        // The #! line is not an argument; -r drops the empty line; -k keeps the order.
        assert_eq!(
            (lines(&o), o.status.code()),
            (vec!["x".to_owned(), "y z".into(), "last".into()], Some(0)),
            "{interpreter}: {}",
            stderr(&o)
        );

        // --shebang-wrap: each argument of the script is a job running the script.
        let line = format!("{prefix}--shebang-wrap /bin/sh");
        let wrapped = script(
            dir.path(),
            &format!("wrapped{i}"),
            interpreter,
            &line,
            "echo \"job $1\"\n",
        );
        let o = std::process::Command::new(&wrapped)
            .args(["a", "b", "c"])
            .output()
            .unwrap();
        let mut got = lines(&o);
        got.sort();
        assert_eq!(
            (got, o.status.code()),
            (
                vec!["job a".to_owned(), "job b".into(), "job c".into()],
                Some(0)
            ),
            "{interpreter}: {}",
            stderr(&o)
        );
        // No argument, no job.
        let o = std::process::Command::new(&wrapped).output().unwrap();
        assert_eq!(
            (o.stdout.len(), o.status.code()),
            (0, Some(0)),
            "{interpreter}"
        );
    }
}

#[test]
fn skip_first_line_leaves_out_the_first_sources_first_line() {
    // As GNU parallel 20221122 gives them.
    let o = run(&[
        "-k",
        "--skip-first-line",
        "echo",
        ":::",
        "h",
        "a",
        ":::",
        "1",
        "2",
    ]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["a 1", "a 2"]);
    let o = util::run_stdin(&["--skip-first-line", "echo"], b"header\nx\n");
    assert_eq!(lines(&o), ["x"]);
    let o = run(&["--skip-first-line", "--pipe", "cat"]);
    assert_code(&o, 255);
    assert!(
        stderr(&o).contains("--skip-first-line with --pipe"),
        "{}",
        stderr(&o)
    );
}
