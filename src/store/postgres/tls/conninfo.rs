//! The TLS parameters of a connection string, `sslmode` and
//! `sslrootcert`, taken out of it before tokio-postgres parses the rest:
//! it refuses `verify-ca`, `verify-full` and root certificate settings.

use super::{SslMode, TlsError};

/// The TLS parameters taken out of a connection string (the last of each,
/// as for every parameter).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TlsParams {
    pub(super) sslmode: Option<String>,
    pub(super) rootcert: Option<String>,
}

impl TlsParams {
    /// Whether `sslrootcert=system` asks for the operating system's roots.
    pub(super) fn system_roots(&self) -> bool {
        self.rootcert.as_deref() == Some("system")
    }

    /// The mode asked for: `prefer` by default, `verify-full` by default
    /// with `sslrootcert=system`, which refuses weaker modes.
    pub(super) fn mode(&self) -> Result<SslMode, TlsError> {
        let mode = match &self.sslmode {
            Some(value) => value.parse::<SslMode>()?,
            None if self.system_roots() => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if self.system_roots() && mode != SslMode::VerifyFull {
            return Err(TlsError::SslMode {
                value: mode.to_string(),
                reason: "a weak mode may not be used with sslrootcert=system (use verify-full)"
                    .to_string(),
            });
        }
        Ok(mode)
    }

    /// Takes `value` when `key` is one of ours.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.rootcert = Some(value),
            _ => return false,
        }
        true
    }
}

/// `url` without its `sslmode` and `sslrootcert` parameters, which
/// tokio-postgres cannot parse (`verify-ca`, `verify-full`, root files),
/// and those parameters. Both forms are scanned as tokio-postgres scans
/// them; where it would find the string malformed, scanning stops and the
/// rest is left for it to report.
pub(super) fn split_tls_params(url: &str) -> (String, TlsParams) {
    if let Some(rest) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|p| url.strip_prefix(p))
    {
        split_url(url, rest)
    } else {
        split_key_values(url)
    }
}

/// The URL form: parameters follow the first `?` after the credentials
/// (everything up to the first `@`); each is a key up to `=` and a value up
/// to `&`, both percent-encoded.
fn split_url(url: &str, rest: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let after_credentials = rest.find('@').map_or(0, |at| at + 1);
    let Some(question) = rest[after_credentials..].find('?') else {
        return (url.to_string(), params);
    };
    let query_start = url.len() - rest.len() + after_credentials + question + 1;
    let mut kept: Vec<&str> = Vec::new();
    let mut query = &url[query_start..];
    while !query.is_empty() {
        let Some(eq) = query.find('=') else {
            kept.push(query);
            break;
        };
        let end = query[eq..].find('&').map_or(query.len(), |amp| eq + amp);
        let (key, value) = (&query[..eq], &query[eq + 1..end]);
        if !params.take(&percent_decode(key), percent_decode(value)) {
            kept.push(&query[..end]);
        }
        query = query.get(end + 1..).unwrap_or("");
    }
    (format!("{}{}", &url[..query_start], kept.join("&")), params)
}

/// `%XX` decoded; other bytes as they are (as libpq and tokio-postgres do).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2)))
        {
            // Two hex digits: below 256.
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `key=value` form: whitespace-separated `key = value` pairs, a value
/// being `'quoted'` or bare, with `\` escaping the next character.
fn split_key_values(s: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut chars = s.char_indices().peekable();
    let pos = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        chars.peek().map_or(s.len(), |&(i, _)| i)
    };
    loop {
        while chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        let start = pos(&mut chars);
        while chars
            .next_if(|&(_, c)| !c.is_whitespace() && c != '=')
            .is_some()
        {}
        let key = &s[start..pos(&mut chars)];
        if key.is_empty() {
            break;
        }
        while chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|&(_, c)| c == '=').is_none() {
            break;
        }
        while chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if(|&(_, c)| c == '\'').is_some();
        let mut value = String::new();
        let mut closed = !quoted;
        while let Some((_, c)) = chars.next_if(|&(_, c)| {
            if quoted {
                c != '\''
            } else {
                !c.is_whitespace()
            }
        }) {
            if c == '\\' {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            } else {
                value.push(c);
            }
        }
        if quoted {
            closed = chars.next_if(|&(_, c)| c == '\'').is_some();
        }
        if !closed || (!quoted && value.is_empty()) {
            break;
        }
        let end = pos(&mut chars);
        if params.take(key, value) {
            cuts.push((start, end));
        }
    }
    let mut kept = String::with_capacity(s.len());
    let mut from = 0;
    for (start, end) in cuts {
        kept.push_str(&s[from..start]);
        from = end;
    }
    kept.push_str(&s[from..]);
    (kept, params)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn params(sslmode: Option<&str>, rootcert: Option<&str>) -> TlsParams {
        TlsParams {
            sslmode: sslmode.map(str::to_string),
            rootcert: rootcert.map(str::to_string),
        }
    }

    #[test]
    fn a_url_loses_its_tls_parameters_and_keeps_the_others() {
        let (rest, p) = split_tls_params(
            "postgres://u:p%40ss@h:5433/db?application_name=x&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        );
        assert_eq!(
            rest,
            "postgres://u:p%40ss@h:5433/db?application_name=x&connect_timeout=3"
        );
        assert_eq!(p, params(Some("verify-full"), Some("/etc/ca.pem")));
        assert!(tokio_postgres::Config::from_str(&rest).is_ok());
    }

    #[test]
    fn a_url_whose_only_parameter_is_sslmode_still_parses() {
        let (rest, p) = split_tls_params("postgresql://h/db?sslmode=verify-ca");
        assert_eq!(rest, "postgresql://h/db?");
        assert_eq!(p, params(Some("verify-ca"), None));
        assert!(tokio_postgres::Config::from_str(&rest).is_ok());
    }

    #[test]
    fn the_last_sslmode_wins_and_values_are_percent_decoded() {
        let (_, p) = split_tls_params("postgres://h?sslmode=require&sslmode=verify%2Dfull");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
    }

    #[test]
    fn a_question_mark_in_the_password_does_not_start_the_parameters() {
        let (rest, p) = split_tls_params("postgres://u:a?b@h/db?sslmode=require");
        assert_eq!(rest, "postgres://u:a?b@h/db?");
        assert_eq!(p.sslmode.as_deref(), Some("require"));
    }

    #[test]
    fn a_url_without_parameters_is_unchanged() {
        let url = "postgres://u@h/db";
        assert_eq!(
            split_tls_params(url),
            (url.to_string(), TlsParams::default())
        );
    }

    #[test]
    fn key_values_lose_their_tls_parameters_quoted_or_not() {
        let (rest, p) = split_tls_params(
            "host=localhost sslmode = 'verify-full' dbname=crm sslrootcert=/a\\ b.pem user=u",
        );
        assert_eq!(rest, "host=localhost  dbname=crm  user=u");
        assert_eq!(p, params(Some("verify-full"), Some("/a b.pem")));
        assert!(tokio_postgres::Config::from_str(&rest).is_ok());
    }

    #[test]
    fn a_password_that_looks_like_sslmode_is_kept() {
        let (rest, p) = split_tls_params("password='x sslmode=verify-full' host=h");
        assert_eq!(rest, "password='x sslmode=verify-full' host=h");
        assert_eq!(p, TlsParams::default());
    }

    #[test]
    fn malformed_key_values_are_left_for_the_driver_to_report() {
        let (rest, p) = split_tls_params("sslmode=verify-ca host='unterminated");
        assert_eq!(rest, " host='unterminated");
        assert_eq!(p.sslmode.as_deref(), Some("verify-ca"));
        assert!(tokio_postgres::Config::from_str(&rest).is_err());
    }

    #[test]
    fn sslrootcert_system_means_verify_full_and_refuses_weaker_modes() {
        let (_, p) = split_tls_params("postgres://db.example.com/crm?sslrootcert=system");
        assert_eq!(p.mode().ok(), Some(SslMode::VerifyFull));
        let (_, p) = split_tls_params("host=db.example.com sslrootcert=system sslmode=verify-ca");
        let e = p.mode().err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(
                |e| e.contains("sslmode=\"verify-ca\"") && e.contains("use verify-full")
            ),
            "{e:?}"
        );
        let (_, p) = split_tls_params("host=db.example.com");
        assert_eq!(p.mode().ok(), Some(SslMode::Prefer));
    }
}
