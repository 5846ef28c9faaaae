//! Connections to the broker: connecting with clear errors, reconnecting with backoff, and reading the
//! few reply shapes the protocol uses out of [`redis::Value`].

use super::TLS_CA_ENV;
use super::error::ClusterError;
use redis::{Connection, ErrorKind, RedisError, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a connection attempt may take before the broker counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The first pause before reconnecting, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A broker address that can open connections.
#[derive(Debug, Clone)]
pub(crate) struct Broker {
    client: redis::Client,
    /// The URL with its password hidden, for messages.
    shown: String,
}

impl Broker {
    /// A broker at `url`. A `rediss://` URL connects with TLS, trusting the CA certificates in the PEM
    /// file `tls_ca` (or in the file named by `MARTELLI_TLS_CA`), or else the system's roots.
    pub(crate) fn new(url: &str, tls_ca: Option<&Path>) -> Result<Broker, ClusterError> {
        let shown = redact(url);
        let tls = url
            .get(..9)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"));
        let client = if tls {
            let ca = tls_ca
                .map(Path::to_path_buf)
                .or_else(|| std::env::var_os(TLS_CA_ENV).map(PathBuf::from));
            tls::client(url, &shown, ca.as_deref())?
        } else {
            redis::Client::open(url).map_err(|source| ClusterError::InvalidUrl {
                url: shown.clone(),
                source,
            })?
        };
        Ok(Broker { client, shown })
    }

    /// The URL with its password hidden.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// Opens a connection and checks it (PING), mapping failures to errors a person can act on.
    pub(crate) fn connect(&self) -> Result<Connection, ClusterError> {
        let mut conn = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|e| self.classify(e))?;
        redis::cmd("PING")
            .query::<()>(&mut conn)
            .map_err(|e| self.classify(e))?;
        Ok(conn)
    }

    /// Connects and checks that the server is new enough for the protocol.
    pub(crate) fn connect_checked(&self) -> Result<Connection, ClusterError> {
        let mut conn = self.connect()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut conn)
            .map_err(|source| ClusterError::Broker {
                action: "report its version (INFO server)",
                source,
            })?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            return Err(ClusterError::BrokerTooOld {
                url: self.shown.clone(),
                version,
            });
        }
        Ok(conn)
    }

    /// Runs `setup` (connecting and preparing a client's or a worker's connections) at start. A
    /// broker that cannot be reached, refuses the credentials or is too old is an error at once;
    /// one that accepts the connection and then drops it (it is shutting down or restarting, or a
    /// proxy cut the connection) is waited for with backoff, as a running client or worker waits for
    /// a lost broker: from then on every connection error is retried.
    pub(crate) fn setup<T>(
        &self,
        who: &str,
        mut setup: impl FnMut() -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        let mut backoff = FIRST_BACKOFF;
        let mut waiting = false;
        loop {
            match setup() {
                Ok(done) => {
                    if waiting {
                        eprintln!("martelli cluster {who}: reconnected to {}", self.shown);
                    }
                    return Ok(done);
                }
                Err(error) => {
                    let lost = error.connection_error();
                    let retry = match lost {
                        Some(e) if waiting => is_connection_error(e),
                        Some(e) => is_dropped(e),
                        None => false,
                    };
                    if !retry {
                        return Err(error);
                    }
                    if !waiting {
                        eprintln!(
                            "martelli cluster {who}: the broker dropped the connection while \
                             starting ({error}); reconnecting"
                        );
                        waiting = true;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Reconnects after a lost connection: retries with exponential backoff until it succeeds or `stop`
    /// is set (then `None`). Errors other than unreachability (a changed password) are reported once
    /// on stderr and retried too, since a worker should outlive a broker's maintenance.
    pub(crate) fn reconnect(&self, stop: &AtomicBool, who: &str) -> Option<Connection> {
        let mut backoff = FIRST_BACKOFF;
        let mut reported = false;
        loop {
            if stop.load(Ordering::Acquire) {
                return None;
            }
            match self.connect() {
                Ok(conn) => {
                    if reported {
                        eprintln!("martelli cluster {who}: reconnected to {}", self.shown);
                    }
                    return Some(conn);
                }
                Err(error) => {
                    if !reported {
                        eprintln!(
                            "martelli cluster {who}: lost the broker ({error}); reconnecting"
                        );
                        reported = true;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn classify(&self, error: RedisError) -> ClusterError {
        if let Some(detail) = tls::certificate_problem(&error) {
            ClusterError::Tls {
                url: self.shown.clone(),
                detail,
            }
        } else if is_auth_error(&error) {
            ClusterError::Auth {
                url: self.shown.clone(),
                detail: error.to_string(),
            }
        } else if error.is_io_error() || error.is_connection_refusal() || error.is_timeout() {
            ClusterError::Unreachable {
                url: self.shown.clone(),
                source: error,
            }
        } else {
            ClusterError::Broker {
                action: "accept a connection",
                source: error,
            }
        }
    }
}

/// Building TLS clients, with or without the `tls` feature.
mod tls {
    use super::ClusterError;
    use redis::RedisError;
    use std::path::Path;

    /// A client for a `rediss://` URL that trusts the CA certificates in `ca`, or the system's roots.
    #[cfg(feature = "tls")]
    pub(super) fn client(
        url: &str,
        shown: &str,
        ca: Option<&Path>,
    ) -> Result<redis::Client, ClusterError> {
        // One provider for the process; an error means one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root_cert = match ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| ClusterError::Tls {
                    url: shown.to_owned(),
                    detail: format!(
                        "cannot read the CA certificate file {}: {e}",
                        path.display()
                    ),
                })?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(ClusterError::Tls {
                        url: shown.to_owned(),
                        detail: format!(
                            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA's \
                             certificate in PEM format",
                            path.display()
                        ),
                    });
                }
                Some(pem)
            }
            None => None,
        };
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert,
        };
        redis::Client::build_with_tls(url, certificates).map_err(|source| {
            if source.kind() == redis::ErrorKind::InvalidClientConfig || source.is_io_error() {
                ClusterError::Tls {
                    url: shown.to_owned(),
                    detail: source.to_string(),
                }
            } else {
                ClusterError::InvalidUrl {
                    url: shown.to_owned(),
                    source,
                }
            }
        })
    }

    /// Without the `tls` feature a `rediss://` URL is refused with what to do about it.
    #[cfg(not(feature = "tls"))]
    pub(super) fn client(
        _url: &str,
        shown: &str,
        _ca: Option<&Path>,
    ) -> Result<redis::Client, ClusterError> {
        Err(ClusterError::Tls {
            url: shown.to_owned(),
            detail: "this build of martelli has no TLS support (build it with the `tls` feature, \
                     or use a redis:// URL)"
                .to_owned(),
        })
    }

    /// What is wrong with the broker's certificate, when that is why a connection failed.
    pub(super) fn certificate_problem(error: &RedisError) -> Option<String> {
        let text = error.to_string();
        let lower = text.to_ascii_lowercase();
        let about_certificate = lower.contains("certificate")
            || lower.contains("unknownissuer")
            || lower.contains("notvalidforname")
            || lower.contains("handshake");
        about_certificate.then(|| {
            format!(
                "{text} (the broker's certificate is not trusted: give the CA that signed it with \
                 --tls-ca FILE, tls_ca(FILE) or MARTELLI_TLS_CA=FILE, and connect with the host name \
                 the certificate names)"
            )
        })
    }
}

fn is_auth_error(error: &RedisError) -> bool {
    error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

/// True when the connection is gone and a new one should be opened.
pub(crate) fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || matches!(error.code(), Some("LOADING" | "NOAUTH"))
}

/// True when the broker accepted a connection and then dropped it (or is loading its data after a
/// restart), as opposed to nothing answering at its address.
pub(crate) fn is_dropped(error: &RedisError) -> bool {
    (error.is_connection_dropped() && !error.is_connection_refusal())
        || error.code() == Some("LOADING")
}

/// True when the consumer group (or its stream) does not exist: after a Redis restart without
/// persistence, or before the first worker created it.
pub(crate) fn is_nogroup(error: &RedisError) -> bool {
    error.code() == Some("NOGROUP") || error.to_string().contains("NOGROUP")
}

/// Every key that matches the glob `pattern` (`SCAN … MATCH`), once each.
pub(crate) fn scan(conn: &mut Connection, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut names = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        names.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Escapes the glob characters of a key prefix for `SCAN MATCH`.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The URL with the password (if any) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Bytes out of a reply value.
pub(crate) fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A string out of a reply value.
pub(crate) fn string(value: &Value) -> Option<String> {
    bytes(value).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// An integer out of a reply value.
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        other => string(other)?.parse().ok(),
    }
}

/// The elements of an array reply; nil is empty.
pub(crate) fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// One stream entry as read: its id and its field/value pairs.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// Parses `[id, [field, value, …]]`; `None` for a deleted entry (`[id, nil]`).
    pub(crate) fn parse(value: &Value) -> Option<Entry> {
        let parts = array(value);
        let id = string(parts.first()?)?;
        let raw = array(parts.get(1)?);
        let fields = raw
            .chunks(2)
            .filter_map(|pair| {
                Some((
                    bytes(pair.first()?)?.to_vec(),
                    bytes(pair.get(1)?)?.to_vec(),
                ))
            })
            .collect();
        Some(Entry { id, fields })
    }

    /// Parses an entry a script returns with its stream: `[stream index, id, [field, value, …],
    /// …]`; the index (0 to 2, the normal stream when unreadable), the entry, and the items after
    /// the fields.
    pub(crate) fn parse_indexed(value: &Value) -> Option<(usize, Entry, &[Value])> {
        let parts = array(value);
        let (index, id, fields) = (parts.first()?, parts.get(1)?, parts.get(2)?);
        let index = int(index)
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or(1)
            .min(2);
        let entry = Entry::parse(&Value::Array(vec![id.clone(), fields.clone()]))?;
        Some((index, entry, parts.get(3..).unwrap_or(&[])))
    }

    /// The value of `field`.
    pub(crate) fn field(&self, field: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == field.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The total size of the entry's values (for an entry written by a client, the envelope's size,
    /// the figure the client's own limit applies to).
    pub(crate) fn size(&self) -> usize {
        self.fields.iter().map(|(_, v)| v.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://:hunter2@host:6379/1"),
            "redis://:***@host:6379/1"
        );
        assert_eq!(redact("redis://bob:pw@host"), "redis://bob:***@host");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn glob_characters_in_a_prefix_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]:worker:"), "a\\*b\\?\\[c\\]:worker:");
    }

    #[test]
    fn entry_parse_reads_fields_and_skips_deleted() {
        let v = Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"e".to_vec()),
                Value::BulkString(vec![1, 2]),
            ]),
        ]);
        let e = Entry::parse(&v).unwrap();
        assert_eq!(e.id, "1-0");
        assert_eq!(e.field("e"), Some(&[1u8, 2][..]));
        assert_eq!(e.size(), 2);
        let deleted = Value::Array(vec![Value::BulkString(b"2-0".to_vec()), Value::Nil]);
        let e = Entry::parse(&deleted).unwrap();
        assert!(e.fields.is_empty());
    }
}
