use super::*;

fn shell(cmd: &[&str], args: &[&str]) -> String {
    let words: Vec<Vec<u8>> = cmd.iter().map(|w| w.as_bytes().to_vec()).collect();
    let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
    String::from_utf8(
        Template::parse(&words, Mode::Shell)
            .compose(&args, 7, 2)
            .display(),
    )
    .unwrap()
}

#[test]
fn quoting_matches_gnu_parallel() {
    assert_eq!(shell_quote(b"a b"), b"'a b'");
    assert_eq!(shell_quote(b"it's"), b"'it'\"'\"'s'");
    assert_eq!(shell_quote(b"'a"), b"\"'\"'a'");
    assert_eq!(shell_quote(b"a'"), b"'a'\"'\"");
    assert_eq!(shell_quote(b""), b"''");
    assert_eq!(shell_quote(b"plain-1.2/x_y+z"), b"plain-1.2/x_y+z");
    assert_eq!(shell_quote(b"x$y;z"), b"'x$y;z'");
}

#[test]
fn replacement_strings_follow_gnu_parallel() {
    let cmd = ["echo", "{}", "{.}", "{/}", "{//}", "{/.}", "{#}", "{%}"];
    assert_eq!(
        shell(&cmd, &["dir.d/a.b.c"]),
        "echo dir.d/a.b.c dir.d/a.b a.b.c dir.d a.b 7 2"
    );
    assert_eq!(
        shell(&cmd, &["noext"]),
        "echo noext noext noext . noext 7 2"
    );
    assert_eq!(
        shell(&cmd, &[".hidden"]),
        "echo .hidden '' .hidden . '' 7 2"
    );
    assert_eq!(shell(&cmd, &["/abs"]), "echo /abs /abs abs / abs 7 2");
    assert_eq!(shell(&cmd, &["tr/"]), "echo tr/ tr/ '' . '' 7 2");
    assert_eq!(shell(&["echo", "{//}"], &["a/b/"]), "echo a");
    assert_eq!(shell(&["echo", "{//}"], &["//"]), "echo /");
}

#[test]
fn positional_and_appended_arguments() {
    assert_eq!(
        shell(&["echo", "{2}-{1}", "{-1}"], &["a", "b c"]),
        "echo 'b c'-a 'b c'"
    );
    assert_eq!(shell(&["echo", "{2.}"], &["a", "x.y"]), "echo x");
    assert_eq!(shell(&["echo"], &["a", "b c"]), "echo a 'b c'");
    // Any replacement string, {#} and {%} too, means nothing is appended (as GNU parallel).
    assert_eq!(shell(&["echo", "{#}"], &["a"]), "echo 7");
    assert_eq!(shell(&["echo", "{%}"], &["a"]), "echo 2");
    assert_eq!(shell(&["echo", "{}"], &["a", "b"]), "echo a b");
    assert_eq!(shell(&["echo", "{x}", "{}}"], &["a"]), "echo {x} a}");
}

#[test]
fn simple_commands_skip_the_shell() {
    let words = |line: &str| {
        simple_command(line.as_bytes()).map(|w| {
            w.iter()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        words("gzip -9 dir/a.log"),
        Some(vec!["gzip".into(), "-9".into(), "dir/a.log".into()])
    );
    assert_eq!(
        words("sh -c 'echo 1'"),
        Some(vec!["sh".into(), "-c".into(), "echo 1".into()])
    );
    assert_eq!(
        words("cat '' x'a b'y"),
        Some(vec!["cat".into(), "".into(), "xa by".into()])
    );
    assert_eq!(
        words("/bin/echo a=b"),
        Some(vec!["/bin/echo".into(), "a=b".into()])
    );
    // The shell has work to do, or the program is the shell's own.
    for line in [
        "echo a",
        "true 1",
        "cd x",
        "A=1 env",
        "ls *.c",
        "ls ~",
        "a | b",
        "a; b",
        "a > f",
        "echo $HOME",
        "ls 'it'\"'\"'s'",
        "a 'open",
        "ls #c",
        "a\tb",
        "a & b",
        "",
        "  ",
        "''",
        "f \\x",
        "(a)",
        "x `y`",
    ] {
        assert_eq!(words(line), None, "{line}");
    }
}

#[test]
fn renamed_replacement_strings() {
    let words = vec![
        b"echo".to_vec(),
        b",,".to_vec(),
        b"{}".to_vec(),
        b"{.}".to_vec(),
    ];
    let tokens = Tokens {
        whole: b",,".to_vec(),
        ..Tokens::default()
    };
    let t = Template::parse_with(&words, Mode::Shell, &tokens);
    // `{}` is literal once -I renames it; `{.}` keeps its meaning.
    assert_eq!(
        t.compose(&[b"a/b.c".to_vec()], 1, 1).display(),
        b"echo a/b.c {} a/b"
    );
    let tokens = Tokens {
        seq: b"SEQ".to_vec(),
        base: b"//".to_vec(),
        ..Tokens::default()
    };
    let words = vec![b"echo".to_vec(), b"SEQ-//".to_vec()];
    let t = Template::parse_with(&words, Mode::Shell, &tokens);
    assert_eq!(t.compose(&[b"x/y".to_vec()], 3, 1).display(), b"echo 3-y");
}

#[test]
fn lines_mode_runs_the_arguments() {
    let t = Template::parse_with(&[], Mode::Lines, &Tokens::default());
    assert_eq!(
        t.compose(&[b"echo 'a b'".to_vec(), b"c".to_vec()], 1, 1),
        Composed::Shell(b"echo 'a b' c".to_vec())
    );
}

#[test]
fn quote_mode_quotes_whole_words() {
    let words = vec![b"echo".to_vec(), b"{} x".to_vec()];
    let t = Template::parse(&words, Mode::Quote);
    assert_eq!(
        t.compose(&[b"a b".to_vec()], 1, 1).display(),
        b"echo 'a b x'"
    );
    let t = Template::parse(&words, Mode::NoShell);
    assert_eq!(
        t.compose(&[b"a b".to_vec()], 1, 1),
        Composed::Argv(vec![b"echo".to_vec(), b"a b x".to_vec()])
    );
}

#[test]
fn plain_words_of_builtin_lines() {
    let words = |line: &str| {
        plain_words(line.as_bytes()).map(|w| {
            w.iter()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
        })
    };
    // The words are there even where the first is the shell's own; `builtins` decides on those.
    assert_eq!(words("echo a"), Some(vec!["echo".into(), "a".into()]));
    assert_eq!(
        words("true '' 'a b'"),
        Some(vec!["true".into(), "".into(), "a b".into()])
    );
    for line in [
        "",
        "  ",
        "echo $HOME",
        "echo a; b",
        "echo \\x",
        "echo 'it'\"'\"'s'",
    ] {
        assert_eq!(words(line), None, "{line}");
    }
}
