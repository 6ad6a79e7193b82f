//! How a connection reaches PostgreSQL: plain, or TLS with rustls.
//!
//! The URL speaks libpq's language, so that the URL a hosted database (Supabase, Neon, RDS,
//! Azure) hands out works as pasted:
//!
//! * `sslmode=require`, `verify-ca` or `verify-full`: TLS or no connection. The server's
//!   certificate is always verified — its chain against the CA file, or the system's roots
//!   when there is none, and its name against the host connected to. (libpq's `require`
//!   alone would not verify anything; a catalog we vouch for should not trust a stranger.)
//! * `sslrootcert=FILE` in the URL, or `database.ca_file` in the configuration: the PEM
//!   file of the CA(s) that sign the server's certificate; `sslrootcert=system` says the
//!   system's roots. A CA file makes TLS required (with `sslmode=disable` it is refused).
//! * `sslmode=disable`, `prefer`, `allow` or no `sslmode`: plain TCP, as with a PostgreSQL on
//!   the same machine or the same Docker network.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and no `sslrootcert`: those
//! parts are taken out of the URL here before it is parsed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres::config::SslMode;

/// Where the catalog is: the connection URL, and the CA file for TLS if there is one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// The PostgreSQL schema the catalog lives in (`database.schema`); `None`: the
    /// connection's default search path (normally `public`).
    pub schema: Option<String>,
    /// How long a connection may take to be ready (TCP, TLS, start-up).
    pub connect_timeout: std::time::Duration,
    /// How long one statement (or one registration batch) may go unanswered.
    pub statement_timeout: std::time::Duration,
}

/// `database.connect_timeout` by default.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// `database.statement_timeout` by default: long enough for a registration batch of a
/// thousand files with its links on a busy NAS.
pub const DEFAULT_STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Target {
    pub fn new(url: impl Into<String>) -> Target {
        Target {
            url: url.into(),
            ca_file: None,
            schema: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }

    pub fn with_timeouts(mut self, connect: std::time::Duration, statement: std::time::Duration) -> Target {
        self.connect_timeout = connect;
        self.statement_timeout = statement;
        self
    }

    pub fn with_schema(mut self, schema: Option<String>) -> Target {
        self.schema = schema;
        self
    }

    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> Target {
        self.ca_file = ca_file;
        self
    }
}

impl From<&str> for Target {
    fn from(url: &str) -> Target {
        Target::new(url)
    }
}

/// Whose certificates vouch for the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    System,
    File(PathBuf),
}

/// What a target asks for, checked.
#[derive(Debug)]
pub struct Plan {
    pub config: tokio_postgres::Config,
    /// `None`: plain TCP.
    pub tls: Option<Roots>,
}

/// Supabase's transaction pooler (Supavisor on port 6543) hands each transaction to another
/// server connection: session settings, advisory locks (migrations, upload leases) and
/// prepared statements do not survive, so the catalog cannot work through it.
pub fn transaction_pooler(config: &tokio_postgres::Config) -> Option<String> {
    let pooler_host = config.get_hosts().iter().any(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => name.ends_with(".pooler.supabase.com"),
        _ => false,
    });
    let port_6543 = config.get_ports().contains(&6543);
    (pooler_host && port_6543).then(|| {
        "points at Supabase's transaction pooler (port 6543), which cannot hold advisory locks, \
         session settings or prepared statements: use the session pooler (same host, port 5432) \
         or the direct connection (db.<project>.supabase.co:5432)"
            .to_owned()
    })
}

/// The TLS options of libpq that tokio-postgres does not parse.
#[derive(Debug, Default, PartialEq, Eq)]
struct LibpqTls {
    mode: Option<String>,
    root_cert: Option<String>,
}

/// Check a target without connecting: its URL parses and its TLS options agree.
pub fn plan(target: &Target) -> Result<Plan, String> {
    let (url, libpq) = take_libpq_tls(&target.url);
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|error| format!("is not a valid PostgreSQL connection URL ({error})"))?;
    let root_cert = match (&target.ca_file, &libpq.root_cert) {
        (Some(file), Some(url_file)) if Path::new(url_file) != file.as_path() => {
            return Err(format!(
                "names the CA file {url_file} (sslrootcert) and database.ca_file names {}: keep one",
                file.display()
            ));
        }
        (Some(file), _) => Some(Roots::File(file.clone())),
        (None, Some(url_file)) if url_file == "system" => Some(Roots::System),
        (None, Some(url_file)) => Some(Roots::File(PathBuf::from(url_file))),
        (None, None) => None,
    };
    let mode = libpq.mode.clone().unwrap_or_else(|| {
        match config.get_ssl_mode() {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            _ => "prefer",
        }
        .to_owned()
    });
    let tls = match mode.as_str() {
        "disable" if root_cert.is_some() => {
            return Err("says sslmode=disable but a CA file is set: drop one".to_owned());
        }
        "disable" => None,
        "allow" | "prefer" => root_cert,
        "require" | "verify-ca" | "verify-full" => Some(root_cert.unwrap_or(Roots::System)),
        other => {
            return Err(format!(
                "has sslmode={other}: use disable, prefer, require, verify-ca or verify-full"
            ));
        }
    };
    config.ssl_mode(if tls.is_some() {
        SslMode::Require
    } else {
        SslMode::Disable
    });
    Ok(Plan { config, tls })
}

/// Take `sslrootcert`, and an `sslmode` tokio-postgres would refuse, out of a URL
/// (`postgres://…?a=b&c=d`) or a keyword string (`host=… sslmode=…`).
fn take_libpq_tls(url: &str) -> (String, LibpqTls) {
    let mut found = LibpqTls::default();
    let mut keep = |key: &str, value: String| -> bool {
        match key {
            "sslrootcert" => {
                found.root_cert = Some(value);
                false
            }
            "sslmode" => {
                let ours = matches!(value.as_str(), "disable" | "prefer" | "require");
                found.mode = Some(value);
                ours
            }
            _ => true,
        }
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), found);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let value = percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned();
                keep(key, value)
            })
            .collect();
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (url, found)
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|token| match token.split_once('=') {
                Some((key, value)) => keep(key, value.trim_matches('\'').to_owned()),
                None => true,
            })
            .collect();
        (kept.join(" "), found)
    }
}

/// The rustls connector for these roots. The CA file is read at each connection, so that a
/// rotated CA is picked up by the next reconnect.
pub fn connector(roots: &Roots) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Roots::File(file) => {
            for cert in read_ca_file(file)? {
                store
                    .add(cert)
                    .map_err(|error| format!("the CA file {}: {error}", file.display()))?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "sslmode asks for TLS but the system has no CA certificates (install ca-certificates, or set database.ca_file)"
                        .to_owned(),
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS setup: {error}"))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The certificates of a PEM CA file: at least one, or why not.
pub fn read_ca_file(file: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let pem = std::fs::read(file).map_err(|error| format!("cannot read the CA file {}: {error}", file.display()))?;
    parse_ca_pem(&pem, file)
}

/// The certificates in `pem`, the text of the CA file `file`: at least one, or why not.
pub fn parse_ca_pem(pem: &[u8], file: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|error| format!("cannot read the CA file {}: {error}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("the CA file {} holds no PEM certificate", file.display()));
    }
    Ok(certs)
}

/// A word on what to do about a failed TLS handshake, appended to the error.
pub fn hint(error: &str, tls: Option<&Roots>) -> &'static str {
    if tls.is_none() {
        if error.contains("no encryption") || error.contains("SSL off") {
            return " (the server wants TLS: add sslmode=require to database.url)";
        }
        return "";
    }
    if error.contains("UnknownIssuer") || error.contains("BadSignature") {
        match tls {
            Some(Roots::System) => {
                " (the server's certificate is not signed by a CA this system trusts: set database.ca_file to the CA certificate your provider publishes)"
            }
            _ => " (the server's certificate is not signed by a CA in database.ca_file)",
        }
    } else if error.contains("NotValidForName") || error.contains("not valid for name") {
        " (the server's certificate does not name the host in database.url: connect by a name the certificate lists)"
    } else if error.contains("does not support TLS") {
        " (the server has TLS off: enable ssl on the server, or drop sslmode=require and the CA file)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_of(url: &str, ca_file: Option<&str>) -> Result<Option<Roots>, String> {
        plan(&Target::new(url).with_ca_file(ca_file.map(PathBuf::from))).map(|plan| plan.tls)
    }

    #[test]
    fn plain_unless_tls_is_asked_for() {
        for url in [
            "postgres://u@db/fms",
            "postgres://u@db/fms?sslmode=prefer",
            "postgres://u@db/fms?sslmode=allow",
            "postgres://u@db/fms?sslmode=disable",
            "host=db user=u sslmode=prefer",
        ] {
            assert_eq!(tls_of(url, None), Ok(None), "{url}");
        }
    }

    #[test]
    fn require_and_verify_modes_verify_against_system_roots_or_the_ca_file() {
        for url in [
            "postgres://u:p@db.example.com:5432/postgres?sslmode=require",
            "postgresql://u@db/fms?sslmode=verify-full",
            "postgres://u@db/fms?application_name=x&sslmode=verify-ca",
            "host=db user=u sslmode=verify-full",
        ] {
            assert_eq!(tls_of(url, None), Ok(Some(Roots::System)), "{url}");
            assert_eq!(
                tls_of(url, Some("/run/secrets/ca.pem")),
                Ok(Some(Roots::File("/run/secrets/ca.pem".into()))),
                "{url}"
            );
        }
    }

    #[test]
    fn sslrootcert_in_the_url_is_the_ca_file() {
        let url = "postgres://u@db/fms?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=a";
        let plan = plan(&Target::new(url)).unwrap();
        assert_eq!(plan.tls, Some(Roots::File("/etc/ca.pem".into())));
        assert_eq!(plan.config.get_application_name(), Some("a"));
        assert_eq!(plan.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(
            tls_of("postgres://u@db/fms?sslmode=require&sslrootcert=system", None),
            Ok(Some(Roots::System))
        );
        // The same file named twice is fine; two different files are not.
        assert!(tls_of("postgres://u@db/fms?sslrootcert=/a.pem", Some("/a.pem")).is_ok());
        let error = tls_of("postgres://u@db/fms?sslrootcert=/a.pem", Some("/b.pem")).unwrap_err();
        assert!(error.contains("/a.pem") && error.contains("/b.pem"), "{error}");
    }

    #[test]
    fn a_ca_file_alone_means_tls_is_required() {
        let plan = plan(&Target::new("postgres://u@db/fms").with_ca_file(Some("/ca.pem".into()))).unwrap();
        assert_eq!(plan.tls, Some(Roots::File("/ca.pem".into())));
        assert_eq!(plan.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn contradictions_and_nonsense_are_refused() {
        let error = tls_of("postgres://u@db/fms?sslmode=disable", Some("/ca.pem")).unwrap_err();
        assert!(error.contains("sslmode=disable"), "{error}");
        assert!(tls_of("postgres://u@db/fms?sslmode=sometimes", None).is_err());
        assert!(tls_of("http://db/fms", None).is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let error = connector(&Roots::File("/nonexistent/ca.pem".into())).err().unwrap();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        let empty = tempfile::NamedTempFile::new().unwrap();
        let error = connector(&Roots::File(empty.path().into())).err().unwrap();
        assert!(error.contains("holds no PEM certificate"), "{error}");
    }
}
