//! A CA and a server certificate made at test time with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A CA (`ca.crt`), a server certificate and key for 127.0.0.1 and localhost signed by it, and a
/// second, unrelated CA (`other-ca.crt`), in a temporary directory removed when dropped.
#[derive(Debug)]
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// Makes the certificates, or says why it could not (no `openssl` command, most often).
    pub fn make() -> Result<Certs, String> {
        let dir = std::env::temp_dir().join(format!(
            "martelli-tls-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let certs = Certs { dir };
        std::fs::write(
            certs.dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| format!("cannot write the extensions file: {e}"))?;
        let made = certs.make_ca("ca", "martelli test CA")
            && certs.make_ca("other-ca", "some other CA")
            && certs.openssl(&[&["req"], EC_KEY, &CSR].concat())
            && certs.openssl(&SIGN);
        if made {
            Ok(certs)
        } else {
            Err("the `openssl` command is missing or could not make the test certificates".into())
        }
    }

    /// The CA that signed the server certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A CA that signed nothing here.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }

    /// The server certificate.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The server certificate's private key.
    pub fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The directory that holds them.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes a self-signed CA `name.crt` (key `name.key`) with common name `cn`.
    fn make_ca(&self, name: &str, cn: &str) -> bool {
        let key = format!("{name}.key");
        let crt = format!("{name}.crt");
        let subject = format!("/CN={cn}");
        let rest = [
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        self.openssl(&[&["req", "-x509"], EC_KEY, &rest].concat())
    }

    /// Runs `openssl ARGS…` in the directory; true if it succeeded.
    fn openssl(&self, args: &[&str]) -> bool {
        Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `openssl req` arguments for a new P-256 key, unencrypted.
const EC_KEY: &[&str] = &[
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// The server's key and certificate request (after `req` and [`EC_KEY`]).
const CSR: [&str; 6] = [
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
    "-subj",
    "/CN=localhost",
];

/// Signs the server's request with the CA.
const SIGN: [&str; 15] = [
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.crt",
    "-days",
    "2",
    "-extfile",
    "server.ext",
];
