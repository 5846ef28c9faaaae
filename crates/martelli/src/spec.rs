//! Pool specs: the strings `Pool::from_spec` and `MARTELLI_POOL` take: `inline`, `threads[:N]`,
//! `processes[:N]`, `async[:N]`, and a broker URL (`redis://…`, `rediss://…`) for a cluster pool.

use crate::error::Error;
use crate::pool::PoolBuilder;

/// A parsed pool spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Spec {
    Inline,
    Threads(usize),
    #[cfg(feature = "async")]
    EventLoop(Option<usize>),
    Processes(usize),
    /// A cluster pool on the broker at this URL.
    #[cfg(feature = "cluster")]
    Cluster(String),
}

impl Spec {
    pub(crate) fn parse(spec: &str) -> Result<Spec, Error> {
        let unknown = |reason: &str| Error::UnknownSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let s = spec.trim();
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("redis://") || lower.starts_with("rediss://") {
            #[cfg(feature = "cluster")]
            return Ok(Spec::Cluster(s.to_owned()));
            #[cfg(not(feature = "cluster"))]
            return Err(unknown(
                "a broker URL needs the cluster backend, and martelli was built without its \
                 \"cluster\" feature (enable it: martelli = { features = [\"cluster\"] })",
            ));
        }
        let (name, arg) = match s.split_once(':') {
            Some((name, arg)) => (name, Some(arg)),
            None => (s, None),
        };
        match (name.to_ascii_lowercase().as_str(), arg) {
            ("inline", None) => Ok(Spec::Inline),
            ("inline", Some(_)) => Err(unknown("\"inline\" takes no worker count")),
            ("threads", None) => Ok(Spec::Threads(0)),
            ("threads", Some(n)) => match n.trim().parse::<usize>() {
                Ok(n) => Ok(Spec::Threads(n)),
                Err(_) => Err(unknown(
                    "the worker count after \"threads:\" must be a whole number",
                )),
            },
            ("processes", None) => Ok(Spec::Processes(0)),
            ("processes", Some(n)) => match n.trim().parse::<usize>() {
                Ok(n) => Ok(Spec::Processes(n)),
                Err(_) => Err(unknown(
                    "the worker count after \"processes:\" must be a whole number",
                )),
            },
            ("redis" | "rediss", _) => Err(unknown(
                "a broker URL is written redis://host[:port][/db] (or rediss:// for TLS)",
            )),
            #[cfg(feature = "async")]
            ("async", None) => Ok(Spec::EventLoop(None)),
            #[cfg(feature = "async")]
            ("async", Some(n)) => match n.trim().parse::<usize>() {
                Ok(n) => Ok(Spec::EventLoop(Some(n))),
                Err(_) => Err(unknown(
                    "the thread count after \"async:\" must be a whole number",
                )),
            },
            #[cfg(not(feature = "async"))]
            ("async", _) => Err(unknown("martelli was built without its \"async\" feature")),
            ("", _) => Err(unknown("the spec is empty")),
            _ => Err(unknown("no backend has that name")),
        }
    }

    pub(crate) fn builder(self) -> PoolBuilder {
        match self {
            Spec::Inline => PoolBuilder::new().inline(),
            Spec::Threads(n) => PoolBuilder::new().threads(n),
            Spec::Processes(n) => PoolBuilder::new().processes(n),
            #[cfg(feature = "cluster")]
            Spec::Cluster(url) => PoolBuilder::new().cluster(url),
            #[cfg(feature = "async")]
            Spec::EventLoop(None) => PoolBuilder::new().event_loop(),
            #[cfg(feature = "async")]
            Spec::EventLoop(Some(n)) => PoolBuilder::new().event_loop_threads(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Spec;

    #[test]
    fn parses_valid_forms() {
        assert_eq!(Spec::parse("inline").ok(), Some(Spec::Inline));
        assert_eq!(Spec::parse(" threads ").ok(), Some(Spec::Threads(0)));
        assert_eq!(Spec::parse("threads:8").ok(), Some(Spec::Threads(8)));
        assert_eq!(Spec::parse("THREADS:2").ok(), Some(Spec::Threads(2)));
        assert_eq!(Spec::parse("processes").ok(), Some(Spec::Processes(0)));
        assert_eq!(Spec::parse("processes:4").ok(), Some(Spec::Processes(4)));
        #[cfg(feature = "async")]
        {
            assert_eq!(Spec::parse("async").ok(), Some(Spec::EventLoop(None)));
            assert_eq!(Spec::parse("async:4").ok(), Some(Spec::EventLoop(Some(4))));
        }
    }

    #[test]
    fn broker_urls_are_cluster_pools_or_ask_for_the_feature() {
        for url in [
            "redis://127.0.0.1:6379",
            " REDIS://h/2 ",
            "rediss://:pw@h:6380",
        ] {
            #[cfg(feature = "cluster")]
            assert_eq!(
                Spec::parse(url).ok(),
                Some(Spec::Cluster(url.trim().to_owned()))
            );
            #[cfg(not(feature = "cluster"))]
            {
                let err = Spec::parse(url).expect_err(url).to_string();
                assert!(err.contains("\"cluster\" feature"), "{err}");
            }
        }
        let err = Spec::parse("redis:localhost")
            .expect_err("no //")
            .to_string();
        assert!(err.contains("redis://host"), "{err}");
    }

    #[test]
    fn rejects_invalid_forms_with_the_valid_ones_listed() {
        for bad in [
            "",
            "thread",
            "threads:x",
            "threads:-1",
            "inline:2",
            "processes:four",
            "gpu",
        ] {
            let err = Spec::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("\"threads:N\""), "{bad}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
