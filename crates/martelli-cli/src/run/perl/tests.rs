use super::*;

fn perl(expr: &str) -> Segment {
    Segment::Perl {
        source: None,
        expr: expr.into(),
    }
}

#[test]
fn words_split_at_expressions() {
    assert_eq!(
        segments(b"a{= s/x/y/ =}b", &[], &Parens::default()).unwrap(),
        [
            Segment::Text(b"a".to_vec()),
            perl(" s/x/y/ "),
            Segment::Text(b"b".to_vec())
        ]
    );
    assert_eq!(
        segments(b"{=2 $_++ =}", &[], &Parens::default()).unwrap(),
        [Segment::Perl {
            source: Some(2),
            expr: "$_++ ".into()
        }]
    );
    assert_eq!(
        segments(b"{}", &[], &Parens::default()).unwrap(),
        [Segment::Text(b"{}".to_vec())]
    );
}

#[test]
fn other_parentheses_mark_expressions() {
    let parens = Parens::parse(",,,,").unwrap();
    assert_eq!(
        segments(b"a,, s/x/y/ ,,b{= c =}", &[], &parens).unwrap(),
        [
            Segment::Text(b"a".to_vec()),
            perl(" s/x/y/ "),
            Segment::Text(b"b{= c =}".to_vec())
        ]
    );
    let words: Vec<Vec<u8>> = vec![
        b"echo".to_vec(),
        b",,".to_vec(),
        b"s/a/b/".to_vec(),
        b",,".to_vec(),
    ];
    assert_eq!(
        merge_words(&words, &parens),
        [b"echo".to_vec(), b",, s/a/b/ ,,".to_vec()]
    );
    // An odd length: the left parenthesis is the shorter half, as GNU parallel splits it.
    let odd = Parens::parse("<[]>>").unwrap();
    assert_eq!((odd.left, odd.right), (b"<[".to_vec(), b"]>>".to_vec()));
    assert!(Parens::parse("x").is_err());
    assert!(Parens::parse("").is_err());
}

#[test]
fn tags_become_expressions_with_their_captures() {
    let rpls = vec!["{..} s:\\.[^.]+$::;s:\\.[^.]+$::;".to_string()];
    assert_eq!(
        segments(b"x{..}y{1..}", &rpls, &Parens::default()).unwrap(),
        [
            Segment::Text(b"x".to_vec()),
            perl("s:\\.[^.]+$::;s:\\.[^.]+$::;"),
            Segment::Text(b"y".to_vec()),
            Segment::Perl {
                source: Some(1),
                expr: "s:\\.[^.]+$::;s:\\.[^.]+$::;".into()
            },
        ]
    );
    let rpls = vec!["{:-([^}]+?)} $_ ||= $$1".to_string()];
    assert_eq!(
        segments(b"{:-dflt}", &rpls, &Parens::default()).unwrap(),
        [perl("$_pAr_gRp1 = \"dflt\";$_ ||= $_pAr_gRp1")]
    );
    assert!(segments(b"{}", &["{x}".to_string()], &Parens::default()).is_err());
}
