//! Company domains: the one definition of the internet domain that
//! identifies a company, and the consumer mail domains that identify none.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::Email;
use crate::domain::error::FieldError;

/// Consumer mail domains: an address at one of them says nothing about the
/// company its owner works for (see [`CompanyDomain::is_free_mail`]).
pub const FREE_MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "ymail.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "pm.me",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "mail.com",
    "yandex.com",
    "yandex.ru",
    "mail.ru",
    "zoho.com",
    "fastmail.com",
    "hey.com",
    "qq.com",
    "163.com",
    "126.com",
    "naver.com",
    "hotmail.co.uk",
    "yahoo.co.uk",
    "live.co.uk",
    "outlook.de",
    "hotmail.fr",
    "orange.fr",
    "free.fr",
    "laposte.net",
    "t-online.de",
    "libero.it",
    "tutanota.com",
    "tuta.io",
];

/// A company's internet domain, normalised: the one definition of a
/// company-domain key, stored and compared as it is.
///
/// [`parse`](Self::parse) takes what people paste — a domain, a URL, a
/// host with a port — and keeps only the registrable name, so that
/// `HTTPS://WWW.Example.COM:8080/path?q#f`, `example.com.` and
/// `www.example.com` are all `example.com`:
///
/// 1. white space around it is trimmed;
/// 2. a leading scheme (`https://`, any `letter [letters digits + . -]* ://`,
///    in any case) or a bare `//` is removed;
/// 3. the text is cut at the first `/`, `?` or `#`;
/// 4. user information (everything up to the last `@`) and a `:port` (digits)
///    are removed;
/// 5. it is converted to ASCII with IDNA (UTS #46: lower case, compatibility
///    mappings, Punycode), so `Bücher.example` is `xn--bcher-kva.example`;
/// 6. one trailing `.` is removed;
/// 7. leading `www.` labels are removed while at least two labels remain
///    (`www.www.example.com` is `example.com`; `www.com` stays `www.com`).
///
/// The result must then be at most 253 characters of at least two labels,
/// each 1–63 characters of `a-z`, `0-9` and `-`, neither starting nor
/// ending with `-`, the last not all digits (an IP address is not a
/// domain). Normalising a normalised domain gives it back unchanged.
///
/// ```
/// use crm_core::domain::CompanyDomain;
///
/// let d = CompanyDomain::parse("HTTPS://WWW.Example.COM:8080/path?q#f").unwrap();
/// assert_eq!(d.as_str(), "example.com");
/// assert_eq!(CompanyDomain::parse("Bücher.example").unwrap().as_str(), "xn--bcher-kva.example");
/// assert!(CompanyDomain::parse("192.168.0.1").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CompanyDomain(String);

impl CompanyDomain {
    /// The most characters a domain may hold.
    pub const MAX_CHARS: usize = 253;

    /// The most characters a label (the text between dots) may hold.
    pub const MAX_LABEL_CHARS: usize = 63;

    /// Normalises and validates a domain (or a URL or host naming one),
    /// reporting the error under `domain`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Self::parse_field("domain", value)
    }

    /// Like [`parse`](Self::parse), reporting the error under `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, FieldError> {
        normalise(value)
            .map(CompanyDomain)
            .map_err(|(code, reason)| FieldError::new(field, code, reason))
    }

    /// The domain of `email`'s address (the part after its `@`), normalised
    /// as [`parse`](Self::parse) normalises it; `None` when that is not a
    /// domain this type accepts (or is the reserved domain of erased
    /// contacts).
    pub fn of_email(email: &Email) -> Option<CompanyDomain> {
        if email.is_erased_domain() {
            return None;
        }
        let (_, domain) = email.as_str().rsplit_once('@')?;
        normalise(domain).ok().map(CompanyDomain)
    }

    /// True for a consumer mail domain ([`FREE_MAIL_DOMAINS`]): the domain
    /// of a person's own address, not of a company.
    pub fn is_free_mail(&self) -> bool {
        FREE_MAIL_DOMAINS.contains(&self.0.as_str())
    }

    /// The domain.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The longest host (before IDNA) looked at: far more than any domain of
/// 253 characters is written with, so that an absurd input is refused
/// before it is converted.
const MAX_INPUT_HOST_BYTES: usize = 1024;

type Refusal = (&'static str, String);

fn invalid(reason: impl Into<String>) -> Refusal {
    ("invalid_format", reason.into())
}

/// True for a URL scheme: a letter, then letters, digits, `+`, `.` or `-`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
}

/// `s` without a leading `scheme://` or `//`.
fn strip_scheme(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
        .unwrap_or(s.len());
    let (scheme, rest) = s.split_at(end);
    match rest.strip_prefix("://") {
        Some(rest) if is_scheme(scheme) => rest,
        _ => s.strip_prefix("//").unwrap_or(s),
    }
}

/// The steps of [`CompanyDomain`]'s docs.
fn normalise(value: &str) -> Result<String, Refusal> {
    let mut s = value.trim();
    if s.is_empty() {
        return Err(("required", "must not be empty".to_string()));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(invalid(format!(
            "must not contain the control character {c:?}"
        )));
    }
    s = strip_scheme(s);
    let authority = s.find(['/', '?', '#']).map_or(s, |end| &s[..end]);
    let mut host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some((h, port)) = host.rsplit_once(':')
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        host = h;
    }
    if host.is_empty() {
        return Err(invalid(
            "names no host: nothing is left once the scheme, user, port and path are removed",
        ));
    }
    if host.len() > MAX_INPUT_HOST_BYTES {
        return Err((
            "too_long",
            format!("must have at most {} characters", CompanyDomain::MAX_CHARS),
        ));
    }
    if let Some(c) = host
        .chars()
        .find(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.')))
    {
        return Err(invalid(format!(
            "must not contain {c:?}: a domain holds only letters, digits, hyphens and dots"
        )));
    }
    let ascii =
        idna::domain_to_ascii_cow(host.as_bytes(), idna::AsciiDenyList::EMPTY).map_err(|_| {
            invalid(format!(
                "{host:?} is not a valid internationalised domain name (IDNA)"
            ))
        })?;
    let mut d: &str = &ascii;
    d = d.strip_suffix('.').unwrap_or(d);
    while let Some(rest) = d.strip_prefix("www.") {
        if !rest.contains('.') {
            break;
        }
        d = rest;
    }
    check_normalised(d)?;
    Ok(d.to_string())
}

/// The rules a normalised domain meets.
fn check_normalised(d: &str) -> Result<(), Refusal> {
    let len = d.chars().count();
    if len > CompanyDomain::MAX_CHARS {
        return Err((
            "too_long",
            format!(
                "must have at most {} characters, got {len}",
                CompanyDomain::MAX_CHARS
            ),
        ));
    }
    let labels: Vec<&str> = d.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(invalid(format!(
                "{d:?} has an empty label: a dot at the start, or two dots in a row"
            )));
        }
        let chars = label.chars().count();
        if chars > CompanyDomain::MAX_LABEL_CHARS {
            return Err(invalid(format!(
                "has a label of {chars} characters; a label holds at most {}",
                CompanyDomain::MAX_LABEL_CHARS
            )));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(invalid(format!(
                "must not contain {c:?}: a domain holds only letters, digits, hyphens and dots"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(format!(
                "has the label {label:?}, which starts or ends with a hyphen"
            )));
        }
    }
    if labels.len() < 2 {
        return Err(invalid(format!(
            "{d:?} is a single label: a domain has at least two, like example.com"
        )));
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(format!(
            "{d:?} is not a domain: its last label is all digits (an IP address?)"
        )));
    }
    Ok(())
}

impl AsRef<str> for CompanyDomain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CompanyDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CompanyDomain {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CompanyDomain::parse(s)
    }
}

impl TryFrom<String> for CompanyDomain {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        CompanyDomain::parse(&value)
    }
}

impl From<CompanyDomain> for String {
    fn from(d: CompanyDomain) -> String {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(v: &str) -> String {
        match CompanyDomain::parse(v) {
            Ok(d) => d.0,
            Err(e) => panic!("{v:?} refused: {e}"),
        }
    }

    fn refused(v: &str) -> FieldError {
        match CompanyDomain::parse(v) {
            Ok(d) => panic!("{v:?} accepted as {d}"),
            Err(e) => {
                assert_eq!(e.field, "domain", "{v:?}");
                e
            }
        }
    }

    #[test]
    fn urls_hosts_and_variants_normalise_to_one_domain() {
        let table = [
            ("example.com", "example.com"),
            ("  Example.COM  ", "example.com"),
            ("HTTPS://WWW.Example.COM:8080/path?q#f", "example.com"),
            ("http://example.com", "example.com"),
            ("https://example.com/", "example.com"),
            ("ftp://files.example.com/pub", "files.example.com"),
            ("git+ssh://git.example.com:22/repo", "git.example.com"),
            ("//example.com/x", "example.com"),
            ("//example.com?u=https://other.org", "example.com"),
            ("https://example.com?u=https://other.org", "example.com"),
            ("example.com?q=http://other.org", "example.com"),
            ("example.com#section", "example.com"),
            ("example.com.", "example.com"),
            ("www.example.com", "example.com"),
            ("WWW.example.com.", "example.com"),
            ("www.www.example.com", "example.com"),
            ("www.com", "www.com"),
            ("www.www.com", "www.com"),
            ("wwwexample.com", "wwwexample.com"),
            ("www2.example.com", "www2.example.com"),
            ("shop.www.example.com", "shop.www.example.com"),
            ("user@example.com", "example.com"),
            ("https://user:secret@www.example.com:443/", "example.com"),
            ("mailto:ada@example.com", "example.com"),
            ("a@b@example.com", "example.com"),
            ("example.com:", "example.com"),
            ("Bücher.example", "xn--bcher-kva.example"),
            ("https://www.Bücher.example/", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("ＥＸＡＭＰＬＥ．ｃｏｍ", "example.com"),
            ("example。com", "example.com"),
            ("ｗｗｗ.example.com", "example.com"),
            ("straße.de", "xn--strae-oqa.de"),
            ("münchen.de", "xn--mnchen-3ya.de"),
            ("例え.jp", "xn--r8jz45g.jp"),
            ("a-b.co.uk", "a-b.co.uk"),
            ("123.example", "123.example"),
            ("example.xn--p1ai", "example.xn--p1ai"),
            ("a.b1", "a.b1"),
        ];
        for (input, want) in table {
            assert_eq!(domain(input), want, "{input:?}");
            assert_eq!(domain(want), want, "{want:?} is stable");
        }
    }

    #[test]
    fn ip_addresses_single_labels_and_malformed_hosts_are_refused() {
        for v in [
            "localhost",
            "http://localhost:3000/",
            "com",
            "www",
            "192.168.0.1",
            "http://10.0.0.1:8080/",
            "1.2.3.4.",
            "[::1]",
            "http://[2001:db8::1]/",
            "example..com",
            "..",
            ".",
            ".example.com",
            "-example.com",
            "example-.com",
            "example.-com",
            "exa mple.com",
            "exa_mple.com",
            "example.com:port",
            "example.com:80:90",
            "https://",
            "https:///path",
            "/path/only",
            "user@",
            "?q",
            "xn--zz.example",
            "xn--a.example",
            "example.com..",
        ] {
            let e = refused(v);
            assert_eq!(e.code, "invalid_format", "{v:?}: {e}");
        }
    }

    #[test]
    fn nul_control_characters_and_blank_input_are_refused_with_reasons() {
        assert_eq!(refused("").code, "required");
        assert_eq!(refused("   ").code, "required");
        let e = refused("exam\0ple.com");
        assert!(e.reason.contains("control"), "{e}");
        assert_eq!(refused("example.com/\0").code, "invalid_format");
        assert_eq!(refused("exa\u{7}mple.com").code, "invalid_format");
        assert_eq!(refused("example.com\u{200e}").code, "invalid_format");
    }

    #[test]
    fn lengths_of_labels_and_of_the_whole_domain_are_bounded() {
        let label63 = "a".repeat(63);
        assert_eq!(domain(&format!("{label63}.com")), format!("{label63}.com"));
        let e = refused(&format!("{}.com", "a".repeat(64)));
        assert!(e.reason.contains("64"), "{e}");
        // 4 labels of 62, 4 dots and "com": 255 characters.
        let long = format!("{0}.{0}.{0}.{0}.com", "a".repeat(62));
        assert_eq!(refused(&long).code, "too_long");
        let ok = format!("{0}.{0}.{0}.{1}.com", "a".repeat(62), "a".repeat(60));
        assert_eq!(domain(&ok).len(), 253);
        assert_eq!(refused(&"a".repeat(5000)).code, "too_long");
        // A label too long only once converted to Punycode.
        let e = refused(&format!("{}.example", "ü".repeat(60)));
        assert_eq!(e.code, "invalid_format", "{e}");
    }

    #[test]
    fn the_error_names_the_field_it_is_given() {
        let e = CompanyDomain::parse_field("website", "localhost").unwrap_err();
        assert_eq!(e.field, "website");
    }

    #[test]
    fn the_domain_of_an_email_goes_through_the_same_normalisation() {
        let email = Email::parse("Ada@Mail.Example.COM").unwrap();
        let d = CompanyDomain::of_email(&email).unwrap();
        assert_eq!(d.as_str(), "mail.example.com");
        assert!(!d.is_free_mail());
        let email = Email::parse("ada@www.example.com").unwrap();
        assert_eq!(
            CompanyDomain::of_email(&email).unwrap().as_str(),
            "example.com"
        );
        let gmail = Email::parse("someone@GMail.com").unwrap();
        assert!(CompanyDomain::of_email(&gmail).unwrap().is_free_mail());
        let erased = Email::erased(super::super::ContactId::new());
        assert_eq!(CompanyDomain::of_email(&erased), None);
    }

    #[test]
    fn every_free_mail_domain_is_a_normalised_domain() {
        assert!(FREE_MAIL_DOMAINS.len() >= 40);
        for d in FREE_MAIL_DOMAINS {
            let parsed = CompanyDomain::parse(d).unwrap();
            assert_eq!(parsed.as_str(), *d);
            assert!(parsed.is_free_mail());
        }
        assert!(!CompanyDomain::parse("example.com").unwrap().is_free_mail());
        assert!(
            CompanyDomain::parse("https://www.Hotmail.co.uk/")
                .unwrap()
                .is_free_mail()
        );
    }

    #[test]
    fn a_domain_is_a_json_string_checked_when_read() {
        let d = CompanyDomain::parse("example.com").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), r#""example.com""#);
        let read: CompanyDomain = serde_json::from_str(r#""WWW.Example.com""#).unwrap();
        assert_eq!(read, d);
        assert!(serde_json::from_str::<CompanyDomain>(r#""localhost""#).is_err());
    }
}
