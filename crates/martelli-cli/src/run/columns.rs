//! Columns: `--colsep`, `--csv`, `--header` and named columns `{colname}`, as in GNU parallel.
//!
//! - `--colsep REGEX`: each argument (an input line, or a `:::` value) is split into columns at
//!   the regular expression; the columns are the job's arguments, `{1}`, `{2}`, … (the columns of
//!   the first source, then those of the second, …), `{}` all of them. Empty columns are kept.
//! - `--csv`: each record is read as CSV (quoted fields may hold the separator, quotes and
//!   newlines), with `--colsep` as the field separator (default `,`); read with the `csv` crate.
//! - `--header :`: the first line of each input source names its columns (split as the records
//!   are; without `--colsep`, at tabs, and so are the records); `{name}`, `{name.}`, `{name/}`, `{name//}`, `{name/.}` and
//!   `{=name expr =}` in the command become `{N}`… before the command is parsed. The header line is
//!   not run. `--header 0`: the names are those of the `-a`/`::::` files.
//!
//! One source is still streamed: its first line is read for the header, the rest as it comes.
//! Several sources are read whole before the first job (they are combined), as without columns.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use regex::bytes::Regex;

use super::RunError;
use super::args::{Source, SourceSpec};
use super::input::{Args, Inputs};

/// How an argument is split into columns.
#[derive(Debug, Clone)]
pub(crate) enum Split {
    /// `--colsep`.
    Regex(Regex),
    /// `--csv` with this field separator.
    Csv(u8),
}

impl Split {
    /// The columns of one argument.
    pub(crate) fn columns(&self, value: &[u8]) -> Vec<Vec<u8>> {
        match self {
            Split::Regex(re) => re.split(value).map(<[u8]>::to_vec).collect(),
            Split::Csv(sep) => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .delimiter(*sep)
                    .from_reader(value);
                let mut record = csv::ByteRecord::new();
                match reader.read_byte_record(&mut record) {
                    Ok(true) => record.iter().map(<[u8]>::to_vec).collect(),
                    _ => vec![value.to_vec()],
                }
            }
        }
    }
}

/// The column options, checked, and what the engine does with the inputs.
#[derive(Debug, Clone)]
pub(crate) struct Columns {
    pub(crate) split: Option<Split>,
    /// The first record of the (single, file) source is the header, already read: skip it.
    pub(crate) skip_first: bool,
}

/// `--header`: the columns' names, by column number (from 1), for `--results`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ColumnNames {
    pub(crate) names: Vec<(usize, Vec<u8>)>,
    /// The names came from the inputs' first lines (`--header :`), so a `--results` table takes
    /// them for its columns too (GNU parallel does not for `--header 0`).
    pub(crate) from_lines: bool,
}

impl ColumnNames {
    /// The name of column `n` (from 1): its header, else its number.
    pub(crate) fn name(&self, n: usize) -> Vec<u8> {
        self.names
            .iter()
            .find(|(id, _)| *id == n)
            .map_or_else(|| n.to_string().into_bytes(), |(_, name)| name.clone())
    }
}

/// The options as given.
#[derive(Debug)]
pub(crate) struct ColumnOptions<'a> {
    pub(crate) colsep: Option<&'a str>,
    pub(crate) csv: bool,
    pub(crate) header: Option<&'a str>,
}

/// Reads one record of a CSV or line source (for the header).
fn first_record(reader: &mut dyn BufRead, csv: bool, separator: u8) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    if csv {
        // A CSV record ends at a newline outside quotes.
        loop {
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.iter().filter(|&&b| b == b'"').count() % 2 == 0 {
                break;
            }
        }
    } else {
        reader.read_until(separator, &mut line)?;
    }
    while matches!(line.last(), Some(&b) if b == separator || b == b'\n' || b == b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Checks the options, reads the headers and names the columns in `words`. Sources may be read
/// here (for their header, or whole when there are several and a header), and rewritten.
pub(crate) fn prepare(
    o: &ColumnOptions<'_>,
    sources: &mut Vec<Source>,
    words: &mut [Vec<u8>],
    separator: u8,
    piped: bool,
    names: &mut ColumnNames,
) -> Result<Option<Columns>, RunError> {
    let mut split = if o.csv {
        let sep = match o.colsep {
            None => b',',
            Some(s) if s.len() == 1 => s.as_bytes()[0],
            Some("\\t") => b'\t',
            Some(s) => {
                return Err(RunError::Usage(format!(
                    "--csv --colsep '{s}': with --csv the separator is one character, such as , or ;"
                )));
            }
        };
        Some(Split::Csv(sep))
    } else {
        match o.colsep {
            None => None,
            Some(s) => Some(Split::Regex(Regex::new(s).map_err(|e| {
                RunError::Usage(format!(
                    "invalid --colsep '{s}': not a regular expression ({e}); to split at a fixed string, escape it, as in --colsep '\\|'"
                ))
            })?)),
        }
    };
    // With --pipe, --header counts lines put before every block (see `pipe`).
    let header = if piped { None } else { o.header };
    let mut skip_first = false;
    match header {
        None => {}
        Some("0") => {
            // The names are the files' own.
            let mut id = 1;
            let files: Vec<(Vec<u8>, usize)> = sources
                .iter()
                .filter_map(|s| match &s.spec {
                    SourceSpec::File(f) => {
                        let name = f.as_os_str().as_encoded_bytes().to_vec();
                        id += 1;
                        Some((name, id - 1))
                    }
                    SourceSpec::Values(_) => None,
                })
                .collect();
            for (name, id) in files {
                name_column(words, &name, id);
                names.names.push((id, name));
            }
        }
        Some(":") | Some(".*\\n") => {
            let mut headers: Vec<Vec<u8>> = Vec::new();
            let csv = matches!(split, Some(Split::Csv(_)));
            if sources.is_empty() {
                // stdin, streamed: its first line, read through stdin's own buffer, so the rest
                // reaches the input reader.
                let stdin = std::io::stdin();
                let mut lock = stdin.lock();
                headers.push(first_record(&mut lock, csv, separator).map_err(|source| {
                    RunError::Input {
                        path: "-".into(),
                        source,
                    }
                })?);
            } else if let [
                Source {
                    spec: SourceSpec::File(path),
                    ..
                },
            ] = sources.as_slice()
            {
                let path = path.clone();
                let header = if path == Path::new("-") {
                    let stdin = std::io::stdin();
                    let mut lock = stdin.lock();
                    first_record(&mut lock, csv, separator)
                } else {
                    skip_first = true;
                    File::open(&path)
                        .and_then(|f| first_record(&mut BufReader::new(f), csv, separator))
                };
                headers.push(header.map_err(|source| RunError::Input { path, source })?);
            } else {
                for source in sources.iter_mut() {
                    let mut values = match &source.spec {
                        SourceSpec::Values(v) => v.clone(),
                        SourceSpec::File(path) => read_all(path, csv, separator)?,
                    };
                    if values.is_empty() {
                        headers.push(Vec::new());
                    } else {
                        headers.push(values.remove(0));
                    }
                    source.spec = SourceSpec::Values(values);
                }
            }
            // As GNU parallel: with a header and no --colsep, columns are split at tabs.
            let header_split = split
                .get_or_insert_with(|| Split::Regex(Regex::new("\t").expect("a tab is a regex")))
                .clone();
            let mut id = 1;
            for header in headers {
                for name in header_split.columns(&header) {
                    name_column(words, &name, id);
                    names.names.push((id, name));
                    id += 1;
                }
            }
            names.from_lines = true;
        }
        Some(other) => {
            return Err(RunError::Usage(format!(
                "--header '{other}': martelli run takes --header : (the first line of each input source names its columns) or --header 0 (the files' names); a regular expression is not supported"
            )));
        }
    }
    if split.is_none() && !skip_first {
        return Ok(None);
    }
    Ok(Some(Columns { split, skip_first }))
}

/// A whole file's records, for a header over several sources.
fn read_all(path: &Path, csv: bool, separator: u8) -> Result<Vec<Vec<u8>>, RunError> {
    let err = |source| RunError::Input {
        path: path.to_owned(),
        source,
    };
    let file: Box<dyn std::io::Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).map_err(err)?)
    };
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    loop {
        let record = first_record(&mut reader, csv, separator).map_err(err)?;
        if record.is_empty() && reader.fill_buf().map_err(err)?.is_empty() {
            break;
        }
        out.push(record);
    }
    Ok(out)
}

/// `{name}` (and `{name.}`, `{name/}`, `{name//}`, `{name/.}`, `{=name …=}`) → `{id}`….
fn name_column(words: &mut [Vec<u8>], name: &[u8], id: usize) {
    if name.is_empty() {
        return;
    }
    let id = id.to_string();
    for word in words.iter_mut() {
        for suffix in [&b""[..], b".", b"/", b"//", b"/."] {
            let from = [b"{", name, suffix, b"}"].concat();
            let to = [b"{", id.as_bytes(), suffix, b"}"].concat();
            *word = replace_all(word, &from, &to);
        }
        let from = [b"{=", name, b" "].concat();
        let to = [b"{=", id.as_bytes(), b" "].concat();
        *word = replace_all(word, &from, &to);
    }
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Applies the columns to the jobs' inputs: skips the header record and splits each argument.
pub(crate) fn apply(inputs: Inputs, columns: &Columns) -> Inputs {
    let mut iter = inputs.iter;
    let mut total = inputs.total;
    if columns.skip_first {
        iter = Box::new(iter.skip(1));
        total = total.map(|t| t.saturating_sub(1));
    }
    if let Some(split) = columns.split.clone() {
        iter = Box::new(iter.map(move |r| {
            r.map(|args: Args| args.iter().flat_map(|a| split.columns(a)).collect())
        }));
    }
    Inputs { iter, total }
}

/// `--csv` on one source: whole CSV records (a quoted field may hold newlines), re-written as one
/// CSV line each, which [`Split::Csv`] splits again.
pub(crate) fn csv_records(
    reader: Box<dyn std::io::Read + Send>,
    sep: u8,
    path: std::path::PathBuf,
) -> impl Iterator<Item = Result<Vec<u8>, RunError>> + Send {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(sep)
        .from_reader(reader);
    let mut record = csv::ByteRecord::new();
    std::iter::from_fn(move || match reader.read_byte_record(&mut record) {
        Ok(false) => None,
        Ok(true) => {
            let mut writer = csv::WriterBuilder::new()
                .delimiter(sep)
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new());
            let line = writer
                .write_byte_record(&record)
                .map_err(|e| e.to_string())
                .and_then(|()| writer.into_inner().map_err(|e| e.to_string()));
            Some(match line {
                Ok(mut line) => {
                    line.pop();
                    Ok(line)
                }
                Err(e) => Err(RunError::Input {
                    path: path.clone(),
                    source: std::io::Error::other(e),
                }),
            })
        }
        Err(e) => Some(Err(RunError::Input {
            path: path.clone(),
            source: std::io::Error::other(format!("not valid CSV: {e}")),
        })),
    })
}

/// The jobs' inputs with columns applied (the plain inputs without `--colsep`/`--csv`/`--header`).
pub(crate) fn inputs(
    config: &super::config::Config,
    reading: &super::input::Reading,
) -> Result<Inputs, RunError> {
    let Some(columns) = &config.columns else {
        return super::input::inputs(&config.sources, config.link, reading);
    };
    // --csv on one streamed source: whole CSV records, newlines in quotes and all.
    let single = match config.sources.as_slice() {
        [] => Some(std::path::PathBuf::from("-")),
        [
            Source {
                spec: SourceSpec::File(path),
                ..
            },
        ] => Some(path.clone()),
        _ => None,
    };
    let inputs = match (&columns.split, single) {
        (Some(Split::Csv(sep)), Some(path)) => {
            let reader: Box<dyn std::io::Read + Send> = if path == Path::new("-") {
                Box::new(std::io::stdin())
            } else {
                Box::new(File::open(&path).map_err(|source| RunError::Input {
                    path: path.clone(),
                    source,
                })?)
            };
            Inputs {
                iter: Box::new(csv_records(reader, *sep, path).map(|r| r.map(|a| vec![a]))),
                total: None,
            }
        }
        _ => super::input::inputs(&config.sources, config.link, reading)?,
    };
    Ok(apply(inputs, columns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_keep_empty_fields_and_csv_quotes() {
        let re = Split::Regex(Regex::new(",").unwrap());
        assert_eq!(re.columns(b"a,b,,"), [&b"a"[..], b"b", b"", b""]);
        let csv = Split::Csv(b',');
        assert_eq!(csv.columns(b"x,\"y,z\""), [&b"x"[..], b"y,z"]);
        assert_eq!(csv.columns(b"\"p\nq\",r"), [&b"p\nq"[..], b"r"]);
    }

    #[test]
    fn names_become_positions() {
        let mut words = vec![b"{n2}-{n1.}/{=n1 s/a/b/ =}{n3}".to_vec()];
        name_column(&mut words, b"n1", 1);
        name_column(&mut words, b"n2", 2);
        assert_eq!(words[0], b"{2}-{1.}/{=1 s/a/b/ =}{n3}");
    }
}
