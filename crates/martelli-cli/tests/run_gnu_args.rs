//! `martelli run` beside GNU parallel for several arguments per job (`-N`, `-n`, `-X`, `-m`,
//! `--xargs`, `-L`, `-s`), perl expressions (`{= =}`, `--rpl`, `--plus`), `--pipe` and its
//! friends, and columns (`--colsep`, `--header`, `--csv`).
//!
//! Every case states the output GNU parallel 20221122 gives (taken from its manuals or checked
//! against it), and martelli must give it. Where GNU parallel is installed (`parallel` on PATH),
//! the case runs through it too and its output must be the same, so that the expectations here
//! cannot drift from GNU's behaviour.

mod util;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use util::{gnu_present, martelli};

/// One case: the arguments after `run` / `parallel`, stdin, and the expected stdout and status.
struct Case<'a> {
    args: &'a [&'a str],
    stdin: &'a [u8],
    stdout: &'a str,
    code: i32,
    /// Compare lines sorted (the order of jobs is not promised).
    sorted: bool,
}

const fn case<'a>(args: &'a [&'a str], stdout: &'a str) -> Case<'a> {
    Case {
        args,
        stdin: b"",
        stdout,
        code: 0,
        sorted: false,
    }
}

impl<'a> Case<'a> {
    const fn stdin(mut self, stdin: &'a [u8]) -> Self {
        self.stdin = stdin;
        self
    }

    const fn code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }

    const fn sorted(mut self) -> Self {
        self.sorted = true;
        self
    }
}

fn feed(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let mut pipe = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    // Written beside the reading, so a large input cannot block on a full pipe.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("the command finishes");
    let _ = writer.join();
    out
}

fn normalise(out: &[u8], sorted: bool) -> String {
    let text = String::from_utf8_lossy(out).into_owned();
    if sorted {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    } else {
        text
    }
}

/// Runs each case through martelli (and GNU parallel when present) and lists every mismatch.
#[track_caller]
fn check(cases: &[Case<'_>]) {
    let mut failures = Vec::new();
    for c in cases {
        let want = normalise(c.stdout.as_bytes(), c.sorted);
        let mut m = martelli();
        m.arg("run").args(c.args);
        let got = feed(m, c.stdin);
        let got_text = normalise(&got.stdout, c.sorted);
        if got_text != want || got.status.code() != Some(c.code) {
            failures.push(format!(
                "martelli run {:?}\n  want (status {}): {want:?}\n  got  (status {:?}): {got_text:?}\n  stderr: {}",
                c.args,
                c.code,
                got.status.code(),
                String::from_utf8_lossy(&got.stderr)
            ));
        }
        if gnu_present() {
            let mut g = Command::new("parallel");
            g.arg("--will-cite").args(c.args);
            let gnu = feed(g, c.stdin);
            let gnu_text = normalise(&gnu.stdout, c.sorted);
            if gnu_text != want || gnu.status.code() != Some(c.code) {
                failures.push(format!(
                    "GNU parallel {:?} differs from the expectation\n  want (status {}): {want:?}\n  gnu  (status {:?}): {gnu_text:?}",
                    c.args,
                    c.code,
                    gnu.status.code()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ----- several arguments per job ---------------------------------------------------------------

#[test]
fn max_replace_args_names_the_arguments_of_a_job() {
    check(&[
        // man parallel, -N: "{1} .. {max-args}", too few arguments leave them empty.
        case(
            &[
                "-k", "-N2", "echo", "{1}-{2}", ":::", "a", "b", "c", "d", "e",
            ],
            "a-b\nc-d\ne-\n",
        ),
        case(
            &["-k", "-N2", "echo", ":::", "a", "b", "c", "d", "e"],
            "a b\nc d\ne\n",
        ),
        case(
            &["-k", "-n2", "echo", "{}", ":::", "a", "b", "c", "d", "e"],
            "a b\nc d\ne\n",
        ),
        // -N turns context replace on; -n does not.
        case(
            &["-k", "-N2", "echo", "x{}y", ":::", "a", "b", "c"],
            "xay xby\nxcy\n",
        ),
        case(
            &["-k", "-n2", "echo", "x{}y", ":::", "a", "b", "c"],
            "xa by\nxcy\n",
        ),
        case(
            &[
                "-k", "-n2", "echo", "{1}x{2}", ":::", "a", "b", "c", "d", "e",
            ],
            "axb\ncxd\nex\n",
        ),
        case(
            &["-k", "--max-args=3", "echo", ":::", "1", "2", "3", "4"],
            "1 2 3\n4\n",
        ),
        // -N0: one argument read per job, none passed.
        case(
            &["-k", "-N0", "echo", "foo", ":::", "a", "b", "c"],
            "foo\nfoo\nfoo\n",
        ),
        // Several sources: the records of a job are flattened.
        case(
            &[
                "-k", "-N2", "echo", "{1}", "{2}", "{3}", "{4}", ":::", "a", "b", ":::", "1", "2",
            ],
            "a 1 a 2\nb 1 b 2\n",
        ),
        case(
            &["-k", "-N3", "echo", "{-1}", ":::", "a", "b", "c", "d", "e"],
            "c\ne\n",
        ),
        case(&["-k", "-N3", "echo", "{4}", ":::", "a", "b"], "\n"),
        case(
            &["-k", "-j1", "-N2", "--tag", "echo", ":::", "a", "b", "c"],
            "a b\ta b\nc\tc\n",
        ),
    ]);
}

#[test]
fn arguments_a_job_lacks_and_tags_of_several_arguments() {
    check(&[
        // An argument the last job lacks is nothing in a shell line, an empty word with -q.
        case(
            &["-k", "-n2", "echo", "{1}", "{2}", ":::", "a", "b", "c"],
            "a b\nc\n",
        ),
        case(
            &["-k", "-N2", "echo", "{1}", "{2}x", ":::", "a", "b", "c"],
            "a bx\nc x\n",
        ),
        case(
            &[
                "-k", "-q", "-n2", "echo", "{1}", "{2}", ":::", "a", "b", "c",
            ],
            "a b\nc \n",
        ),
        // --tagstring is a command word: with -N, a word around {} is repeated per argument.
        case(
            &["-k", "-N2", "--tagstring", "T{}", "echo", ":::", "a", "b"],
            "Ta Tb\ta b\n",
        ),
        case(
            &[
                "-k",
                "-n2",
                "--tagstring",
                "x{}y",
                "echo",
                ":::",
                "a",
                "b",
                "c",
            ],
            "xa by\ta b\nxcy\tc\n",
        ),
        case(
            &["-k", "--tagstring", "{}-{#}", "echo", ":::", "a", "b"],
            "a-1\ta\nb-2\tb\n",
        ),
        // A dry run is tagged as the output would be.
        case(
            &["-k", "--tag", "--dry-run", "echo", ":::", "a", "b"],
            "a\techo a\nb\techo b\n",
        ),
        // -X, -m and --xargs combine: -X's context wins, -m's spreading too.
        case(
            &[
                "-k",
                "-j1",
                "-X",
                "-m",
                "echo",
                "pre{}post",
                ":::",
                "a",
                "b",
                "c",
            ],
            "preapost prebpost precpost\n",
        ),
        case(
            &[
                "-k",
                "-j1",
                "-m",
                "--xargs",
                "echo",
                "pre{}post",
                ":::",
                "a",
                "b",
                "c",
            ],
            "prea b cpost\n",
        ),
        case(
            &[
                "-k",
                "-j2",
                "-m",
                "--xargs",
                "echo",
                "pre{}post",
                ":::",
                "a",
                "b",
                "c",
                "d",
            ],
            "prea bpost\nprec dpost\n",
        ),
    ]);
}

#[test]
fn values_of_a_source_are_split_at_the_delimiter() {
    check(&[
        // `::: "$(ls)"`: one argument a line, as GNU parallel reads them.
        case(
            &["-k", "echo", "{#}:{}", ":::", "a\nb", "c"],
            "1:a\n2:b\n3:c\n",
        ),
        case(
            &["-k", "echo", "{#}:{}", ":::", "a\n", "c"],
            "1:a\n2:\n3:c\n",
        ),
        case(
            &[
                "-k", "-d", ",", "echo", "{#}:{}", ":::", "a,b", "c", ":::", "x,y",
            ],
            "1:a x\n2:a y\n3:b x\n4:b y\n5:c x\n6:c y\n",
        ),
        // With -0 nothing is split.
        case(&["-k", "-0", "echo", "{#}:{}", ":::", "a\nb"], "1:a\nb\n"),
    ]);
}

#[test]
fn positional_forms_follow_renamed_replacement_strings() {
    check(&[
        case(
            &["--er", "{e}", "echo", "{1e}", "{1.}", ":::", "a.b"],
            "a {1.}\n",
        ),
        case(
            &["-I", "{in}", "echo", "{1in}", "{1}", ":::", "a.b"],
            "a.b {1}\n",
        ),
        // A name without braces has no positional form: `${1}` stays the shell's.
        case(
            &["-I", "XX", "echo", "{1}", "XX", ":::", "a.b"],
            "{1} a.b\n",
        ),
        case(
            &[
                "--bnr", "{b}", "echo", "{1b}", "{1/}", "{b}", ":::", "x/a.b",
            ],
            "a.b {1/} a.b\n",
        ),
        case(
            &[
                "echo", "{1}", "{1.}", "{1/}", "{1//}", "{1/.}", "{-1}", ":::", "x/a.b",
            ],
            "x/a.b x/a a.b x a x/a.b\n",
        ),
    ]);
}

#[test]
fn context_replace_repeats_the_word_for_each_argument() {
    check(&[
        // man parallel, -X: "echo pre{}post" gets each argument with its context.
        case(
            &["-k", "-j1", "-X", "echo", "pre{}post", ":::", "a", "b", "c"],
            "preapost prebpost precpost\n",
        ),
        case(
            &[
                "-k", "-j1", "-X", "echo", "{}", "a{}b", "{.}", ":::", "x.1", "y.2",
            ],
            "x.1 y.2 ax.1b ay.2b x y\n",
        ),
        case(
            &["-k", "-j1", "-X", "echo", "lit", "{}", ":::", "x", "y"],
            "lit x y\n",
        ),
        case(
            &["-k", "-j1", "-X", "echo", "p{}q", ":::", "a b", "c"],
            "pa bq pcq\n",
        ),
        case(
            &["-k", "-j1", "-X", "-q", "echo", "x{}y", ":::", "a b", "c"],
            "xa by xcy\n",
        ),
        case(
            &[
                "-k",
                "-j1",
                "-X",
                "--dry-run",
                "echo",
                "p{}q",
                ":::",
                "a b",
                "c",
            ],
            "echo p'a b'q pcq\n",
        ),
        case(
            &[
                "-k", "-j1", "-X", "echo", "x{.}y", ":::", "a.c", "b", ":::", "1", "2.d",
            ],
            "xay x1y xay x2y xby x1y xby x2y\n",
        ),
        case(
            &["-k", "-j1", "-X", "-N2", "echo", "x{}"],
            "x1 x2\nx3 x4\nx5 x6\nx7\n",
        )
        .stdin(b"1\n2\n3\n4\n5\n6\n7\n"),
    ]);
}

#[test]
fn multiple_arguments_fill_the_line_and_spread_over_the_slots() {
    check(&[
        // The whole input fits in one line: -m and -X spread it over the slots; --xargs does not.
        case(&["-k", "-j2", "-X", "echo", "pre{}post", ":::", "a", "b", "c", "d", "e"], "preapost prebpost precpost\npredpost preepost\n"),
        case(&["-k", "-j2", "-m", "echo", "pre{}post", ":::", "a", "b", "c", "d", "e"], "prea b cpost\npred epost\n"),
        case(&["-k", "-j2", "--xargs", "echo", "pre{}post", ":::", "a", "b", "c", "d", "e"], "prea b c d epost\n"),
        case(&["-k", "-j4", "-X", "echo", "{#}", "x{}y"], "1 x1y x2y x3y\n2 x4y x5y x6y\n3 x7y x8y x9y\n4 x10y\n")
            .stdin(b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n"),
        case(&["-k", "-j3", "-X", "-N3", "echo"], "1 2 3\n4\n5\n6\n").stdin(b"1\n2\n3\n4\n5\n6\n"),
        // -s bounds the line: `echo 1 2 3 4 5 6 7` is 18 bytes, one more argument makes 20.
        case(&["-k", "-j1", "-m", "-s", "20", "echo"], "1 2 3 4 5 6 7\n8 9 10 11 12\n13 14 15 16 17\n18 19 20 21 22\n23 24 25 26 27\n28 29 30\n")
            .stdin(THIRTY),
        case(&["-k", "-j1", "-X", "-s", "20", "echo", "x{}"], "x1 x2 x3 x4 x5\nx6 x7 x8 x9\nx10 x11 x12\nx13 x14 x15\nx16 x17 x18\nx19 x20 x21\nx22 x23 x24\nx25 x26 x27\nx28 x29 x30\n")
            .stdin(THIRTY),
        // The last line is spread when the input ends with it.
        case(&["-k", "-j2", "-m", "-s", "40", "echo"], "1 2 3 4 5 6 7 8 9 10 11 12 13 14\n15 16 17 18 19 20 21 22 23 24 25\n26 27 28\n29 30\n")
            .stdin(THIRTY),
        // One argument longer than the line: an error before anything runs, status 255.
        case(&["-k", "-j1", "-X", "-s", "10", "echo", ":::", "abcdefghijklmnop"], "").code(255),
        case(&["-k", "-j1", "-s", "10", "echo", ":::", "abcdefghijklmnop"], "").code(255),
    ]);
}

const THIRTY: &[u8] = b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15\n16\n17\n18\n19\n20\n21\n22\n23\n24\n25\n26\n27\n28\n29\n30\n";

#[test]
fn max_lines_takes_lines_with_continuations() {
    const LINES: &[u8] = b"a b\nc\nd e f\ng\nh\n";
    check(&[
        case(&["-k", "-L2", "echo"], "a b c\nd e f g\nh\n").stdin(LINES),
        case(
            &["-k", "-L2", "echo", "x{}y"],
            "xa by xcy\nxd e fy xgy\nxhy\n",
        )
        .stdin(LINES),
        // -l (--max-lines) is -L without context replace; its number is optional and attached.
        case(
            &["-k", "--max-lines=2", "echo", "x{}y"],
            "xa b cy\nxd e f gy\nxhy\n",
        )
        .stdin(LINES),
        case(&["-k", "-l2", "echo", "x{}y"], "xa b cy\nxd e f gy\nxhy\n").stdin(LINES),
        case(
            &["-k", "-l", "echo", "x{}y"],
            "xa by\nxcy\nxd e fy\nxgy\nxhy\n",
        )
        .stdin(LINES),
        case(&["-k", "-L1", "-N2", "echo"], "a b c\n").stdin(b"a \nb\nc\n"),
        case(&["-k", "-L2", "echo", "{1}+{2}"], "a b+c\nd e f+g\nh+\n").stdin(LINES),
        case(
            &["-k", "-j1", "-L2", "-m", "echo", "x{}y"],
            "xa b cy\nxd e f gy\nxhy\n",
        )
        .stdin(LINES),
        // A line ending in a blank goes on with the next one.
        case(&["-k", "-L1", "echo"], "a b\nc\n").stdin(b"a \nb\nc\n"),
        case(&["-k", "-L0", "echo", "x"], "x\nx\n").stdin(b"1\n2\n"),
    ]);
}

// ----- perl expressions ------------------------------------------------------------------------

#[test]
fn perl_expressions_run_in_perl() {
    check(&[
        // man parallel, {= perl expression =}: the words between {= and =} are one expression.
        case(
            &["-k", "echo", "{=", "s/a/b/", "=}", ":::", "aa", "ab", "cc"],
            "ba\nbb\ncc\n",
        ),
        case(
            &[
                "-k",
                "echo",
                "{=2 s/a/b/ =}",
                "{1}",
                ":::",
                "x",
                "y",
                ":::",
                "aa",
                "ab",
            ],
            "ba x\nbb x\nba y\nbb y\n",
        ),
        case(
            &["-k", "echo", "{= $_=$_*2 =}", ":::", "1", "2", "3"],
            "2\n4\n6\n",
        ),
        case(
            &[
                "-k",
                "echo",
                "{= $_=\"Job \".$job->seq() =}",
                "{= $_=seq() =}",
                ":::",
                "a",
                "b",
            ],
            "Job 1 1\nJob 2 2\n",
        )
        .sorted(),
        case(
            &[
                "-k",
                "echo",
                "{= $_=$arg[1].$arg[2] =}",
                ":::",
                "a",
                "b",
                ":::",
                "c",
            ],
            "ac ac\nbc bc\n",
        ),
        // The value is quoted for the shell, unless uq() is called.
        case(&["-k", "echo", "{= $_=\"a  b\" =}", ":::", "x"], "a  b\n"),
        case(
            &["-k", "echo", "{= $_=\"a;echo b\"; uq() =}", ":::", "x"],
            "a\nb\n",
        ),
        // Variables keep their values from job to job, as in GNU parallel.
        case(
            &[
                "-k",
                "-j1",
                "echo",
                "{= $n++; $_=$n =}",
                ":::",
                "a",
                "b",
                "c",
            ],
            "1\n2\n3\n",
        ),
        case(
            &[
                "-k",
                "-j1",
                "-X",
                "echo",
                "x{= s/a/b/ =}",
                ":::",
                "a1",
                "a2",
            ],
            "xb1 xb2\n",
        ),
        case(
            &["-k", "--dry-run", "echo", "{= s/a/b/ =}", ":::", "a b"],
            "echo 'b b'\n",
        ),
    ]);
}

#[test]
fn rpl_and_plus_define_replacement_strings() {
    check(&[
        // man parallel, --rpl.
        case(
            &[
                "-k",
                "--rpl",
                "{..} s:\\.[^.]+$::;s:\\.[^.]+$::;",
                "echo",
                "{..}",
                ":::",
                "a.tar.gz",
                "b.c.d",
            ],
            "a\nb\n",
        ),
        case(
            &[
                "-k",
                "--rpl",
                "{/(\\.\\S+)/(\\.\\S+)} s/$$1/$$2/g;",
                "echo",
                "{/.tar/.gz}",
                ":::",
                "UU.tar.gz",
            ],
            "UU.gz.gz\n",
        ),
        case(
            &[
                "-k",
                "--rpl",
                "{%} 1 $_=\"slot\"",
                "echo",
                "{%}",
                ":::",
                "a",
            ],
            "slot\n",
        ),
        // man parallel, --plus: {} = {+/}/{/} = {.}.{+.} = {..}.{+..} = …
        case(
            &[
                "-k",
                "--plus",
                "echo",
                "{}",
                "{+/}",
                "{/}",
                "{.}",
                "{+.}",
                "{..}",
                "{+..}",
                "{/..}",
                "{...}",
                "{+...}",
                "{/...}",
                ":::",
                "dir/sub/file.tar.gz.x",
            ],
            "dir/sub/file.tar.gz.x dir/sub file.tar.gz.x dir/sub/file.tar.gz x dir/sub/file.tar gz.x file.tar dir/sub/file tar.gz.x file\n",
        ),
        case(
            &["-k", "--plus", "echo", "{:-def}", ":::", "", "x"],
            "def\nx\n",
        ),
        case(
            &["-k", "--plus", "echo", "{:2}", "{:1:3}", ":::", "abcdef"],
            "cdef bcd\n",
        ),
        case(
            &[
                "-k",
                "--plus",
                "echo",
                "{#a*b}",
                "{##a*b}",
                "{%d*f}",
                "{%%d*f}",
                ":::",
                "aabbcdedf",
            ],
            "bcdedf bcdedf aabbcded aabbcde\n",
        ),
        case(
            &[
                "-k", "--plus", "echo", "{/a/X}", "{//a/X}", "{/#a/X}", "{/%f/X}", ":::", "abaf",
            ],
            "Xbaf XbXf Xbaf abaX\n",
        ),
        case(
            &[
                "-k", "--plus", "echo", "{^a}", "{^^b}", "{,A}", "{,,B}", ":::", "abBAb", "AbB",
            ],
            "AbBAb aBBAB abBAb abbAb\nAbB ABB abB Abb\n",
        ),
        case(
            &[
                "-k", "--plus", "echo", "{##}", "{0#}", ":::", "a", "b", "c", "d", "e", "f", "g",
                "h", "i", "j", "k",
            ],
            "11 01\n11 02\n11 03\n11 04\n11 05\n11 06\n11 07\n11 08\n11 09\n11 10\n11 11\n",
        ),
        case(
            &[
                "-k", "--plus", "echo", "{2+.}", "{1..}", ":::", "a.b.c", ":::", "d.e",
            ],
            "e a\n",
        ),
    ]);
}

#[test]
fn perl_errors_and_missing_perl_are_refused_before_any_job() {
    // An expression that does not compile: nothing runs, status 255, perl's message on stderr.
    let o = util::run(&["echo", "ran", "{= s/a/ =}", ":::", "a"]);
    util::assert_code(&o, 255);
    assert_eq!(util::stdout(&o), "");
    assert!(
        util::stderr(&o).contains("does not compile"),
        "{}",
        util::stderr(&o)
    );
    // Without perl on PATH: refused with GNU's spelling named, before any job.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let o = martelli()
        .args(["run", "--plus", "echo", "{..}", ":::", "a.b.c"])
        .env("PATH", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("martelli runs");
    util::assert_code(&o, 255);
    assert_eq!(util::stdout(&o), "");
    let err = util::stderr(&o);
    assert!(err.contains("perl") && err.contains("{= … =}"), "{err}");
    // An expression that dies stops the run with its message.
    let o = util::run(&[
        "-j1",
        "echo",
        "{= die \"boom\" if $_ eq \"b\" =}",
        ":::",
        "a",
        "b",
        "c",
    ]);
    util::assert_code(&o, 255);
    assert!(util::stderr(&o).contains("boom"), "{}", util::stderr(&o));
    assert!(!util::stdout(&o).contains('c'), "{}", util::stdout(&o));
}

// ----- --pipe ----------------------------------------------------------------------------------

fn seq(n: u32) -> Vec<u8> {
    (1..=n)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn cat_puts_each_block_in_a_file_named_by_the_replacement_string() {
    let twenty = seq(20);
    let out = std::str::from_utf8(&twenty).unwrap().to_owned();
    // The file holds the block: the files' contents, in order, are the input.
    check(&[
        case(
            &["-k", "--pipe", "--cat", "--block", "20", "cat", "{}"],
            &out,
        )
        .stdin(&twenty),
        // Counted through the file (`wc -l < {}`): 3 records a job.
        case(
            &["-k", "--pipe", "--cat", "-N3", "wc -l < {}"],
            "3\n3\n3\n3\n3\n3\n2\n",
        )
        .stdin(&twenty),
    ]);
    // The files are gone once their jobs are.
    let tmp = tempfile::tempdir().unwrap();
    let mut m = martelli();
    m.args(["run", "--pipe", "--cat", "--block", "10", "cat", "{}"])
        .env("TMPDIR", tmp.path());
    let o = feed(m, &twenty);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "--cat left files"
    );
}

#[test]
fn pipe_splits_standard_input_into_blocks_of_records() {
    let twenty = seq(20);
    let ten = seq(10);
    let cat_line = "tr '\\n' ' '; echo";
    check(&[
        // A block is cut after the last record end within --block bytes.
        case(
            &["--pipe", "--block", "10", "-k", cat_line],
            "1 2 3 4 5 \n6 7 8 9 \n10 11 12 \n13 14 15 \n16 17 18 \n19 20 \n",
        )
        .stdin(&twenty),
        // --recstart: a record starts with "1"; blocks grow until they hold a whole record.
        case(
            &[
                "--pipe",
                "--block",
                "10",
                "-k",
                "--recend",
                "",
                "--recstart",
                "1",
                cat_line,
            ],
            "1 2 3 4 5 6 7 8 9 \n10 11 12 13 14 15 \n16 17 18 19 20 \n",
        )
        .stdin(&twenty),
        case(
            &[
                "--pipe",
                "--block",
                "10",
                "-k",
                "--regexp",
                "--recend",
                "\\n",
                "--recstart",
                "1",
                cat_line,
            ],
            "1 2 3 4 5 6 7 8 9 \n10 11 12 13 14 15 \n16 17 18 19 20 \n",
        )
        .stdin(&twenty),
        case(
            &["--pipe", "--block", "4", "-k", "--recend", "x", "cat; echo"],
            "a1x\nb2x\nc3x\n",
        )
        .stdin(b"a1xb2xc3x"),
        // -N: records per block; -L: a multiple of lines per block.
        case(
            &["--pipe", "-N3", "-k", cat_line],
            "1 2 3 \n4 5 6 \n7 8 9 \n10 \n",
        )
        .stdin(&ten),
        case(
            &["--pipe", "-L3", "-k", cat_line],
            "1 2 3 4 5 6 7 8 9 \n10 \n",
        )
        .stdin(&ten),
        // --header: the first lines go before every block.
        case(
            &["--pipe", "--header", "1", "--block", "3", "-k", cat_line],
            "h 1 \nh 2 \nh 3 \n",
        )
        .stdin(b"h\n1\n2\n3\n"),
        // The whole input fits in one block: one job.
        case(
            &["--pipe", "--recstart", "b", "-k", "cat; echo ."],
            "a\nb\n.\n",
        )
        .stdin(b"a\nb\n"),
        // No input, no job.
        case(&["--pipe", "echo", "x"], ""),
        case(&["--pipe", "--round-robin", "-j2", "echo", "x"], ""),
        case(&["--pipe", "--block", "100k", "-k", "wc", "-l"], "").stdin(b""),
    ]);
    let big = seq(100_000);
    check(&[case(
        &["--pipe", "--block", "100k", "-k", "wc", "-l"],
        "18517\n16666\n16666\n16666\n16666\n14819\n",
    )
    .stdin(&big)]);
}

#[test]
fn pipepart_splits_a_file_into_parts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("twenty");
    std::fs::write(&file, seq(20)).expect("the file is written");
    let path = file.to_str().expect("a UTF-8 path");
    let cat_line = "tr '\\n' ' '; echo";
    check(&[
        case(
            &[
                "--pipepart",
                "-a",
                path,
                "--block",
                "-1",
                "-j3",
                "-k",
                cat_line,
            ],
            "1 2 3 4 5 6 7 8 9 10 \n11 12 13 14 15 16 17 \n18 19 20 \n",
        ),
        case(
            &["--pipepart", "-a", path, "--block", "10", "-k", cat_line],
            "1 2 3 4 5 6 \n7 8 9 10 11 \n12 13 14 15 \n16 17 18 19 \n20 \n",
        ),
        // Without --block: 10 parts per job slot.
        case(
            &["--pipepart", "-j2", "-k", "wc", "-l", "::::", path],
            "2\n2\n2\n2\n2\n2\n2\n2\n2\n2\n",
        ),
    ]);
}

#[test]
fn round_robin_feeds_every_block_to_one_of_the_slots() {
    let big = seq(100_000);
    let mut m = martelli();
    m.args([
        "run",
        "--pipe",
        "--round-robin",
        "-j3",
        "--block",
        "10k",
        "wc",
        "-l",
    ]);
    let o = feed(m, &big);
    util::assert_code(&o, 0);
    let counts: Vec<u64> = util::lines(&o)
        .iter()
        .map(|l| l.trim().parse().expect("a count"))
        .collect();
    assert_eq!(counts.len(), 3, "one job per slot: {counts:?}");
    assert_eq!(
        counts.iter().sum::<u64>(),
        100_000,
        "every line once: {counts:?}"
    );
}

/// The input is streamed: with 64 MiB on stdin and 1 MiB blocks, `martelli run` never holds more
/// than a few blocks. Each job reports the runner's peak resident size (VmHWM) at its time.
#[test]
fn pipe_streams_an_input_larger_than_its_bound() {
    const MIB: usize = 1 << 20;
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01234\n";
    let mut input = Vec::with_capacity(64 * MIB);
    while input.len() < 64 * MIB {
        input.extend_from_slice(line);
    }
    let mut m = martelli();
    m.args([
        "run",
        "--pipe",
        "--block",
        "1M",
        "-j2",
        "wc -c | tr -d '\\n'; echo -n ' '; grep VmHWM /proc/$PPID/status",
    ]);
    let o = feed(m, &input);
    util::assert_code(&o, 0);
    let mut total = 0;
    let mut peak_kib = 0;
    for l in util::lines(&o) {
        let fields: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(fields.len(), 4, "{l}");
        total += fields[0].parse::<usize>().expect("a byte count");
        peak_kib = peak_kib.max(fields[2].parse::<usize>().expect("VmHWM in kB"));
    }
    assert_eq!(total, input.len(), "every byte reaches a job once");
    // Far below the 64 MiB input: a debug build holds ~17 MiB with two 1 MiB blocks in flight.
    assert!(
        peak_kib < 40 * 1024,
        "peak resident size {peak_kib} kB: the input was not streamed"
    );
}

// ----- columns ---------------------------------------------------------------------------------

/// Whether GNU parallel can read CSV here (it needs perl's Text::CSV); martelli always can.
fn gnu_reads_csv() -> bool {
    Command::new("perl")
        .args(["-MText::CSV", "-e", "1"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn colsep_splits_arguments_into_columns() {
    check(&[
        // Empty columns are kept.
        case(
            &["--colsep", ",", "-k", "echo", "{1}-{2}-{3}-{4}"],
            "a-b--\n",
        )
        .stdin(b"a,b,,\n"),
        case(&["--colsep", ",", "-k", "echo"], "a b  \n").stdin(b"a,b,,\n"),
        case(&["--colsep", ",", "-k", "echo", "{}"], "a b\nc d\n").stdin(b"a,b\nc,d\n"),
        case(&["-C", "\\s+", "echo", "{2}{3}"], "bc\n").stdin(b"a  b\tc\n"),
        // The columns of the first source, then of the second.
        case(
            &[
                "--colsep", ",", "-k", "echo", "{2}", ":::", "a,b", "c,d", ":::", "x,y",
            ],
            "b\nd\n",
        ),
        case(
            &[
                "--colsep", ",", "-k", "echo", "{3}", ":::", "a,b", "c,d", ":::", "x,y",
            ],
            "x\nx\n",
        ),
    ]);
}

#[test]
fn header_names_columns() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let table = dir.path().join("table");
    std::fs::write(&table, "n1,n2\n1,2\n3,4\n").expect("written");
    let table = table.to_str().expect("a UTF-8 path");
    let names = dir.path().join("names");
    std::fs::write(&names, "x\ny\n").expect("written");
    let names = names.to_str().expect("a UTF-8 path");
    check(&[
        // man parallel, --header: the first line names the columns; it is not run.
        case(
            &[
                "--header", ":", "--colsep", ",", "-k", "echo", "{n2}", "{n1}", "{1}",
            ],
            "2 1 1\n4 3 3\n",
        )
        .stdin(b"n1,n2\n1,2\n3,4\n"),
        case(
            &[
                "--header", ":", "--colsep", ",", "-k", "echo", "{n2}", "::::", table,
            ],
            "2\n4\n",
        ),
        case(
            &[
                "--header", ":", "--colsep", ",", "-k", "echo", "{n2}", "{m}", "::::", table,
                ":::", "m", "x", "y",
            ],
            "2 x\n2 y\n4 x\n4 y\n",
        ),
        case(
            &[
                "--header", ":", "-k", "echo", "{f1}", "{f2}", ":::", "f1", "A", "B", ":::", "f2",
                "C", "D",
            ],
            "A C\nA D\nB C\nB D\n",
        ),
        // Without --colsep, the header (and the input) is split at tabs.
        case(&["--header", ":", "-k", "echo", "{n2}"], "2\n").stdin(b"n1\tn2\n1\t2\n"),
        case(
            &[
                "--header",
                ":",
                "--colsep",
                ",",
                "-k",
                "echo",
                "{=n2 s/2/X/ =}",
                "{n1.}",
            ],
            "X 1\n4 3\n",
        )
        .stdin(b"n1,n2\n1,2\n3,4\n"),
        case(
            &[
                "--header", ":", "--colsep", ",", "-k", "-N2", "echo", "{1}", "{4}",
            ],
            "1 4\n",
        )
        .stdin(b"n1,n2\n1,2\n3,4\n"),
        // --header 0: the files' names.
        case(
            &[
                "--header",
                "0",
                "-k",
                "echo",
                &format!("{{{names}}}-{{1}}"),
                "::::",
                names,
            ],
            "x-x\ny-y\n",
        ),
    ]);
}

#[test]
fn csv_reads_quoted_fields() {
    let cases = [
        case(&["--csv", "-k", "echo", "{2}={1}"], "y,z=x\nr=p\nq\n")
            .stdin(b"x,\"y,z\"\n\"p\nq\",r\n"),
        case(&["--csv", "--colsep", ";", "-k", "echo", "{2}"], "y;z\n").stdin(b"x;\"y;z\"\n"),
        case(
            &["--header", ":", "--csv", "-k", "echo", "{n2}", "{n1.}"],
            "2 1\n",
        )
        .stdin(b"n1,n2\n1,2\n"),
        case(&["--csv", "-k", "echo", "{1}"], "say \"hi\"\n").stdin(b"\"say \"\"hi\"\"\",x\n"),
    ];
    if gnu_reads_csv() {
        check(&cases);
    } else {
        // GNU parallel would refuse (no Text::CSV): check martelli alone against the expectations.
        for c in &cases {
            let mut m = martelli();
            m.arg("run").args(c.args);
            let o = feed(m, c.stdin);
            util::assert_code(&o, c.code);
            assert_eq!(util::stdout(&o), c.stdout, "{:?}", c.args);
        }
    }
}

// ----- examples from GNU parallel's manuals ----------------------------------------------------

/// Self-contained examples of `man parallel_examples` (GNU parallel 20221122) that use the
/// features above, with `echo` in place of commands that change files.
#[test]
fn gnu_manual_examples() {
    let pictures: String = (0..=30).map(|i| format!("{i:02}\n")).collect();
    check(&[
        // "Removing file extension when processing files" / "Moving files into directories".
        case(&["-k", "echo", "{=s/(.).*/$1/=}", ":::", "abc", "xyz"], "a\nx\n"),
        // "Rename log files": mv log.{} log.'{= $_++ =}'.
        case(&["-k", "echo", "log.{}", "log.{= $_++ =}", ":::", "9", "8", "1"], "log.9 log.10\nlog.8 log.9\nlog.1 log.2\n"),
        // "Removing strings from the argument" (--plus).
        case(&["--plus", "-k", "echo", "{%_demo}", ":::", "mycode_demo", "keep_demo_here"], "mycode\nkeep_demo_here\n"),
        case(&["--plus", "-k", "echo", "{#demo_}", ":::", "demo_mycode", "keep_demo_here"], "mycode\nkeep_demo_here\n"),
        case(&["--plus", "-k", "echo", "{/demo_/}", ":::", "demo_mycode", "remove_demo_here"], "mycode\nremove_here\n"),
        case(&["--plus", "-k", "echo mkdir {..}; echo tar -C {..} -xf {}", ":::", "a.tar.gz"], "mkdir a\ntar -C a -xf a.tar.gz\n"),
        // "Composed commands" with a positional perl expression.
        case(&["-k", "echo", "{1}{=3 $_=$_%2?\":\":\" \"=}{2}{3}", ":::", "a", ":::", "c", ":::", "1", "2"], "a:c1\na c2\n"),
        // "Using the header of input sources" / "Working as cat | sh" with --header.
        case(&["--header", ":", "-k", "echo", "x{X}y{Y}", ":::", "X", "1", "2", ":::", "Y", "a"], "x1ya\nx2ya\n"),
        case(&["--header", ":", "-k", "echo", "{colour}", "{size}", ":::", "colour", "red", "green", ":::", "size", "S", "M"], "red S\nred M\ngreen S\ngreen M\n"),
        case(&["--colsep", "\t", "--header", ":", "-k", "echo", "{Name}", "{E-mail address}"], "bob b@x\n")
            .stdin(b"Name\tE-mail address\nbob\tb@x\n"),
        // "Removing files with many arguments" / "Context replace".
        case(&["-k", "-j2", "-X", "echo", "pict{}.jpg"], "pict00.jpg pict01.jpg pict02.jpg pict03.jpg pict04.jpg pict05.jpg pict06.jpg pict07.jpg pict08.jpg pict09.jpg pict10.jpg pict11.jpg pict12.jpg pict13.jpg pict14.jpg pict15.jpg\npict16.jpg pict17.jpg pict18.jpg pict19.jpg pict20.jpg pict21.jpg pict22.jpg pict23.jpg pict24.jpg pict25.jpg pict26.jpg pict27.jpg pict28.jpg pict29.jpg pict30.jpg\n")
            .stdin(pictures.as_bytes()),
        // "Copy files as last modified date": -N2 cp {1} {2}.
        case(&["-k", "-N2", "echo", "cp", "{1}", "{2}"], "cp a.es.txt a.txt\ncp b.es.txt b.txt\n")
            .stdin(b"a.es.txt\na.txt\nb.es.txt\nb.txt\n"),
        // "Processing a big file using more CPUs": FASTA records with --recstart '>'.
        case(&["--pipe", "-N1", "--recstart", ">", "-k", "cat; echo ."], ">a\nAC\n.\n>b\nGT\n.\n").stdin(b">a\nAC\n>b\nGT\n"),
        case(&["--pipe", "--recend", "", "-k", "wc", "-c"], "8\n").stdin(b"1\n2\n3\n4\n"),
        case(&["-k", "-n", "3", "-m", "echo", ":::", "a", "b", "c", "d", "e", "f", "g"], "a b c\nd e f\ng\n"),
    ]);
}

// ----- the last of GNU's documented options (issue 15) -----------------------------------------

#[test]
fn parens_choose_k_and_the_rest_of_plus() {
    check(&[
        // man parallel_tutorial, --parens; the default parentheses are plain text then.
        case(
            &[
                "--parens",
                ",,,,",
                "echo",
                ",, s:\\.[^.]+$::;s:\\.[^.]+$::; ,,",
                ":::",
                "foo.tar.gz",
            ],
            "foo\n",
        ),
        case(
            &[
                "--parens",
                "<<>>",
                "echo",
                "<< $_.=1 >>",
                "{=",
                "x",
                "=}",
                ":::",
                "a",
            ],
            "a1 {= x =}\n",
        ),
        // An odd length: the left parenthesis is the shorter half.
        case(
            &["--parens", "[[]]]", "echo", "[[ $_=uc ]]]", ":::", "a"],
            "A\n",
        ),
        // man parallel_examples, "All combinations in a list". Skipped jobs count as failed in
        // the status, as GNU parallel's.
        case(
            &[
                "--plus",
                "echo",
                "{choose_k}",
                ":::",
                "A",
                "B",
                "C",
                ":::",
                "A",
                "B",
                "C",
            ],
            "A B\nA C\nB C\n",
        )
        .sorted()
        .code(6),
        case(
            &[
                "--plus",
                "echo",
                "x{choose_k}y",
                ":::",
                "A",
                "B",
                ":::",
                "A",
                "B",
            ],
            "xA By\n",
        )
        .code(3),
        case(
            &["--plus", "echo", "{uniq}", ":::", "A", "B", ":::", "A", "B"],
            "A B\nB A\n",
        )
        .sorted()
        .code(2),
        case(&["--plus", "-j1", "echo", "{slot}", ":::", "a"], "1\n"),
        // GNU parallel's name for this machine is ":".
        case(&["--plus", "echo", "[{host}]", ":::", "a"], "[:]\n"),
    ]);
    // Parentheses that cannot be split are refused before any job.
    let mut m = martelli();
    m.args(["run", "--parens", "x", "echo", ":::", "a"]);
    let o = feed(m, b"");
    util::assert_code(&o, 255);
    assert_eq!(util::stdout(&o), "");
}

#[test]
fn max_chars_is_gnu_parallels_computed_limit() {
    let thirty = seq(30_000);
    check(&[
        // man parallel_tutorial: --xargs and -m fill lines up to the system's limit.
        case(&["--xargs", "echo"], "").stdin(b""),
        // -k: several jobs run at once, and without it they print in the order they end.
        case(
            &["-k", "--xargs", "echo {} | wc -w"],
            "12459\n10608\n6933\n",
        )
        .stdin(&thirty),
        // -m: the last line is spread over the 4 slots.
        case(
            &["--jobs", "4", "-m", "echo {} | wc -w"],
            "12459\n10608\n1734\n1734\n1734\n1731\n",
        )
        .stdin(&thirty)
        .sorted(),
        // A limit above the system's: a warning, and the system's limit.
        case(
            &["-k", "--xargs", "-s", "100000", "echo {} | wc -w"],
            "12459\n10608\n6933\n",
        )
        .stdin(&thirty),
        case(
            &["-k", "--xargs", "-s", "20000", "echo {} | wc -w"],
            "4218\n3997\n3628\n3331\n3331\n3331\n3331\n3331\n1502\n",
        )
        .stdin(&thirty),
    ]);
    let mut m = martelli();
    m.args(["run", "--xargs", "-s", "100000", "echo", ":::", "a"]);
    let o = feed(m, b"");
    util::assert_code(&o, 0);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("63664"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn pipe_header_regexp_and_n_records_of_a_regexp() {
    let cat_job = "echo JOB; cat";
    check(&[
        // man parallel_tutorial, "Header": a regular expression.
        case(
            &["--header", "(%.*\\n)*", "--pipe", "-N3", "-k", cat_job],
            "JOB\n%h1\n%h2\n1\n2\n3\nJOB\n%h1\n%h2\n4\n5\n",
        )
        .stdin(b"%h1\n%h2\n1\n2\n3\n4\n5\n"),
        // The header is matched a block at a time: 4 bytes out of blocks of 3.
        case(
            &[
                "--pipe", "--header", ".{4}", "--block", "3", "--recend", "", "-k", "cat;echo",
            ],
            "HHHHAAA\nHHHHBBB\nHHHHCCC\n",
        )
        .stdin(b"HHHHAAABBBCCC"),
        // A header that is never complete: no header.
        case(&["--pipe", "--header", "3", "-k", cat_job], "JOB\na\nb\n").stdin(b"a\nb\n"),
        // man parallel_tutorial, "Record separators": -N with --regexp.
        case(
            &["-kN1", "--regexp", "--recend", ",_+", "--pipe", cat_job],
            "JOB\nfoo,bar,_JOB\nbaz,__JOB\nqux,\n",
        )
        .stdin(b"foo,bar,_baz,__qux,\n"),
        // What comes before the first record start is a block of its own.
        case(
            &[
                "-kN2",
                "--regexp",
                "--recstart",
                ">",
                "--recend",
                "\\n",
                "--pipe",
                cat_job,
            ],
            "JOB\njunk\nJOB\n>a\n1\n>b\n2\nJOB\n>c\n3\n",
        )
        .stdin(b"junk\n>a\n1\n>b\n2\n>c\n3\n"),
    ]);
}

#[test]
fn tee_gives_the_whole_input_to_every_job() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("twenty");
    std::fs::write(&file, seq(20)).expect("the file is written");
    let path = file.to_str().expect("a UTF-8 path");
    let big = seq(200_000);
    check(&[
        // man parallel, --tee.
        case(
            &["--pipe", "--tee", "-v", "wc", "{}", ":::", "-w", "-l", "-c"],
            "wc -w\n1000\nwc -l\n1000\nwc -c\n3893\n",
        )
        .stdin(&seq(1000))
        .sorted(),
        // The arguments are not appended; -k keeps the jobs' order.
        case(
            &["--pipe", "--tee", "-k", "echo; cat", ":::", "a", "b"],
            "\n1\n2\n3\n\n1\n2\n3\n",
        )
        .stdin(b"1\n2\n3\n"),
        case(
            &[
                "--pipe",
                "--tee",
                "-k",
                "--tag",
                "grep {1} | wc {2}",
                ":::",
                "1",
                "2",
                ":::",
                "-l",
                "-c",
            ],
            "1 -l\t11\n1 -c\t32\n2 -l\t3\n2 -c\t8\n",
        )
        .stdin(&seq(20)),
        // More than one block: every job reads all of it.
        case(
            &[
                "--pipe", "--tee", "--block", "64k", "-k", "wc -l", ":::", "a", "b", "c",
            ],
            "200000\n200000\n200000\n",
        )
        .stdin(&big),
        // A job that stops reading does not hold the others back.
        case(
            &[
                "--pipe", "--tee", "-k", "eval {}", ":::", "head -n1", "wc -l",
            ],
            "1\n200000\n",
        )
        .stdin(&big),
        // --pipepart: every job reads the file.
        case(
            &[
                "--pipepart",
                "-a",
                path,
                "--tee",
                "-k",
                "--tag",
                "grep {} | wc -l",
                ":::",
                "1",
                "2",
            ],
            "1\t11\n2\t3\n",
        ),
    ]);
    // All jobs run at once: fewer slots than jobs is an error, before any job. (GNU parallel
    // gives the same status and message, but leaves its `tee` process behind, holding the
    // output open, so it is not run here.)
    let mut m = martelli();
    m.args([
        "run",
        "--pipe",
        "--tee",
        "-j1",
        "echo {}; cat",
        ":::",
        "a",
        "b",
    ]);
    let o = feed(m, b"1\n");
    util::assert_code(&o, 255);
    assert_eq!(util::stdout(&o), "");
    assert!(String::from_utf8_lossy(&o.stderr).contains("-j 0"), "{o:?}");
}

#[test]
fn results_directories_are_named_by_the_header() {
    let gnu = gnu_present();
    let listing = |program: &str, dir: &std::path::Path, args: &[&str]| -> String {
        let mut c = if program == "martelli" {
            let mut m = martelli();
            m.arg("run");
            m
        } else {
            let mut g = Command::new("parallel");
            g.arg("--will-cite");
            g
        };
        c.current_dir(dir).args(args);
        let o = feed(c, b"");
        assert_eq!(o.status.code(), Some(0), "{program} {args:?}: {o:?}");
        let mut found: Vec<String> = walk(dir)
            .into_iter()
            .map(|p| {
                let rel = p.strip_prefix(dir).expect("inside").display().to_string();
                let content = std::fs::read_to_string(&p).unwrap_or_default();
                format!("{rel}: {content:?}")
            })
            .collect();
        found.sort();
        found.join("\n")
    };
    let cases: &[(&[&str], &[&str])] = &[
        // man parallel_tutorial, "Saving output into files".
        (
            &[
                "--header",
                ":",
                "--results",
                "out",
                "echo",
                ":::",
                "f1",
                "A",
                "B",
                ":::",
                "f2",
                "C",
                "D",
            ],
            &[
                "out/f1/A/f2/C/stdout: \"A C\\n\"",
                "out/f1/B/f2/D/seq: \"4\"",
            ],
        ),
        // The columns go in the order of their names: by value as numbers (a word is 0), then as text.
        (
            &[
                "--header",
                ":",
                "--results",
                "out",
                "echo",
                ":::",
                "zz",
                "A",
                ":::",
                "10",
                "C",
                ":::",
                "9",
                "E",
            ],
            &["out/zz/A/9/E/10/C/stdout: \"A C E\\n\""],
        ),
        // A tab in an argument is written \t.
        (
            &["--results", "out", "echo", ":::", "a\tb"],
            &["out/1/a\\tb/stdout: \"a\\tb\\n\""],
        ),
        // A table names its columns by the header too.
        (
            &[
                "--header",
                ":",
                "--results",
                "out.csv",
                "echo",
                ":::",
                "f1",
                "A",
            ],
            &[],
        ),
    ];
    for (args, expect) in cases {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let got = listing("martelli", dir.path(), args);
        for line in *expect {
            assert!(
                got.lines().any(|l| l == *line),
                "{args:?}: {line} not in\n{got}"
            );
        }
        if gnu {
            let gdir = tempfile::tempdir().expect("a temporary directory");
            let want = listing("parallel", gdir.path(), args);
            // The CSV table holds start times and run times: compare its header line only.
            let strip = |s: &str| -> String {
                s.lines()
                    .map(|l| match l.split_once(": \"Seq,") {
                        Some((name, rest)) => {
                            format!("{name}: {}", rest.split("\\n").next().unwrap_or(""))
                        }
                        None => l.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(strip(&got), strip(&want), "{args:?}");
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn compress_is_accepted_where_output_is_not_in_files() {
    let cases = [case(
        &["--compress", "-k", "echo", ":::", "a", "b"],
        "a\nb\n",
    )];
    check(&cases);
    for args in [
        &["run", "--compress", "--files", "echo", ":::", "a"][..],
        &["run", "--compress", "--results", "dir", "echo", ":::", "a"][..],
    ] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut m = martelli();
        m.current_dir(dir.path()).args(args);
        let o = feed(m, b"");
        util::assert_code(&o, 255);
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--compress"),
            "{args:?}: {o:?}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("readable").count(), 0);
    }
}

#[test]
fn tee_streams_an_input_larger_than_its_bound() {
    const MIB: usize = 1 << 20;
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01234\n";
    let mut input = Vec::with_capacity(48 * MIB);
    while input.len() < 48 * MIB {
        input.extend_from_slice(line);
    }
    let mut m = martelli();
    m.args([
        "run",
        "--pipe",
        "--tee",
        "wc -c | tr -d '\\n'; echo -n ' '; grep VmHWM /proc/$PPID/status",
        ":::",
        "a",
        "b",
    ]);
    let o = feed(m, &input);
    util::assert_code(&o, 0);
    let mut peak_kib = 0;
    let lines = util::lines(&o);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in lines {
        let fields: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(fields.len(), 4, "{l}");
        assert_eq!(
            fields[0].parse::<usize>().expect("a byte count"),
            input.len(),
            "every job reads all of the input"
        );
        peak_kib = peak_kib.max(fields[2].parse::<usize>().expect("VmHWM in kB"));
    }
    // Far below the 48 MiB input: a few 1 MiB blocks are in flight, shared by the jobs.
    assert!(
        peak_kib < 40 * 1024,
        "peak resident size {peak_kib} kB: the input was not streamed"
    );
}
