//! Input sources into the argument lists of jobs.
//!
//! One source (or stdin) is streamed, so `find | martelli run …` starts at once and holds no more
//! than the running jobs. Several sources are read whole and combined: every argument of one with
//! every argument of the others (the first source varies slowest), or element by element with
//! `--link` (shorter sources wrap around) and `:::+`/`::::+` (the shortest decides).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::RunError;
use super::args::{Source, SourceSpec};
use super::config::Trim;

/// How each input source's arguments are read: where one ends, and GNU parallel's per-source
/// filters (`--trim`, `-E`, `-r`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Reading {
    pub(crate) separator: u8,
    /// `--trim`: blanks removed from the ends of each argument.
    pub(crate) trim: Trim,
    /// `-E`: the source ends at this argument.
    pub(crate) eof: Option<Vec<u8>>,
    /// `-r`: arguments that are empty or only blanks are dropped.
    pub(crate) skip_empty: bool,
    /// `--skip-first-line`: the first source's first line (or value) is left out, before the
    /// other filters.
    pub(crate) skip_first_line: bool,
}

impl Reading {
    /// Applies the filters to one source's arguments.
    fn filter<'a, I>(
        &self,
        args: I,
    ) -> Box<dyn Iterator<Item = Result<Vec<u8>, RunError>> + Send + 'a>
    where
        I: Iterator<Item = Result<Vec<u8>, RunError>> + Send + 'a,
    {
        if !self.trim.any() && self.eof.is_none() && !self.skip_empty {
            return Box::new(args);
        }
        let (trim, eof, skip_empty) = (self.trim, self.eof.clone(), self.skip_empty);
        Box::new(
            args.map(move |r| {
                r.map(|a| {
                    if trim.any() {
                        trim.apply(&a).to_vec()
                    } else {
                        a
                    }
                })
            })
            .take_while(move |r| !matches!((r, &eof), (Ok(a), Some(e)) if a == e))
            .filter(move |r| {
                !(skip_empty
                    && matches!(r, Ok(a) if a.iter().all(|b| b" \t\n\r\x0c\x0b".contains(b))))
            }),
        )
    }
}

/// The arguments of one job, one per input source.
pub(crate) type Args = Vec<Vec<u8>>;

/// An iterator of jobs' arguments, and their number when known in advance.
pub(crate) struct Inputs {
    pub(crate) iter: Box<dyn Iterator<Item = Result<Args, RunError>> + Send>,
    pub(crate) total: Option<u64>,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, RunError> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    let file = File::open(path).map_err(|source| RunError::Input {
        path: path.to_owned(),
        source,
    })?;
    Ok(Box::new(BufReader::new(file)))
}

/// Splits a reader into arguments at `separator`, without the separator.
fn lines(
    reader: Box<dyn BufRead + Send>,
    separator: u8,
    path: PathBuf,
) -> impl Iterator<Item = Result<Vec<u8>, RunError>> + Send {
    reader.split(separator).map(move |r| {
        r.map_err(|source| RunError::Input {
            path: path.clone(),
            source,
        })
    })
}

/// The arguments of a `:::` source: each value split at the separator, as GNU parallel, which
/// passes them through a file of records, gives them (`::: "$(ls)"` is one argument a line;
/// `"a\n"` is `a` and an empty argument). With `-0` no value holds the separator.
fn split_values(values: &[Vec<u8>], separator: u8) -> Vec<Vec<u8>> {
    values
        .iter()
        .flat_map(|v| v.split(move |&b| b == separator).map(<[u8]>::to_vec))
        .collect()
}

/// Builds the job arguments from the sources (stdin when there are none).
pub(crate) fn inputs(
    sources: &[Source],
    link: bool,
    reading: &Reading,
) -> Result<Inputs, RunError> {
    let separator = reading.separator;
    let filtered = !(reading.eof.is_none() && !reading.skip_empty && !reading.trim.any());
    // How many records to leave out of source `i`.
    let skip = |i: usize| usize::from(reading.skip_first_line && i == 0);
    match sources {
        [] => {
            let iter = reading
                .filter(
                    lines(Box::new(BufReader::new(io::stdin())), separator, "-".into())
                        .skip(skip(0)),
                )
                .map(|r| r.map(|a| vec![a]));
            Ok(Inputs {
                iter: Box::new(iter),
                total: None,
            })
        }
        [
            Source {
                spec: SourceSpec::Values(values),
                ..
            },
        ] if !filtered => {
            let values: Vec<Vec<u8>> = split_values(values, separator)
                .into_iter()
                .skip(skip(0))
                .collect();
            let total = values.len() as u64;
            let iter = values.into_iter().map(|a| Ok(vec![a]));
            Ok(Inputs {
                iter: Box::new(iter),
                total: Some(total),
            })
        }
        [
            Source {
                spec: SourceSpec::File(path),
                ..
            },
        ] => {
            let iter = reading
                .filter(lines(open(path)?, separator, path.clone()).skip(skip(0)))
                .map(|r| r.map(|a| vec![a]));
            Ok(Inputs {
                iter: Box::new(iter),
                total: None,
            })
        }
        _ => {
            let mut columns = Vec::with_capacity(sources.len());
            for (i, source) in sources.iter().enumerate() {
                let values = match &source.spec {
                    SourceSpec::Values(values) => reading
                        .filter(
                            split_values(values, separator)
                                .into_iter()
                                .skip(skip(i))
                                .map(Ok),
                        )
                        .collect::<Result<_, _>>()?,
                    SourceSpec::File(path) => reading
                        .filter(lines(open(path)?, separator, path.clone()).skip(skip(i)))
                        .collect::<Result<_, _>>()?,
                };
                columns.push(values);
            }
            Ok(combine(sources, columns, link))
        }
    }
}

/// Combines whole sources: groups of linked sources, then the product of the groups.
fn combine(sources: &[Source], columns: Vec<Vec<Vec<u8>>>, link: bool) -> Inputs {
    // Each group is a list of rows; a row holds one argument per source of the group.
    let mut groups: Vec<Vec<Args>> = Vec::new();
    if link {
        let longest = columns.iter().map(Vec::len).max().unwrap_or(0);
        let rows = (0..longest)
            .map(|i| {
                columns
                    .iter()
                    .map(|c| {
                        if c.is_empty() {
                            Vec::new()
                        } else {
                            c[i % c.len()].clone()
                        }
                    })
                    .collect()
            })
            .collect();
        groups.push(rows);
    } else {
        let mut current: Vec<Vec<Vec<u8>>> = Vec::new();
        for (source, column) in sources.iter().zip(columns) {
            if !source.linked && !current.is_empty() {
                groups.push(rows_of(std::mem::take(&mut current)));
            }
            current.push(column);
        }
        if !current.is_empty() {
            groups.push(rows_of(current));
        }
    }
    let total = groups
        .iter()
        .try_fold(1u64, |acc, g| acc.checked_mul(g.len() as u64));
    Inputs {
        iter: Box::new(Product::new(groups)),
        total,
    }
}

/// Rows of linked columns: the shortest column decides.
fn rows_of(columns: Vec<Vec<Vec<u8>>>) -> Vec<Args> {
    let shortest = columns.iter().map(Vec::len).min().unwrap_or(0);
    (0..shortest)
        .map(|i| columns.iter().map(|c| c[i].clone()).collect())
        .collect()
}

/// The cartesian product of groups of rows, the first group varying slowest.
struct Product {
    groups: Vec<Vec<Args>>,
    index: Vec<usize>,
    done: bool,
}

impl Product {
    fn new(groups: Vec<Vec<Args>>) -> Self {
        let done = groups.is_empty() || groups.iter().any(Vec::is_empty);
        let index = vec![0; groups.len()];
        Product {
            groups,
            index,
            done,
        }
    }
}

impl Iterator for Product {
    type Item = Result<Args, RunError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let row: Args = self
            .groups
            .iter()
            .zip(&self.index)
            .flat_map(|(g, &i)| g[i].iter().cloned())
            .collect();
        // Advance the odometer from the last group.
        let mut k = self.groups.len();
        loop {
            if k == 0 {
                self.done = true;
                break;
            }
            k -= 1;
            self.index[k] += 1;
            if self.index[k] < self.groups[k].len() {
                break;
            }
            self.index[k] = 0;
        }
        Some(Ok(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(v: &[&str], linked: bool) -> Source {
        Source {
            spec: SourceSpec::Values(v.iter().map(|s| s.as_bytes().to_vec()).collect()),
            linked,
        }
    }

    fn nl() -> Reading {
        Reading {
            separator: b'\n',
            ..Reading::default()
        }
    }

    #[test]
    fn eof_trim_and_empty_filter_each_source() {
        let s = [
            values(&["a", " ", "b", "stop", "c"], false),
            values(&["1", "", "stop"], false),
        ];
        let r = Reading {
            separator: b'\n',
            trim: Trim {
                left: true,
                right: true,
            },
            eof: Some(b"stop".to_vec()),
            skip_empty: true,
            skip_first_line: false,
        };
        assert_eq!(collect(inputs(&s, false, &r).unwrap()), ["a 1", "b 1"]);
        let s = [values(&[" a ", "stop", "b"], false)];
        assert_eq!(collect(inputs(&s, false, &r).unwrap()), ["a"]);
    }

    fn collect(inputs: Inputs) -> Vec<String> {
        inputs
            .iter
            .map(|r| {
                r.unwrap()
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn product_first_source_slowest() {
        let s = [values(&["a", "b"], false), values(&["1", "2"], false)];
        let i = inputs(&s, false, &nl()).unwrap();
        assert_eq!(i.total, Some(4));
        assert_eq!(collect(i), ["a 1", "a 2", "b 1", "b 2"]);
    }

    #[test]
    fn link_wraps_and_plus_truncates() {
        let s = [values(&["a", "b", "c"], false), values(&["1", "2"], false)];
        assert_eq!(
            collect(inputs(&s, true, &nl()).unwrap()),
            ["a 1", "b 2", "c 1"]
        );
        let s = [
            values(&["a", "b", "c"], false),
            values(&["1", "2"], true),
            values(&["x", "y"], false),
        ];
        assert_eq!(
            collect(inputs(&s, false, &nl()).unwrap()),
            ["a 1 x", "a 1 y", "b 2 x", "b 2 y"]
        );
    }
}
