//! [`Payload`]: a task's payload (or a result's) described for a person: its size, how it is
//! encoded, and a short preview as plain text — never markup. The preview is text to be shown
//! as text: a page puts it in a text node, never into HTML.
//!
//! The encoding is guessed in this order:
//!
//! 1. `text`: valid UTF-8 without control characters other than tab, newline and carriage return
//!    (shell command lines, JSON, HTML …), shown as it is;
//! 2. `messagepack`: one whole MessagePack value (martelli's registered and typed tasks), shown
//!    in a JSON-like notation, byte strings as `b"…"` or hex;
//! 3. `binary`: anything else, shown as hex.
//!
//! A preview holds at most [`PREVIEW_CHARS`] characters; payloads over [`DECODE_LIMIT`] bytes are
//! not decoded as MessagePack (a small message can describe a large tree), only shown as hex.

use serde::Serialize;
use std::fmt::Write as _;

/// The most characters of a preview.
pub const PREVIEW_CHARS: usize = 2000;

/// The largest payload decoded as MessagePack for its preview.
pub const DECODE_LIMIT: usize = 256 << 10;

/// How deep a MessagePack value is decoded for a preview.
const MAX_DEPTH: usize = 64;

/// A payload described for a person.
///
/// ```
/// use martelli::cluster::Payload;
///
/// let p = Payload::of(b"<b>hello</b>");
/// assert_eq!((p.size, p.format, p.preview.as_str()), (12, "text", "<b>hello</b>"));
/// let p = Payload::of(&[0x92, 0x02, 0x03]); // MessagePack [2, 3]
/// assert_eq!((p.format, p.preview.as_str()), ("messagepack", "[2, 3]"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Payload {
    /// Its size in bytes.
    pub size: usize,
    /// `text`, `messagepack` or `binary`.
    pub format: &'static str,
    /// Up to [`PREVIEW_CHARS`] characters of it, as plain text.
    pub preview: String,
    /// Whether the preview shows less than the whole payload.
    pub truncated: bool,
}

impl Payload {
    /// Describes `bytes`.
    pub fn of(bytes: &[u8]) -> Payload {
        if let Some(text) = plain_text(bytes) {
            let (preview, truncated) = cut(text);
            return Payload {
                size: bytes.len(),
                format: "text",
                preview,
                truncated,
            };
        }
        if bytes.len() <= DECODE_LIMIT {
            let mut rest = bytes;
            if let Ok(value) = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH) {
                if rest.is_empty() {
                    let mut out = Budget::new();
                    render(&value, &mut out);
                    return Payload {
                        size: bytes.len(),
                        format: "messagepack",
                        truncated: out.truncated,
                        preview: out.text,
                    };
                }
            }
        }
        let shown = bytes.len().min(PREVIEW_CHARS / 2);
        Payload {
            size: bytes.len(),
            format: "binary",
            preview: hex(&bytes[..shown]),
            truncated: shown < bytes.len(),
        }
    }
}

/// The bytes as text, when they are UTF-8 without control characters (other than `\t\n\r`).
fn plain_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        .then_some(text)
}

/// At most [`PREVIEW_CHARS`] characters of `text`, and whether it was cut.
fn cut(text: &str) -> (String, bool) {
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => (text[..end].to_owned(), true),
        None => (text.to_owned(), false),
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A preview being written, which stops growing at [`PREVIEW_CHARS`].
struct Budget {
    text: String,
    truncated: bool,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            text: String::new(),
            truncated: false,
        }
    }

    fn full(&self) -> bool {
        self.truncated
    }

    fn push(&mut self, s: &str) {
        if self.truncated {
            return;
        }
        let used = self.text.chars().count();
        let room = PREVIEW_CHARS.saturating_sub(used);
        let (part, cut) = match s.char_indices().nth(room) {
            Some((end, _)) => (&s[..end], true),
            None => (s, false),
        };
        self.text.push_str(part);
        self.truncated = cut;
    }
}

/// A MessagePack value in a JSON-like notation: strings quoted and escaped, byte strings as
/// `b"…"` when they are text and as `0x…` otherwise.
fn render(value: &rmpv::Value, out: &mut Budget) {
    use rmpv::Value;
    if out.full() {
        return;
    }
    match value {
        Value::Nil => out.push("null"),
        Value::Boolean(b) => out.push(if *b { "true" } else { "false" }),
        Value::Integer(i) => out.push(&i.to_string()),
        Value::F32(f) => out.push(&f.to_string()),
        Value::F64(f) => out.push(&f.to_string()),
        Value::String(s) => match s.as_str() {
            Some(s) => out.push(&format!("{s:?}")),
            None => out.push(&format!("b{:?}", String::from_utf8_lossy(s.as_bytes()))),
        },
        Value::Binary(b) => match plain_text(b) {
            Some(text) => out.push(&format!("b{text:?}")),
            None => out.push(&format!("0x{}", hex(b))),
        },
        Value::Array(items) => {
            out.push("[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(", ");
                }
                render(item, out);
            }
            out.push("]");
        }
        Value::Map(pairs) => {
            out.push("{");
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(", ");
                }
                render(k, out);
                out.push(": ");
                render(v, out);
            }
            out.push("}");
        }
        Value::Ext(kind, data) => out.push(&format!("ext({kind}, 0x{})", hex(data))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_text_and_stays_as_written() {
        let html = "<img src=x onerror=alert(1)><b>x</b>";
        let p = Payload::of(html.as_bytes());
        assert_eq!(p.format, "text");
        assert_eq!(p.preview, html);
        assert!(!p.truncated);
    }

    #[test]
    fn messagepack_maps_show_keys_strings_and_bytes() {
        #[derive(Serialize)]
        struct Shell<'a> {
            #[serde(with = "serde_bytes")]
            shell: &'a [u8],
            timeout_ms: u64,
            tags: Vec<&'a str>,
        }
        let bytes = rmp_serde::to_vec_named(&Shell {
            shell: b"echo \"hi\"",
            timeout_ms: 500,
            tags: vec!["a"],
        })
        .unwrap();
        let p = Payload::of(&bytes);
        assert_eq!(p.format, "messagepack");
        assert_eq!(
            p.preview,
            r#"{"shell": b"echo \"hi\"", "timeout_ms": 500, "tags": ["a"]}"#
        );
    }

    #[test]
    fn other_bytes_are_hex_and_long_previews_are_cut() {
        let p = Payload::of(&[0x00, 0xff, 0xc1]);
        assert_eq!((p.format, p.preview.as_str()), ("binary", "00ffc1"));
        let long = "x".repeat(PREVIEW_CHARS + 5);
        let p = Payload::of(long.as_bytes());
        assert_eq!(p.preview.chars().count(), PREVIEW_CHARS);
        assert!(p.truncated);
        let many: Vec<u64> = (0..2000).collect();
        let p = Payload::of(&rmp_serde::to_vec(&many).unwrap());
        assert_eq!(p.format, "messagepack");
        assert!(p.truncated && p.preview.chars().count() == PREVIEW_CHARS);
    }

    #[test]
    fn a_message_that_claims_more_than_it_holds_is_binary() {
        // An array header claiming 2^32-1 elements, followed by one.
        let p = Payload::of(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(p.format, "binary");
    }
}
