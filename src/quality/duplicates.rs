//! Duplicate contacts of a tenant: one scan over every contact
//! ([`duplicate_candidates`]), the candidate pairs it found in a stable
//! order, read in keyset pages or written as CSV for review.

use std::{collections::HashSet, fmt, io::Write};

use serde::{Deserialize, Serialize};

use super::scorer::{BlockingStats, ContactProfile, candidate_pairs};
use crate::{
    Context, Store, TenantId,
    bulk::CsvFormulas,
    domain::{ContactId, CursorList, CursorPosition, Email, ListScope, Page, PageRequest},
    error::{Error, FieldError, Result, ValidationErrors},
    store::{ContactQuery, ContactSort},
};

/// The default [`DuplicateOptions::threshold`]: chosen from the measured
/// precision and recall on a generated tenant (see `BENCHMARKS.md`).
pub const DEFAULT_THRESHOLD: f64 = 0.8;

/// The default [`DuplicateOptions::max_block_size`].
pub const DEFAULT_MAX_BLOCK_SIZE: usize = 1000;

/// The largest [`DuplicateOptions::max_block_size`] taken: a block of this
/// many contacts is half a million comparisons.
pub const MAX_BLOCK_SIZE_LIMIT: usize = 1000;

/// How a duplicate scan chooses and scores its pairs.
///
/// Contacts are compared only when they share a blocking key: the same
/// email domain and one name word (first name, as the full name a nickname
/// shortens, or last name), the same phone number in E.164, the same
/// company and full name, or the same email local part. A key shared by
/// more than [`max_block_size`](Self::max_block_size) contacts is left
/// out (counted in [`DuplicateScan::oversized_blocks`]), so that a scan
/// never turns quadratic in the size of the tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DuplicateOptions {
    /// The lowest confidence a pair must reach to be a candidate, 0–1.
    /// Default [`DEFAULT_THRESHOLD`].
    pub threshold: f64,
    /// The region (ISO 3166 code, `US`) a phone number without a country
    /// code is read in. Default `US`.
    pub default_region: String,
    /// The most contacts one blocking key may hold and still be compared
    /// pair by pair, 2–[`MAX_BLOCK_SIZE_LIMIT`]. Default
    /// [`DEFAULT_MAX_BLOCK_SIZE`].
    pub max_block_size: usize,
}

impl Default for DuplicateOptions {
    fn default() -> Self {
        DuplicateOptions {
            threshold: DEFAULT_THRESHOLD,
            default_region: "US".to_string(),
            max_block_size: DEFAULT_MAX_BLOCK_SIZE,
        }
    }
}

impl DuplicateOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// With the lowest confidence a pair must reach.
    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// With the region of phone numbers written without a country code.
    pub fn with_default_region(mut self, region: impl Into<String>) -> Self {
        self.default_region = region.into();
        self
    }

    /// With the most contacts one blocking key may hold.
    pub fn with_max_block_size(mut self, size: usize) -> Self {
        self.max_block_size = size;
        self
    }

    /// Checks every option, reporting each one that is out of range; gives
    /// the region as `phonenumber` reads it.
    pub(crate) fn checked(&self) -> Result<phonenumber::country::Id> {
        let mut errors = ValidationErrors::new();
        if !(0.0..=1.0).contains(&self.threshold) {
            errors.push(FieldError::new(
                "threshold",
                "out_of_range",
                format!("must be 0 to 1, got {}", self.threshold),
            ));
        }
        if !(2..=MAX_BLOCK_SIZE_LIMIT).contains(&self.max_block_size) {
            errors.push(FieldError::new(
                "max_block_size",
                "out_of_range",
                format!(
                    "must be 2 to {MAX_BLOCK_SIZE_LIMIT}, got {}",
                    self.max_block_size
                ),
            ));
        }
        let region = self
            .default_region
            .trim()
            .to_ascii_uppercase()
            .parse::<phonenumber::country::Id>();
        if region.is_err() {
            errors.push(FieldError::new(
                "default_region",
                "unknown_value",
                format!(
                    "must be an ISO 3166 region code such as US, got {:?}",
                    self.default_region
                ),
            ));
        }
        match region {
            Ok(region) if errors.is_empty() => Ok(region),
            _ => Err(errors.into()),
        }
    }
}

/// Why a pair of contacts is a candidate.
///
/// More reasons may come: a `match` on it outside this crate needs a `_`
/// arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DuplicateReason {
    /// The same email domain and similar names.
    SameEmailDomainSimilarName,
    /// The same phone number (compared in E.164).
    SamePhone,
    /// The same name at the same company.
    SameNameSameCompany,
    /// The same email local part at another domain.
    SameLocalPartOtherDomain,
    /// The names match with first and last name swapped.
    SwappedNames,
    /// One first name is a nickname of the other.
    Nickname,
}

impl DuplicateReason {
    /// Its name, as the CSV and JSON write it (`same_phone`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DuplicateReason::SameEmailDomainSimilarName => "same_email_domain_similar_name",
            DuplicateReason::SamePhone => "same_phone",
            DuplicateReason::SameNameSameCompany => "same_name_same_company",
            DuplicateReason::SameLocalPartOtherDomain => "same_local_part_other_domain",
            DuplicateReason::SwappedNames => "swapped_names",
            DuplicateReason::Nickname => "nickname",
        }
    }
}

impl fmt::Display for DuplicateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Two contacts that may be one person: `a` has the smaller id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicatePair {
    /// The contact with the smaller id.
    pub a: ContactId,
    /// The other contact.
    pub b: ContactId,
    /// `a`'s email.
    pub email_a: Email,
    /// `b`'s email.
    pub email_b: Email,
    /// How likely the two are one person, 0–1 (four decimals).
    pub confidence: f64,
    /// The evidence, in the order of [`DuplicateReason`].
    pub reasons: Vec<DuplicateReason>,
}

/// A position in a list of pairs: confidence (descending), then the ids.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct PairPosition(pub(crate) f64, pub(crate) uuid::Uuid, pub(crate) uuid::Uuid);

impl CursorPosition for PairPosition {
    fn check(&self, _: CursorList) -> Result<(), FieldError> {
        if (0.0..=1.0).contains(&self.0) {
            Ok(())
        } else {
            Err(FieldError::new(
                "cursor",
                "out_of_range",
                "a confidence is 0 to 1",
            ))
        }
    }
}

impl PairPosition {
    /// True when a pair at `(confidence, a, b)` comes after this position.
    pub(crate) fn precedes(&self, confidence: f64, a: uuid::Uuid, b: uuid::Uuid) -> bool {
        confidence < self.0 || (confidence == self.0 && (a, b) > (self.1, self.2))
    }
}

/// The page of `items` (in list order) that `request` asks for, by the
/// position `key` gives each item.
pub(crate) fn page_of<T: Clone>(
    items: &[T],
    request: &PageRequest,
    scope: ListScope,
    key: impl Fn(&T) -> PairPosition,
) -> Result<Page<T>> {
    let limit = request.checked_limit()?;
    let start = match request.position::<PairPosition>(scope)? {
        None => 0,
        Some(pos) => items.partition_point(|item| {
            let k = key(item);
            !pos.precedes(k.0, k.1, k.2)
        }),
    };
    let end = items.len().min(start + limit + 1);
    Ok(Page::from_overfetch(
        items[start..end].to_vec(),
        limit,
        scope,
        key,
    ))
}

/// Sorts pairs by confidence (descending), then by ids.
pub(crate) fn sort_pairs<T>(items: &mut [T], key: impl Fn(&T) -> PairPosition) {
    items.sort_by(|x, y| {
        let (x, y) = (key(x), key(y));
        y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2)))
    });
}

/// The candidate pairs of one scan of a tenant's contacts, best first
/// (confidence descending, then the ids of `a` and `b`).
#[derive(Debug, Clone)]
pub struct DuplicateScan {
    scope: ListScope,
    pairs: Vec<DuplicatePair>,
    contacts: u64,
    stats: BlockingStats,
}

impl DuplicateScan {
    /// Pairs `profiles` as `options` say (already checked; `region` is
    /// theirs): the pure part of [`duplicate_candidates`].
    pub(crate) fn of_profiles(
        tenant: TenantId,
        options: &DuplicateOptions,
        profiles: &[ContactProfile],
        contacts: u64,
    ) -> DuplicateScan {
        let (scored, stats) = candidate_pairs(profiles, options.threshold, options.max_block_size);
        let mut pairs: Vec<DuplicatePair> = scored
            .into_iter()
            .map(|s| {
                let mut reasons = s.reasons;
                reasons.sort_unstable();
                DuplicatePair {
                    a: profiles[s.a].id,
                    b: profiles[s.b].id,
                    email_a: profiles[s.a].email.clone(),
                    email_b: profiles[s.b].email.clone(),
                    confidence: s.confidence,
                    reasons,
                }
            })
            .collect();
        sort_pairs(&mut pairs, position);
        DuplicateScan {
            scope: CursorList::DuplicateContacts.scoped(&(tenant, options)),
            pairs,
            contacts,
            stats,
        }
    }

    /// Every pair, best first.
    pub fn pairs(&self) -> &[DuplicatePair] {
        &self.pairs
    }

    /// How many pairs were found.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when no pair was found.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// How many contacts were compared (erased contacts are not).
    pub fn contacts_scanned(&self) -> u64 {
        self.contacts
    }

    /// How many pairs were scored.
    pub fn comparisons(&self) -> u64 {
        self.stats.comparisons
    }

    /// How many blocking keys were left out for holding more contacts than
    /// [`DuplicateOptions::max_block_size`].
    pub fn oversized_blocks(&self) -> u64 {
        self.stats.oversized_blocks
    }

    /// One page of the pairs, in their order. Errors: [`Error::Validation`]
    /// on `limit` outside 1–1000, on `cursor` for a cursor another list or
    /// another scan's options (or tenant) made.
    pub fn page(&self, request: &PageRequest) -> Result<Page<DuplicatePair>> {
        page_of(&self.pairs, request, self.scope, position)
    }

    /// Writes the pairs as CSV with the columns
    /// `email_a,email_b,confidence,reasons` (reasons joined by `;`), best
    /// first. An email a spreadsheet would run as a formula gets a `'` in
    /// front ([`CsvFormulas::Neutralise`]).
    pub fn write_csv<W: Write>(&self, writer: W) -> Result<()> {
        let io = |e: csv::Error| Error::backend(format!("cannot write the duplicates: {e}"));
        let mut csv = csv::Writer::from_writer(writer);
        csv.write_record(["email_a", "email_b", "confidence", "reasons"])
            .map_err(io)?;
        let formulas = CsvFormulas::Neutralise;
        for p in &self.pairs {
            let reasons: Vec<&str> = p.reasons.iter().map(|r| r.as_str()).collect();
            csv.write_record([
                formulas.write(p.email_a.as_str()).as_ref(),
                formulas.write(p.email_b.as_str()).as_ref(),
                &format!("{:.4}", p.confidence),
                &reasons.join(";"),
            ])
            .map_err(io)?;
        }
        csv.flush()
            .map_err(|e| Error::backend(format!("cannot write the duplicates: {e}")))
    }
}

/// The list position of a pair.
fn position(p: &DuplicatePair) -> PairPosition {
    PairPosition(p.confidence, p.a.as_uuid(), p.b.as_uuid())
}

/// Finds the candidate duplicate pairs among every contact of `tenant`
/// (active or not; erased contacts are left out), as `options` say. Reads
/// the contacts in pages of 1,000, oldest first, through one transaction,
/// each contact once, then compares them in memory (a few hundred bytes a
/// contact).
///
/// Errors: [`Error::Validation`] on `threshold`, `default_region` or
/// `max_block_size`; what reading the contacts fails with.
pub async fn duplicate_candidates<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    options: &DuplicateOptions,
) -> Result<DuplicateScan> {
    let region = options.checked()?;
    let mut tx = store
        .begin_read(tenant, Context::system("duplicate-candidates"))
        .await?;
    // Oldest first: a key no write changes, walked in an index page after
    // page (the order of the profiles changes nothing in the pairs). Each
    // page is read on a snapshot of its own (on PostgreSQL), so a key a
    // write could move — a name — would let a contact renamed between two
    // pages be read twice (and paired with itself) or not at all.
    let mut query = ContactQuery::new()
        .with_sort(ContactSort::CreatedAsc)
        .with_page(PageRequest::first(1000));
    let mut profiles = Vec::new();
    let mut read = HashSet::new();
    loop {
        let page = tx.search_contacts(&query).await?;
        profiles.extend(
            page.items
                .iter()
                .filter(|c| read.insert(c.id))
                .filter_map(|c| ContactProfile::of(c, region)),
        );
        match page.next_cursor {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    tx.commit().await?;
    let contacts = profiles.len() as u64;
    Ok(DuplicateScan::of_profiles(
        tenant, options, &profiles, contacts,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Contact, NewContact, PersonName};

    fn profile(email: &str) -> ContactProfile {
        let new = NewContact::new(
            Email::parse(email).unwrap(),
            PersonName::parse("Grace").unwrap(),
            PersonName::parse("Hopper").unwrap(),
        );
        let c = Contact::create(TenantId::new(), new, chrono::Utc::now());
        ContactProfile::of(&c, phonenumber::country::Id::US).unwrap()
    }

    #[test]
    fn the_csv_keeps_hostile_addresses_exactly_and_neutralises_formulas() {
        // The same local part at four domains: six pairs.
        let hostile = [
            "=cmd|' /C calc'!A0@evil.example",
            "\"a,b\nc\"@evil.example",
            "\"say \\\"hi\\\"\"@evil.example",
            "+grace.hopper@evil.example",
        ];
        let mut addresses: Vec<&str> = hostile
            .iter()
            .copied()
            .filter(|e| Email::parse(e).is_ok())
            .collect();
        assert!(
            addresses.len() >= 2,
            "the email type accepts a leading = and +: {addresses:?}"
        );
        addresses.extend(["grace.hopper@navy.example", "grace.hopper@yale.example"]);
        let profiles: Vec<ContactProfile> = addresses.iter().map(|e| profile(e)).collect();
        let options = DuplicateOptions::default().with_threshold(0.0);
        let scan = DuplicateScan::of_profiles(TenantId::new(), &options, &profiles, 6);
        assert!(!scan.is_empty());
        let mut out = Vec::new();
        scan.write_csv(&mut out).unwrap();
        let mut reader = csv::Reader::from_reader(out.as_slice());
        assert_eq!(
            reader.headers().unwrap(),
            vec!["email_a", "email_b", "confidence", "reasons"]
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), scan.len(), "one row per pair");
        for (row, pair) in rows.iter().zip(scan.pairs()) {
            for (cell, email) in [(&row[0], &pair.email_a), (&row[1], &pair.email_b)] {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@']),
                    "no cell starts a formula: {cell:?}"
                );
                assert_eq!(CsvFormulas::Neutralise.read(cell), email.as_str());
            }
            assert_eq!(row[2].parse::<f64>().unwrap(), pair.confidence);
            let reasons: Vec<&str> = pair.reasons.iter().map(|r| r.as_str()).collect();
            assert_eq!(&row[3], reasons.join(";"));
        }
    }

    #[test]
    fn pages_follow_the_order_and_refuse_a_cursor_out_of_range() {
        let profiles: Vec<ContactProfile> = ["x", "y", "z", "w"]
            .iter()
            .map(|d| profile(&format!("grace.hopper@{d}.example")))
            .collect();
        let tenant = TenantId::new();
        let options = DuplicateOptions::default();
        let scan = DuplicateScan::of_profiles(tenant, &options, &profiles, 4);
        assert_eq!(scan.len(), 6);
        let first = scan.page(&PageRequest::first(4)).unwrap();
        let rest = scan
            .page(&PageRequest::after(4, first.next_cursor.clone().unwrap()))
            .unwrap();
        assert_eq!([first.items, rest.items].concat(), scan.pairs());
        assert!(rest.next_cursor.is_none());
        let scope = CursorList::DuplicateContacts.scoped(&(tenant, &options));
        let bad = crate::domain::Cursor::encode(
            scope,
            &PairPosition(1.5, uuid::Uuid::nil(), uuid::Uuid::nil()),
        );
        let err = scan.page(&PageRequest::after(4, bad)).unwrap_err();
        assert!(
            err.field_errors().iter().any(|e| e.field == "cursor"),
            "{err:?}"
        );
    }
}
