//! `--auth`: the credentials the dashboard asks for, read from an environment variable (never from
//! the command line, which other users of the machine can read), and how a request's credentials
//! are checked (in constant time).

use base64::Engine as _;
use subtle::ConstantTimeEq;

/// The shortest secret accepted.
const MIN_SECRET: usize = 8;

/// What the dashboard asks of a request.
pub(crate) enum Auth {
    /// Nothing: for a loopback address only.
    None,
    /// An access token: `Authorization: Bearer TOKEN`, or `?token=TOKEN` once, which sets a cookie.
    Token(String),
    /// HTTP basic auth with this `user:password`.
    Basic(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.write_str(match self {
            Auth::None => "Auth::None",
            Auth::Token(_) => "Auth::Token(***)",
            Auth::Basic(_) => "Auth::Basic(***)",
        })
    }
}

/// Why `--auth` cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// Not `token:VAR` or `basic:VAR`.
    #[error(
        "invalid --auth {0:?}: expected token:VAR or basic:VAR, where the environment variable VAR holds \
         the token, or user:password"
    )]
    Spec(String),
    /// The variable is not set.
    #[error(
        "--auth {scheme}:{var}: the environment variable {var} is not set (export {var}=… with the \
         secret before starting the dashboard)"
    )]
    Unset {
        /// `token` or `basic`.
        scheme: &'static str,
        /// The variable.
        var: String,
    },
    /// The secret is too short to be one.
    #[error("--auth {scheme}:{var}: the secret in {var} is shorter than {MIN_SECRET} characters")]
    Short {
        /// `token` or `basic`.
        scheme: &'static str,
        /// The variable.
        var: String,
    },
    /// Basic auth needs a user and a password.
    #[error(
        "--auth basic:{var}: {var} must hold user:password (a user name, a colon, then the password)"
    )]
    NoUser {
        /// The variable.
        var: String,
    },
}

impl Auth {
    /// Reads `--auth SCHEME:VAR` (none: [`Auth::None`]); `env` reads the variable.
    pub(crate) fn from_arg(
        arg: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Auth, AuthError> {
        let Some(arg) = arg else {
            return Ok(Auth::None);
        };
        let (scheme, var) = match arg.split_once(':') {
            Some(("token", var)) if !var.is_empty() => ("token", var),
            Some(("basic", var)) if !var.is_empty() => ("basic", var),
            _ => return Err(AuthError::Spec(arg.to_owned())),
        };
        let secret = env(var).ok_or_else(|| AuthError::Unset {
            scheme,
            var: var.to_owned(),
        })?;
        if secret.chars().count() < MIN_SECRET {
            return Err(AuthError::Short {
                scheme,
                var: var.to_owned(),
            });
        }
        if scheme == "token" {
            return Ok(Auth::Token(secret));
        }
        match secret.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Ok(Auth::Basic(secret))
            }
            _ => Err(AuthError::NoUser {
                var: var.to_owned(),
            }),
        }
    }

    /// True when no credentials are asked for.
    pub(crate) fn is_none(&self) -> bool {
        matches!(self, Auth::None)
    }

    /// Whether a request with this `Authorization` header, token cookie and `?token=` value is let
    /// in.
    pub(crate) fn admits(
        &self,
        authorization: Option<&str>,
        cookie_token: Option<&str>,
        query_token: Option<&str>,
    ) -> bool {
        match self {
            Auth::None => true,
            Auth::Token(token) => {
                let bearer = authorization.and_then(|h| h.strip_prefix("Bearer "));
                [bearer, cookie_token, query_token]
                    .into_iter()
                    .flatten()
                    .any(|given| same(given.as_bytes(), token.as_bytes()))
            }
            Auth::Basic(pair) => authorization
                .and_then(|h| h.strip_prefix("Basic "))
                .and_then(|b64| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .ok()
                })
                .is_some_and(|given| same(&given, pair.as_bytes())),
        }
    }
}

/// Compares two secrets in time that depends on their lengths only.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        match var {
            "TOKEN" => Some("a-long-token".into()),
            "PAIR" => Some("admin:correct horse".into()),
            "SHORT" => Some("abc".into()),
            "NOCOLON" => Some("justapassword".into()),
            _ => None,
        }
    }

    #[test]
    fn specs_read_their_secret_from_the_environment() {
        assert!(Auth::from_arg(None, env).unwrap().is_none());
        assert!(
            matches!(Auth::from_arg(Some("token:TOKEN"), env), Ok(Auth::Token(t)) if t == "a-long-token")
        );
        assert!(matches!(
            Auth::from_arg(Some("basic:PAIR"), env),
            Ok(Auth::Basic(_))
        ));
        for (spec, want) in [
            ("bearer:TOKEN", "expected token:VAR or basic:VAR"),
            ("token:", "expected token:VAR"),
            ("token:MISSING", "MISSING is not set"),
            ("token:SHORT", "shorter than 8"),
            ("basic:NOCOLON", "must hold user:password"),
        ] {
            let e = Auth::from_arg(Some(spec), env).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn secrets_are_never_printed() {
        let auth = Auth::from_arg(Some("token:TOKEN"), env).unwrap();
        assert!(!format!("{auth:?}").contains("a-long-token"));
    }

    #[test]
    fn requests_are_admitted_by_their_credentials_only() {
        let token = Auth::Token("a-long-token".into());
        assert!(token.admits(Some("Bearer a-long-token"), None, None));
        assert!(token.admits(None, Some("a-long-token"), None));
        assert!(token.admits(None, None, Some("a-long-token")));
        assert!(!token.admits(Some("Bearer a-long-toke"), Some("wrong"), None));
        assert!(!token.admits(None, None, None));
        let basic = Auth::Basic("admin:correct horse".into());
        let good = base64::engine::general_purpose::STANDARD.encode("admin:correct horse");
        assert!(basic.admits(Some(&format!("Basic {good}")), None, None));
        let bad = base64::engine::general_purpose::STANDARD.encode("admin:wrong");
        assert!(!basic.admits(Some(&format!("Basic {bad}")), None, None));
        assert!(!basic.admits(Some("Basic !!!"), None, None));
        assert!(Auth::None.admits(None, None, None));
    }
}
