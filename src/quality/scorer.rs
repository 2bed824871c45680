//! The pure part of duplicate detection: what is compared of a contact
//! ([`ContactProfile`]), which pairs are compared at all (blocking keys),
//! and how a pair is scored. No I/O.
//!
//! # Scoring
//!
//! A pair's evidence is added up as log-odds, starting from a prior of
//! −6 (duplicates are rare), and the confidence is the logistic of the
//! sum, rounded to four decimals:
//!
//! | evidence | log-odds |
//! | --- | --- |
//! | names: the worse of first and last name similarity ≥ 0.97 / ≥ 0.9 / ≥ 0.85 / ≥ 0.8 / lower | +5 / +4 / +3 / +1 / −4 |
//! | a common name: `c` = ln(people expected to bear it), from the scanned names | −0.7 × (c + 4), within 0–4 |
//! | the same phone number in E.164 | +6 |
//! | both have a phone number, and they differ | −2 |
//! | the same email domain: a company's / a free-mail provider's | +2 / +0.5 |
//! | local parts at one domain: similarity ≥ 0.9 / ≥ 0.8 | +3 / +1.5 |
//! | the same local part at another domain (not a role address), held by `k` contacts | +5 − ln(k − 1), at least +2 |
//! | similar local parts (≥ 0.9) at another domain | +1 |
//! | the same company (company id or name); with the same name | +1.5; +3 |
//!
//! Names compare after folding ([`fold`]: case, accents, punctuation),
//! with nicknames read as the names they shorten, in both orders (first
//! and last name swapped); a token similarity is 1 for equal tokens and
//! the Jaro–Winkler similarity otherwise, capped by the edits between
//! them (at most `1 − 0.07 × (edits − 1)`). Pairs whose names are less
//! similar than [`MIN_NAME_SIMILARITY`] are not scored at all.
//!
//! A name shared by many people says less: the people expected to bear a
//! full name are estimated from how often its first and last name occur
//! among the scanned contacts ([`NameCounts`]); two `John Smith`s at
//! `gmail.com` need more than their names and a similar address.

use std::collections::{HashMap, HashSet};

use super::{
    DuplicateReason,
    keys::{canonical_first, e164, fold, is_generic_local_part, is_nickname, local_part_key},
};
use crate::domain::{CompanyDomain, CompanyId, Contact, ContactId, Email};

/// Pairs whose names are less similar than this are never candidates.
pub const MIN_NAME_SIMILARITY: f64 = 0.75;

/// What duplicate detection compares of one contact.
#[derive(Debug, Clone)]
pub struct ContactProfile {
    /// The contact's id.
    pub id: ContactId,
    /// Its email as stored.
    pub email: Email,
    first: String,
    first_canonical: String,
    last: String,
    last_canonical: String,
    domain: Option<CompanyDomain>,
    local: Option<String>,
    company_id: Option<CompanyId>,
    company: Option<String>,
    phone: Option<String>,
}

impl ContactProfile {
    /// The profile of `contact`, its phone read with `region` when it has
    /// no country code. `None` for an erased contact: it holds no personal
    /// data to compare.
    pub fn of(contact: &Contact, region: phonenumber::country::Id) -> Option<ContactProfile> {
        if contact.is_erased() {
            return None;
        }
        let first = fold(contact.first_name.as_str());
        let last = fold(contact.last_name.as_str());
        Some(ContactProfile {
            id: contact.id,
            email: contact.email.clone(),
            first_canonical: canonical_first(&first).to_string(),
            last_canonical: canonical_first(&last).to_string(),
            first,
            last,
            domain: CompanyDomain::of_email(&contact.email),
            local: local_part_key(&contact.email),
            company_id: contact.company_id,
            company: contact
                .company
                .as_ref()
                .map(|c| fold(c.as_str()))
                .filter(|c| !c.is_empty()),
            phone: contact.phone.as_ref().and_then(|p| e164(p, region)),
        })
    }

    /// The blocking keys of this profile: two profiles are compared only
    /// when they share one. Each key starts with its kind.
    fn blocking_keys(&self) -> Vec<String> {
        let mut keys = Vec::with_capacity(6);
        if let Some(domain) = &self.domain {
            // Domain and one name word: a generic domain never forms one
            // block, and a typo in one name still meets on the other.
            for token in [&self.first_canonical, &self.last_canonical] {
                if !token.is_empty() {
                    keys.push(format!("d\u{1}{}\u{1}{token}", domain.as_str()));
                }
            }
        }
        if let Some(phone) = &self.phone {
            keys.push(format!("p\u{1}{phone}"));
        }
        let company = self
            .company_id
            .map(|id| id.to_string())
            .or_else(|| self.company.clone());
        if let Some(company) = company {
            let (x, y) = ordered(&self.first_canonical, &self.last_canonical);
            keys.push(format!("c\u{1}{company}\u{1}{x}\u{1}{y}"));
        }
        if let Some(local) = self.local.as_ref().filter(|l| !is_generic_local_part(l)) {
            keys.push(format!("l\u{1}{local}"));
        }
        keys
    }
}

/// `(a, b)` in order.
fn ordered<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b { (a, b) } else { (b, a) }
}

/// 1 for equal words, else their Jaro–Winkler similarity (computed in one
/// order of the two, so that it is symmetric).
fn similarity(a: &str, b: &str) -> f64 {
    // A word that folds to nothing (a name of emoji or punctuation) is
    // like no other, itself included: it says nothing of the person.
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    if a == b {
        return 1.0;
    }
    let (x, y) = ordered(a, b);
    strsim::jaro_winkler(x, y)
}

/// [`similarity`] of two name words, at most `1 − 0.07 × (d − 1)` for
/// words `d` edits apart (optimal string alignment): Jaro–Winkler is
/// lenient with long words that share a beginning and an end, a typo is
/// one or two edits.
fn name_word_similarity(a: &str, b: &str) -> f64 {
    let jw = similarity(a, b);
    if jw == 1.0 || jw < MIN_NAME_SIMILARITY {
        return jw;
    }
    let edits = strsim::osa_distance(a, b) as f64;
    jw.min(1.0 - 0.07 * (edits - 1.0))
}

/// The better similarity of two name words, as written or as the names
/// their nicknames shorten.
fn word_similarity(a: &str, a_canonical: &str, b: &str, b_canonical: &str) -> f64 {
    name_word_similarity(a, b).max(name_word_similarity(a_canonical, b_canonical))
}

/// How alike two profiles' names are (the worse of the two words, in the
/// better order), and whether the better order is the swapped one.
fn name_similarity(p: &ContactProfile, q: &ContactProfile) -> (f64, bool) {
    let straight = word_similarity(&p.first, &p.first_canonical, &q.first, &q.first_canonical).min(
        word_similarity(&p.last, &p.last_canonical, &q.last, &q.last_canonical),
    );
    let swapped = word_similarity(&p.first, &p.first_canonical, &q.last, &q.last_canonical).min(
        word_similarity(&p.last, &p.last_canonical, &q.first, &q.first_canonical),
    );
    if swapped > straight {
        (swapped, true)
    } else {
        (straight, false)
    }
}

/// How often each name word (as first or last name, nicknames read as
/// full names) and each email local part occur among a set of profiles:
/// how common a name or an address is.
#[derive(Debug, Clone, Default)]
pub struct NameCounts {
    words: HashMap<String, u32>,
    locals: HashMap<String, u32>,
    people: u32,
}

impl NameCounts {
    /// The counts of `profiles`' name words.
    pub fn of(profiles: &[ContactProfile]) -> NameCounts {
        let mut words: HashMap<String, u32> = HashMap::new();
        for p in profiles {
            *words.entry(p.first_canonical.clone()).or_default() += 1;
            if p.last_canonical != p.first_canonical {
                *words.entry(p.last_canonical.clone()).or_default() += 1;
            }
        }
        let mut locals: HashMap<String, u32> = HashMap::new();
        for p in profiles {
            if let Some(l) = &p.local {
                *locals.entry(l.clone()).or_default() += 1;
            }
        }
        NameCounts {
            words,
            locals,
            people: u32::try_from(profiles.len()).unwrap_or(u32::MAX),
        }
    }

    /// The log-odds of the same local part at two domains: 5, less the
    /// log of how many others hold it (`danielk` says less than
    /// `daniel.kelleywood`), at least 2.
    fn same_local_weight(&self, local: &str) -> f64 {
        let holders = f64::from(self.locals.get(local).copied().unwrap_or(2).max(2));
        (5.0 - (holders - 1.0).ln()).max(2.0)
    }

    /// The natural log of how many people are expected to bear `p`'s full
    /// name (its words' counts multiplied, over the people counted, at
    /// least 1,000).
    fn commonness(&self, p: &ContactProfile) -> f64 {
        let count = |w: &str| f64::from(self.words.get(w).copied().unwrap_or(1).max(1));
        // At least a thousand people: in a small tenant every name that
        // occurs twice would otherwise count as common.
        (count(&p.first_canonical) * count(&p.last_canonical) / f64::from(self.people.max(1000)))
            .ln()
    }

    /// The log-odds taken off for the more common of two names.
    fn penalty(&self, p: &ContactProfile, q: &ContactProfile) -> f64 {
        let c = self.commonness(p).max(self.commonness(q));
        (0.7 * (c + 4.0)).clamp(0.0, 4.0)
    }
}

/// The confidence (0–1) that `p` and `q` are one person, with its
/// reasons, names counted in `counts`; `None` when their names are too
/// far apart to be compared.
pub fn score(
    p: &ContactProfile,
    q: &ContactProfile,
    counts: &NameCounts,
) -> Option<(f64, Vec<DuplicateReason>)> {
    let (names, swapped) = name_similarity(p, q);
    if names < MIN_NAME_SIMILARITY {
        return None;
    }
    let mut reasons = Vec::new();
    let mut odds = -6.0 - counts.penalty(p, q);
    odds += if names >= 0.97 {
        5.0
    } else if names >= 0.9 {
        4.0
    } else if names >= 0.85 {
        3.0
    } else if names >= 0.8 {
        1.0
    } else {
        -4.0
    };
    match (&p.phone, &q.phone) {
        (Some(a), Some(b)) if a == b => {
            odds += 6.0;
            reasons.push(DuplicateReason::SamePhone);
        }
        (Some(_), Some(_)) => odds -= 2.0,
        _ => {}
    }
    let same_domain = matches!((&p.domain, &q.domain), (Some(a), Some(b)) if a == b);
    if same_domain {
        let free = p.domain.as_ref().is_some_and(CompanyDomain::is_free_mail);
        odds += if free { 0.5 } else { 2.0 };
        if names >= 0.85 {
            reasons.push(DuplicateReason::SameEmailDomainSimilarName);
        }
    }
    if let (Some(a), Some(b)) = (&p.local, &q.local) {
        let locals = similarity(a, b);
        if same_domain {
            odds += if locals >= 0.9 {
                3.0
            } else if locals >= 0.8 {
                1.5
            } else {
                0.0
            };
        } else if a == b && !is_generic_local_part(a) {
            odds += counts.same_local_weight(a);
            reasons.push(DuplicateReason::SameLocalPartOtherDomain);
        } else if locals >= 0.9 {
            odds += 1.0;
        }
    }
    let same_company = match (p.company_id, q.company_id) {
        (Some(a), Some(b)) => a == b,
        _ => matches!((&p.company, &q.company), (Some(a), Some(b)) if a == b),
    };
    if same_company {
        odds += 1.5;
        if names >= 0.97 {
            odds += 3.0;
            reasons.push(DuplicateReason::SameNameSameCompany);
        }
    }
    if swapped {
        reasons.push(DuplicateReason::SwappedNames);
    }
    if p.first != q.first
        && p.first_canonical == q.first_canonical
        && (is_nickname(&p.first) || is_nickname(&q.first))
    {
        reasons.push(DuplicateReason::Nickname);
    }
    let confidence = (1.0 / (1.0 + f64::exp(-odds)) * 10_000.0).round() / 10_000.0;
    Some((confidence, reasons))
}

/// A scored pair of profiles (indexes into the scanned profiles, the
/// smaller contact id first).
#[derive(Debug, Clone)]
pub(crate) struct ScoredPair {
    pub(crate) a: usize,
    pub(crate) b: usize,
    pub(crate) confidence: f64,
    pub(crate) reasons: Vec<DuplicateReason>,
}

/// What a blocking pass found, besides the pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockingStats {
    /// How many pairs were scored.
    pub comparisons: u64,
    /// Blocks left out for holding more than the cap.
    pub oversized_blocks: u64,
}

/// Every pair of `profiles` that shares a blocking key (of a block of at
/// most `max_block` profiles) and scores at least `threshold`.
pub(crate) fn candidate_pairs(
    profiles: &[ContactProfile],
    threshold: f64,
    max_block: usize,
) -> (Vec<ScoredPair>, BlockingStats) {
    let mut blocks: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in profiles.iter().enumerate() {
        for key in p.blocking_keys() {
            blocks.entry(key).or_default().push(i);
        }
    }
    let counts = NameCounts::of(profiles);
    let mut stats = BlockingStats::default();
    let mut seen: HashSet<(usize, usize)> = HashSet::new();
    let mut pairs = Vec::new();
    // Blocks in key order, so that the work done is the same every run.
    let mut keys: Vec<&String> = blocks.keys().collect();
    keys.sort_unstable();
    for key in keys {
        let members = &blocks[key];
        if members.len() < 2 {
            continue;
        }
        if members.len() > max_block {
            stats.oversized_blocks += 1;
            continue;
        }
        for (n, &i) in members.iter().enumerate() {
            for &j in &members[n + 1..] {
                // A contact is never its own duplicate, whatever lists it twice.
                if i == j || profiles[i].id == profiles[j].id {
                    continue;
                }
                let (a, b) = if profiles[i].id < profiles[j].id {
                    (i, j)
                } else {
                    (j, i)
                };
                if !seen.insert((a, b)) {
                    continue;
                }
                stats.comparisons += 1;
                if let Some((confidence, reasons)) = score(&profiles[a], &profiles[b], &counts)
                    && confidence >= threshold
                {
                    pairs.push(ScoredPair {
                        a,
                        b,
                        confidence,
                        reasons,
                    });
                }
            }
        }
    }
    (pairs, stats)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{CompanyName, NewContact, PersonName, Phone, TenantId};

    fn contact(
        email: &str,
        first: &str,
        last: &str,
        company: Option<&str>,
        phone: Option<&str>,
    ) -> Contact {
        let mut new = NewContact::new(
            Email::parse(email).unwrap(),
            PersonName::parse(first).unwrap(),
            PersonName::parse(last).unwrap(),
        );
        new.company = company.map(|c| CompanyName::parse(c).unwrap());
        new.phone = phone.map(|p| Phone::parse(p).unwrap());
        Contact::create(TenantId::new(), new, chrono::Utc::now())
    }

    fn profile(
        email: &str,
        first: &str,
        last: &str,
        company: Option<&str>,
        phone: Option<&str>,
    ) -> ContactProfile {
        ContactProfile::of(
            &contact(email, first, last, company, phone),
            phonenumber::country::Id::US,
        )
        .unwrap()
    }

    fn pair(p: &ContactProfile, q: &ContactProfile) -> Option<(f64, Vec<DuplicateReason>)> {
        score(p, q, &NameCounts::of(&[p.clone(), q.clone()]))
    }

    #[test]
    fn a_nickname_and_one_phone_in_two_formats_are_one_person() {
        let p = profile(
            "robert.smith@acme.example",
            "Robert",
            "Smith",
            None,
            Some("(415) 555-0134"),
        );
        let q = profile(
            "bob.smith@acme.example",
            "Bob",
            "Smith",
            None,
            Some("+1 415.555.0134"),
        );
        let (confidence, reasons) = pair(&p, &q).unwrap();
        assert!(confidence > 0.99, "{confidence}");
        assert!(reasons.contains(&DuplicateReason::SamePhone));
        assert!(reasons.contains(&DuplicateReason::Nickname));
        assert!(reasons.contains(&DuplicateReason::SameEmailDomainSimilarName));
    }

    #[test]
    fn swapped_names_with_the_same_local_part_elsewhere_are_one_person() {
        let p = profile("p.nakamura@globex.example", "Priya", "Nakamura", None, None);
        let q = profile("P.Nakamura@gmail.com", "NAKAMURA", "priya", None, None);
        let (confidence, reasons) = pair(&p, &q).unwrap();
        assert!(confidence >= 0.8, "{confidence}");
        assert!(reasons.contains(&DuplicateReason::SwappedNames));
        assert!(reasons.contains(&DuplicateReason::SameLocalPartOtherDomain));
    }

    #[test]
    fn the_same_name_at_the_same_company_with_accents_and_a_typo_in_the_address() {
        let p = profile(
            "ines.mendez@initech.example",
            "Inés",
            "Méndez",
            Some("Initech"),
            None,
        );
        let q = profile(
            "ines.mednez@initech.example",
            "INES",
            "MENDEZ",
            Some("initech"),
            None,
        );
        let (confidence, reasons) = pair(&p, &q).unwrap();
        assert!(confidence >= 0.8, "{confidence}");
        assert!(reasons.contains(&DuplicateReason::SameNameSameCompany));
    }

    #[test]
    fn a_typo_in_a_name_at_one_domain_is_one_person() {
        let p = profile(
            "katherine.holloway@acme.example",
            "Katherine",
            "Holloway",
            None,
            None,
        );
        let q = profile(
            "katherine.hollowy@acme.example",
            "Katherine",
            "Hollowy",
            None,
            None,
        );
        let (confidence, reasons) = pair(&p, &q).unwrap();
        assert!(confidence >= 0.8, "{confidence}");
        assert_eq!(reasons, vec![DuplicateReason::SameEmailDomainSimilarName]);
    }

    #[test]
    fn different_people_sharing_a_common_surname_at_gmail_are_no_pair() {
        let people = [
            profile(
                "john.smith@gmail.com",
                "John",
                "Smith",
                None,
                Some("212 555 0101"),
            ),
            profile(
                "joan.smith@gmail.com",
                "Joan",
                "Smith",
                None,
                Some("212 555 0102"),
            ),
            profile("jane.smith@gmail.com", "Jane", "Smith", None, None),
            profile("jsmith@gmail.com", "James", "Smith", None, None),
            profile("mary.smith@gmail.com", "Mary", "Smith", None, None),
        ];
        let (pairs, stats) = candidate_pairs(&people, 0.8, 1000);
        assert!(
            stats.comparisons >= 10,
            "they share a block and are compared"
        );
        assert!(pairs.is_empty(), "{pairs:?}");
    }

    #[test]
    fn a_block_over_the_cap_is_left_out_and_counted() {
        let people: Vec<ContactProfile> = (0..5)
            .map(|i| {
                profile(
                    &format!("a{i}@gmail.com"),
                    "Ann",
                    &format!("Lee{i}"),
                    None,
                    None,
                )
            })
            .collect();
        let (_, stats) = candidate_pairs(&people, 0.8, 4);
        assert_eq!(
            stats.oversized_blocks, 1,
            "the gmail.com + ann block of five"
        );
        assert_eq!(stats.comparisons, 0);
    }

    #[test]
    fn names_too_far_apart_are_not_scored() {
        let p = profile(
            "a@acme.example",
            "Alice",
            "Walker",
            None,
            Some("415 555 0100"),
        );
        let q = profile(
            "b@acme.example",
            "Bob",
            "Walker",
            None,
            Some("415 555 0100"),
        );
        assert!(
            pair(&p, &q).is_none(),
            "a shared switchboard number is not a person"
        );
    }

    #[test]
    fn names_without_letters_or_digits_are_never_alike() {
        let p = profile(
            "one@acme.example",
            "\u{1F600}",
            "\u{1F600}",
            Some("Acme"),
            None,
        );
        let q = profile("two@acme.example", "\u{1F389}", "--", Some("Acme"), None);
        assert!(pair(&p, &q).is_none(), "{:?}", pair(&p, &q));
        let p = profile("ann@acme.example", "\u{2014}", "Smith", None, None);
        let q = profile("bob@acme.example", "\u{2605}", "Smith", None, None);
        assert!(pair(&p, &q).is_none(), "{:?}", pair(&p, &q));
    }

    fn arb_contact() -> impl Strategy<Value = Contact> {
        let names = prop::sample::select(vec![
            "Robert", "Bob", "Smith", "Smyth", "Ann", "Anne", "Zoë", "Zoe", "Lee", "Li", "Müller",
        ]);
        let domains = prop::sample::select(vec!["gmail.com", "acme.example", "globex.example"]);
        let phones = prop::option::of(prop::sample::select(vec![
            "(415) 555-0134",
            "+1 415 555 0134",
            "415 555 0199",
        ]));
        (names.clone(), names, domains, phones, 0u32..50)
            .prop_map(|(f, l, d, ph, n)| contact(&format!("{}{n}@{d}", fold(f)), f, l, None, ph))
    }

    proptest! {
        #[test]
        fn a_score_is_in_0_to_1_symmetric_and_deterministic(a in arb_contact(), b in arb_contact()) {
            let us = phonenumber::country::Id::US;
            let (p, q) = (ContactProfile::of(&a, us).unwrap(), ContactProfile::of(&b, us).unwrap());
            let counts = NameCounts::of(&[p.clone(), q.clone()]);
            let forward = score(&p, &q, &counts);
            let backward = score(&q, &p, &counts);
            if let Some((c, _)) = &forward {
                prop_assert!((0.0..=1.0).contains(c));
            }
            prop_assert_eq!(&forward, &backward);
            prop_assert_eq!(&forward, &score(&p, &q, &counts));
        }

        #[test]
        fn a_contact_is_never_paired_with_itself_and_pairs_are_deterministic(
            people in prop::collection::vec(arb_contact(), 0..30)
        ) {
            let us = phonenumber::country::Id::US;
            let profiles: Vec<ContactProfile> =
                people.iter().filter_map(|c| ContactProfile::of(c, us)).collect();
            let (pairs, _) = candidate_pairs(&profiles, 0.0, 1000);
            let (again, _) = candidate_pairs(&profiles, 0.0, 1000);
            let key = |v: &[ScoredPair]| v.iter().map(|p| (p.a, p.b, p.confidence.to_bits())).collect::<Vec<_>>();
            prop_assert_eq!(key(&pairs), key(&again));
            for p in &pairs {
                prop_assert_ne!(profiles[p.a].id, profiles[p.b].id);
                prop_assert!(profiles[p.a].id < profiles[p.b].id);
            }
        }
    }
}
