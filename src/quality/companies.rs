//! Duplicate companies of a tenant ([`duplicate_companies`]): the same
//! organisation domain, or similar names once legal forms are set aside.
//!
//! Domains are unique per tenant, so two companies meet on a domain only
//! through its organisation part, its registrable domain by the Public
//! Suffix List (`eu.acme.com` and `acme.com`; never `acme.github.io` and
//! `globex.github.io`), or when a company without a domain is named by one
//! under a known suffix (`Acme.com`, not `I.B.M`). Names compare
//! folded ([`fold`](super::fold)) without a trailing legal form (`Inc`,
//! `GmbH`, …), by Jaro–Winkler similarity.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{
    DuplicateOptions,
    duplicates::{PairPosition, page_of, sort_pairs},
    keys::fold,
};
use crate::{
    Context, Store, TenantId,
    domain::{
        Company, CompanyDomain, CompanyId, CompanyName, CursorList, ListScope, Page, PageRequest,
    },
    error::Result,
    store::{CompanyQuery, CompanySort},
};

/// Why a pair of companies is a candidate.
///
/// More reasons may come: a `match` on it outside this crate needs a `_`
/// arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CompanyDuplicateReason {
    /// The same organisation domain.
    SameDomain,
    /// Similar names (legal forms aside).
    SimilarName,
}

impl CompanyDuplicateReason {
    /// Its name (`same_domain`, `similar_name`).
    pub fn as_str(self) -> &'static str {
        match self {
            CompanyDuplicateReason::SameDomain => "same_domain",
            CompanyDuplicateReason::SimilarName => "similar_name",
        }
    }
}

/// Two companies that may be one organisation: `a` has the smaller id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompanyDuplicatePair {
    /// The company with the smaller id.
    pub a: CompanyId,
    /// The other company.
    pub b: CompanyId,
    /// `a`'s name.
    pub name_a: CompanyName,
    /// `b`'s name.
    pub name_b: CompanyName,
    /// How likely the two are one organisation, 0–1 (four decimals).
    pub confidence: f64,
    /// The evidence.
    pub reasons: Vec<CompanyDuplicateReason>,
}

/// The candidate pairs of one scan of a tenant's companies, best first
/// (confidence descending, then the ids).
#[derive(Debug, Clone)]
pub struct CompanyDuplicateScan {
    scope: ListScope,
    pairs: Vec<CompanyDuplicatePair>,
    oversized_blocks: u64,
}

impl CompanyDuplicateScan {
    /// Every pair, best first.
    pub fn pairs(&self) -> &[CompanyDuplicatePair] {
        &self.pairs
    }

    /// How many blocking keys were left out for holding more companies
    /// than [`DuplicateOptions::max_block_size`].
    pub fn oversized_blocks(&self) -> u64 {
        self.oversized_blocks
    }

    /// One page of the pairs, in their order; refuses a cursor of another
    /// list or scan as [`DuplicateScan::page`](super::DuplicateScan::page) does.
    pub fn page(&self, request: &PageRequest) -> Result<Page<CompanyDuplicatePair>> {
        page_of(&self.pairs, request, self.scope, position)
    }
}

fn position(p: &CompanyDuplicatePair) -> PairPosition {
    PairPosition(p.confidence, p.a.as_uuid(), p.b.as_uuid())
}

/// Legal forms left out of a company name's end before comparing.
const LEGAL_FORMS: &[&str] = &[
    "ab",
    "ag",
    "bv",
    "co",
    "company",
    "corp",
    "corporation",
    "gmbh",
    "inc",
    "incorporated",
    "limited",
    "llc",
    "llp",
    "ltd",
    "nv",
    "oy",
    "plc",
    "pty",
    "sa",
    "sarl",
    "sas",
    "spa",
    "srl",
];

/// A company name's comparison key: its words folded, legal forms and
/// `&`/`and` at the end left out.
pub(crate) fn name_key(name: &str) -> String {
    let mut words: Vec<String> = name
        .split(|c: char| c.is_whitespace() || c == ',' || c == '.')
        .map(fold)
        .filter(|w| !w.is_empty())
        .collect();
    while words.len() > 1
        && words
            .last()
            .is_some_and(|w| LEGAL_FORMS.contains(&w.as_str()) || w == "and")
    {
        words.pop();
    }
    words.concat()
}

/// The organisation part of a domain: its registrable domain by the
/// Public Suffix List (`acme.co.uk` of `www.acme.co.uk`; `initech.myshopify.com`
/// and `acme.github.io` whole, since `myshopify.com` and `github.io` are
/// suffixes under which unrelated organisations register). Under a
/// suffix the list does not know (`.example`, an intranet's `.corp`): the
/// last two labels, three under a two-letter label whose second label is
/// short (`acme.co.xx`).
pub(crate) fn organisation_domain(domain: &CompanyDomain) -> String {
    match psl::domain(domain.as_str().as_bytes()) {
        Some(d) if d.suffix().is_known() => String::from_utf8_lossy(d.as_bytes()).into_owned(),
        _ => {
            let labels: Vec<&str> = domain.as_str().split('.').collect();
            let n = labels.len();
            let keep = if n >= 3 && labels[n - 1].len() == 2 && labels[n - 2].len() <= 3 {
                3
            } else {
                2
            };
            labels[n.saturating_sub(keep)..].join(".")
        }
    }
}

/// A company name that is a domain under a known public suffix
/// (`Amazon.com`), as a company without a domain may be named; not an
/// initialism (`I.B.M`, `U.S.A`), whose last letter is no suffix.
fn named_domain(name: &str) -> Option<CompanyDomain> {
    if !name.contains('.') {
        return None;
    }
    let domain = CompanyDomain::parse(name).ok()?;
    psl::suffix(domain.as_str().as_bytes())
        .is_some_and(|s| s.is_known())
        .then_some(domain)
}

/// What is compared of one company.
#[derive(Debug)]
struct Profile {
    id: CompanyId,
    name: CompanyName,
    key: String,
    domain: Option<String>,
}

impl Profile {
    fn of(c: &Company) -> Profile {
        // A company without a domain may be named by one.
        let domain = c
            .domain
            .clone()
            .or_else(|| named_domain(c.name.as_str()))
            .map(|d| organisation_domain(&d));
        Profile {
            id: c.id,
            name: c.name.clone(),
            key: name_key(c.name.as_str()),
            domain,
        }
    }

    fn blocking_keys(&self) -> Vec<String> {
        let mut keys = Vec::with_capacity(3);
        if let Some(d) = &self.domain {
            keys.push(format!("d\u{1}{d}"));
        }
        if !self.key.is_empty() {
            let prefix: String = self.key.chars().take(4).collect();
            keys.push(format!("n\u{1}{prefix}"));
            let suffix: String = {
                let chars: Vec<char> = self.key.chars().collect();
                chars[chars.len().saturating_sub(4)..].iter().collect()
            };
            keys.push(format!("s\u{1}{suffix}"));
        }
        keys
    }
}

/// The confidence (0–1) that two companies are one, with its reasons.
fn score(p: &Profile, q: &Profile) -> (f64, Vec<CompanyDuplicateReason>) {
    let mut reasons = Vec::new();
    let names = if p.key == q.key {
        1.0
    } else if p.key.is_empty() || q.key.is_empty() {
        0.0
    } else {
        let (x, y) = if p.key <= q.key {
            (&p.key, &q.key)
        } else {
            (&q.key, &p.key)
        };
        strsim::jaro_winkler(x, y)
    };
    if names >= 0.9 {
        reasons.push(CompanyDuplicateReason::SimilarName);
    }
    let confidence = match (&p.domain, &q.domain) {
        (Some(a), Some(b)) if a == b => {
            reasons.insert(0, CompanyDuplicateReason::SameDomain);
            0.9 + 0.1 * names
        }
        // Two domains of their own: similar names alone are weak.
        (Some(_), Some(_)) => 0.6 * names,
        _ => names * names,
    };
    ((confidence * 10_000.0).round() / 10_000.0, reasons)
}

/// Finds the candidate duplicate pairs among the companies of `tenant`:
/// the same organisation domain, or similar names (a pair must reach
/// `options.threshold`; blocks are capped by `options.max_block_size`).
///
/// Errors: [`Error::Validation`](crate::Error::Validation) on the options
/// as [`duplicate_candidates`](super::duplicate_candidates) checks them;
/// what reading the companies fails with.
pub async fn duplicate_companies<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    options: &DuplicateOptions,
) -> Result<CompanyDuplicateScan> {
    options.checked()?;
    let mut tx = store
        .begin_read(tenant, Context::system("duplicate-candidates"))
        .await?;
    let mut query = CompanyQuery::new()
        .with_sort(CompanySort::CreatedAsc)
        .with_page(PageRequest::first(1000));
    let mut profiles = Vec::new();
    loop {
        let page = tx.search_companies(&query).await?;
        profiles.extend(page.items.iter().map(Profile::of));
        match page.next_cursor {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    tx.commit().await?;
    let mut blocks: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in profiles.iter().enumerate() {
        for key in p.blocking_keys() {
            blocks.entry(key).or_default().push(i);
        }
    }
    let mut oversized_blocks = 0;
    let mut seen = HashSet::new();
    let mut pairs = Vec::new();
    for members in blocks.values() {
        if members.len() > options.max_block_size {
            oversized_blocks += 1;
            continue;
        }
        for (n, &i) in members.iter().enumerate() {
            for &j in &members[n + 1..] {
                let (a, b) = if profiles[i].id < profiles[j].id {
                    (&profiles[i], &profiles[j])
                } else {
                    (&profiles[j], &profiles[i])
                };
                if a.id == b.id || !seen.insert((a.id, b.id)) {
                    continue;
                }
                let (confidence, reasons) = score(a, b);
                if confidence >= options.threshold && !reasons.is_empty() {
                    pairs.push(CompanyDuplicatePair {
                        a: a.id,
                        b: b.id,
                        name_a: a.name.clone(),
                        name_b: b.name.clone(),
                        confidence,
                        reasons,
                    });
                }
            }
        }
    }
    sort_pairs(&mut pairs, position);
    Ok(CompanyDuplicateScan {
        scope: CursorList::DuplicateCompanies.scoped(&(tenant, options)),
        pairs,
        oversized_blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_forms_and_casing_do_not_tell_companies_apart() {
        assert_eq!(name_key("Acme, Inc."), name_key("ACME"));
        assert_eq!(name_key("Acme Corporation"), "acme");
        assert_eq!(name_key("Müller GmbH"), "muller");
        assert_eq!(name_key("Inc"), "inc", "a name is never emptied");
    }

    #[test]
    fn the_organisation_domain_drops_subdomains() {
        let d = |s: &str| organisation_domain(&CompanyDomain::parse(s).unwrap());
        assert_eq!(d("eu.acme.com"), "acme.com");
        assert_eq!(d("acme.com"), "acme.com");
        assert_eq!(d("shop.acme.co.uk"), "acme.co.uk");
        assert_eq!(d("www.acme.com.au"), "acme.com.au");
    }

    #[test]
    fn organisations_under_a_shared_suffix_keep_their_own_label() {
        let d = |s: &str| organisation_domain(&CompanyDomain::parse(s).unwrap());
        assert_eq!(d("acme.github.io"), "acme.github.io");
        assert_eq!(d("initech.myshopify.com"), "initech.myshopify.com");
        assert_eq!(d("acme.blogspot.com"), "acme.blogspot.com");
        assert_eq!(d("lincoln.k12.ca.us"), "lincoln.k12.ca.us");
        assert_eq!(d("intranet.corp"), "intranet.corp", "an unknown suffix");
        assert_eq!(d("eu.acme.example"), "acme.example", "an unknown suffix");
        assert_eq!(d("github.io"), "github.io", "a suffix itself");
    }

    #[test]
    fn initialisms_are_not_domains() {
        for name in ["I.B.M", "U.S.A", "N.A.S.A", "C.B.M"] {
            assert!(named_domain(name).is_none(), "{name}");
        }
        assert_eq!(
            named_domain("Amazon.com").map(|d| d.as_str().to_string()),
            Some("amazon.com".to_string())
        );
    }
}
