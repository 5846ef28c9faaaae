use super::*;

fn split(input: &[u8], config: PipeConfig) -> Vec<String> {
    let mut s = Splitter {
        reader: Box::new(io::Cursor::new(input.to_vec())),
        block: config.block as usize,
        config,
        buf: Vec::new(),
        ready: Default::default(),
        header: Vec::new(),
        eof: false,
        done: false,
        offset: 0,
        start_checked: false,
    };
    s.read_header().unwrap();
    let mut out = Vec::new();
    while let Some(b) = s.next_block().unwrap() {
        out.push(String::from_utf8(b).unwrap());
    }
    out
}

fn lines(block: i64) -> PipeConfig {
    PipeConfig {
        part: None,
        block,
        boundary: Boundary::Fixed {
            recend: b"\n".to_vec(),
            recstart: Vec::new(),
        },
        records: None,
        lines: None,
        header: None,
        starts_record: None,
        round_robin: false,
        tee: false,
    }
}

#[test]
fn blocks_end_at_the_last_record_end_as_gnu_parallel() {
    let input: String = (1..=20).map(|i| format!("{i}\n")).collect();
    // GNU parallel 20221122: seq 20 | parallel --pipe --block 10 -k …
    assert_eq!(
        split(input.as_bytes(), lines(10)),
        [
            "1\n2\n3\n4\n5\n",
            "6\n7\n8\n9\n",
            "10\n11\n12\n",
            "13\n14\n15\n",
            "16\n17\n18\n",
            "19\n20\n"
        ]
    );
}

#[test]
fn a_record_longer_than_the_block_is_never_split() {
    let input = b"short\na much longer record than the block\nx\n";
    let blocks = split(input, lines(4));
    assert_eq!(blocks.concat().as_bytes(), input);
    assert!(blocks.iter().all(|b| b.ends_with('\n')), "{blocks:?}");
}

#[test]
fn records_and_lines_per_block() {
    let input: String = (1..=10).map(|i| format!("{i}\n")).collect();
    let mut c = lines(1 << 20);
    c.records = Some(3);
    assert_eq!(
        split(input.as_bytes(), c),
        ["1\n2\n3\n", "4\n5\n6\n", "7\n8\n9\n", "10\n"]
    );
    let mut c = lines(1 << 20);
    c.lines = Some(3);
    assert_eq!(
        split(input.as_bytes(), c),
        ["1\n2\n3\n4\n5\n6\n7\n8\n9\n", "10\n"]
    );
}

fn piped(block: &str, options: impl FnOnce(&mut PipeOptions<'_>)) -> PipeConfig {
    let mut o = PipeOptions {
        pipe: true,
        pipepart: false,
        block: Some(block),
        recstart: None,
        recend: None,
        regexp: false,
        round_robin: false,
        tee: false,
        header: None,
        records: None,
        lines: None,
        files: Vec::new(),
    };
    options(&mut o);
    config(&o).unwrap().unwrap()
}

#[test]
fn a_regex_header_goes_before_every_block() {
    // GNU parallel 20221122: (echo %head1; echo %head2; seq 5) |
    //   parallel -k --header '(%.*\n)*' --pipe -N2 'echo JOB;cat'
    let c = piped("1M", |o| {
        o.header = Some("(%.*\n)*");
        o.records = Some("2");
    });
    assert_eq!(
        split(b"%head1\n%head2\n1\n2\n3\n4\n5\n", c),
        [
            "%head1\n%head2\n1\n2\n",
            "%head1\n%head2\n3\n4\n",
            "%head1\n%head2\n5\n"
        ]
    );
    // printf HHHHAAABBBCCC | parallel -k --pipe --header .{4} --block 3 --recend '' 'cat;echo'
    let c = piped("3", |o| {
        o.header = Some(".{4}");
        o.recend = Some("");
    });
    assert_eq!(
        split(b"HHHHAAABBBCCC", c),
        ["HHHHAAA", "HHHHBBB", "HHHHCCC"]
    );
    // A number is that many lines; `:` one; an input too short for it has no header.
    let c = piped("1M", |o| {
        o.header = Some("2");
        o.records = Some("1");
    });
    assert_eq!(split(b"a\nb\nc\nd\n", c), ["a\nb\nc\n", "a\nb\nd\n"]);
    let c = piped("1M", |o| o.header = Some("3"));
    assert_eq!(split(b"a\nb\n", c), ["a\nb\n"]);
    assert!(
        config(&PipeOptions {
            header: Some("(unclosed"),
            ..piped_options()
        })
        .is_err()
    );
}

fn piped_options() -> PipeOptions<'static> {
    PipeOptions {
        pipe: true,
        pipepart: false,
        block: None,
        recstart: None,
        recend: None,
        regexp: false,
        round_robin: false,
        tee: false,
        header: None,
        records: None,
        lines: None,
        files: Vec::new(),
    }
}

#[test]
fn n_records_of_a_regexp() {
    // GNU parallel 20221122: echo foo,bar,_baz,__qux, |
    //   parallel -kN1 --regexp --recend ,_+ --pipe 'echo JOB;cat'
    let c = piped("1M", |o| {
        o.regexp = true;
        o.recend = Some(",_+");
        o.records = Some("1");
    });
    assert_eq!(
        split(b"foo,bar,_baz,__qux,\n", c),
        ["foo,bar,_", "baz,__", "qux,\n"]
    );
    // printf 'junk\n>a\n1\n>b\n2\n>c\n3\n' | parallel -kN2 --regexp --recstart '>' --pipe …:
    // what comes before the first record start is a block of its own.
    let c = piped("1M", |o| {
        o.regexp = true;
        o.recstart = Some(">");
        o.recend = Some("\n");
        o.records = Some("2");
    });
    assert_eq!(
        split(b"junk\n>a\n1\n>b\n2\n>c\n3\n", c),
        ["junk\n", ">a\n1\n>b\n2\n", ">c\n3\n"]
    );
}

#[test]
fn sizes_have_gnu_suffixes() {
    assert_eq!(parse_size("1M"), Some(1 << 20));
    assert_eq!(parse_size("1k"), Some(1000));
    assert_eq!(parse_size("1.5K"), Some(1536));
    assert_eq!(parse_size("-1"), Some(-1));
    assert_eq!(parse_size("x"), None);
    assert_eq!(parse_size("0"), None);
}
