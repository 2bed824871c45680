//! Caseless keys: an email is one email in every casing, for every Unicode
//! character with a case mapping, and the name sort pages through every
//! contact exactly once — the same on every backend, whatever the
//! database's locale. And the placeholder email of an erased contact is
//! reserved to it.

use std::collections::BTreeSet;

use super::prelude::*;
use super::support::{begin, create, expect_duplicate, expect_validation, new_contact, ok, search};

fn lower(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

fn upper(s: &str) -> String {
    s.chars().flat_map(char::to_uppercase).collect()
}

/// Every Unicode scalar value with a case mapping, with its distinct forms:
/// itself first, then its lower and upper case where they differ.
pub(crate) fn cased_characters() -> Vec<(char, Vec<String>)> {
    (0..=0x10_FFFF_u32)
        .filter_map(char::from_u32)
        .filter_map(|c| {
            let s = c.to_string();
            let mut forms = vec![s.clone()];
            for f in [lower(&s), upper(&s)] {
                if !forms.contains(&f) {
                    forms.push(f);
                }
            }
            (forms.len() > 1).then_some((c, forms))
        })
        .collect()
}

/// The email of one form of `c`: unique to `c` (its code point is in it),
/// so that characters sharing a key (`K` and the Kelvin sign) do not meet.
fn cased_email(c: char, form: &str) -> Email {
    let address = format!("{form}mile.{:x}@example.com", u32::from(c));
    Email::parse(&address).unwrap_or_else(|e| panic!("{address:?} is a valid email: {e}"))
}

/// Contract: emails are unique per tenant case-insensitively for every
/// character with a case mapping (all ~3,000 of them): once one form of
/// an email is stored, creating it in another form is `DuplicateEmail`
/// naming the holder, looking it up in any form finds the holder, and
/// upserting it in any form updates the holder — never a second contact.
pub async fn every_cased_character_and_its_other_casings_are_one_email(store: &DynStore) {
    let t = TenantId::new();
    let chars = cased_characters();
    let mut tx = begin(store, t).await;
    let mut holders = Vec::with_capacity(chars.len());
    for (c, forms) in &chars {
        let first = cased_email(*c, &forms[0]);
        let held = ok(
            tx.create_contact(NewContact::new(first.clone(), person(), person()))
                .await,
            "create a contact",
        );
        for form in &forms[1..] {
            let other = cased_email(*c, form);
            expect_duplicate(
                tx.create_contact(NewContact::new(other.clone(), person(), person()))
                    .await,
                held.id,
                &format!(
                    "U+{:04X}: {first} is stored, {other} is the same email",
                    *c as u32
                ),
            );
            let found = ok(tx.get_contact_by_email(&other).await, "get by email");
            assert_eq!(
                found.map(|f| f.id),
                Some(held.id),
                "U+{:04X}: looking up {other} finds {first}",
                *c as u32
            );
        }
        holders.push(held.id);
    }
    ok(tx.commit().await, "commit");

    // The other forms again, as one upsert batch: each updates (or leaves
    // unchanged) the contact holding its email.
    let mut rows = Vec::new();
    let mut expected = Vec::new();
    for ((c, forms), id) in chars.iter().zip(&holders) {
        for form in &forms[1..] {
            let mut row = NewContact::new(cased_email(*c, form), person(), person());
            row.first_name = PersonName::parse("Émile").expect("a valid name");
            rows.push(row);
            expected.push((*c, *id));
        }
    }
    let mut tx = begin(store, t).await;
    let outcomes = ok(
        tx.upsert_contacts(&rows, ConflictPolicy::Incoming).await,
        "upsert the other casings",
    );
    ok(tx.commit().await, "commit");
    assert_eq!(outcomes.len(), rows.len(), "one outcome per row");
    for (outcome, (c, id)) in outcomes.iter().zip(&expected) {
        assert!(
            matches!(outcome, UpsertOutcome::Updated(i) | UpsertOutcome::Unchanged(i) if i == id),
            "U+{:04X}: upserting another casing updates contact {id}, got {outcome:?}",
            *c as u32
        );
    }
}

fn person() -> PersonName {
    PersonName::parse("Emile").expect("a valid name")
}

/// Contract: the name sort orders by the caseless keys of the last and
/// first names (then id), in code-point order, and following `next_cursor`
/// visits every contact exactly once in both directions — for names made
/// of any cased character, in any casing.
pub async fn name_sorted_paging_visits_every_contact_once_whatever_the_casing(store: &DynStore) {
    let t = TenantId::new();
    let chars = cased_characters();
    let rows: Vec<NewContact> = chars
        .iter()
        .map(|(c, forms)| {
            let name = |form: &str| PersonName::parse(&format!("{form}x")).expect("a valid name");
            // Last name in the character's own form, first name in another.
            NewContact::new(
                cased_email(*c, &forms[0]),
                name(forms.last().expect("two forms or more")),
                name(&forms[0]),
            )
        })
        .collect();
    let mut tx = begin(store, t).await;
    let outcomes = ok(
        tx.upsert_contacts(&rows, ConflictPolicy::Incoming).await,
        "create the contacts",
    );
    ok(tx.commit().await, "commit");
    let ids: Vec<ContactId> = outcomes.iter().map(|o| o.id()).collect();
    let mut expected: Vec<(String, String, uuid::Uuid)> = rows
        .iter()
        .zip(&ids)
        .map(|(r, id)| {
            (
                caseless_key(r.last_name.as_str()),
                caseless_key(r.first_name.as_str()),
                id.as_uuid(),
            )
        })
        .collect();
    expected.sort();
    let ascending: Vec<ContactId> = expected
        .iter()
        .map(|(_, _, id)| ContactId::from_uuid(*id))
        .collect();
    for (sort, limit) in [
        (ContactSort::NameAsc, 7),
        (ContactSort::NameDesc, 7),
        (ContactSort::NameAsc, 500),
    ] {
        let q = ContactQuery::new().with_sort(sort);
        let seen = collect_pages!(limit, async |page| {
            search(store, t, &q.clone().with_page(page)).await
        })
        .await;
        let seen: Vec<ContactId> = seen.iter().map(|c| c.id).collect();
        let distinct: BTreeSet<ContactId> = seen.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            seen.len(),
            "{sort:?} by {limit}: no contact is listed twice"
        );
        let mut want = ascending.clone();
        if sort == ContactSort::NameDesc {
            want.reverse();
        }
        assert!(
            seen == want,
            "{sort:?} by {limit}: every contact once, by the caseless keys of last and \
             first name: {} listed of {}, first difference at {:?}",
            seen.len(),
            want.len(),
            seen.iter().zip(&want).position(|(a, b)| a != b)
        );
    }
}

/// Contract: the placeholder email an erasure gives a contact
/// (`erased-<id>@erased.invalid`) can be held by no other contact — the
/// domain `erased.invalid` is refused for every email a caller gives, in
/// any casing — so erasing a contact always succeeds and never makes two
/// contacts share an email.
pub async fn only_an_erased_contact_holds_its_placeholder_email(store: &DynStore) {
    let t = TenantId::new();
    let doomed = create(store, t, new_contact("doomed@example.com", "Do", "Omed")).await;
    let placeholder = erased_email(doomed.id);
    for address in [placeholder.clone(), placeholder.to_uppercase()] {
        let dto = NewContactDto {
            email: Some(address.clone()),
            first_name: Some("Squatter".into()),
            last_name: Some("Squatter".into()),
            ..NewContactDto::default()
        };
        expect_validation(
            NewContact::try_from(dto).map_err(Error::from),
            "email",
            &format!("{address} is reserved for the erased contact"),
        );
        assert!(
            Email::parse(&address).is_err(),
            "{address} is not an email a caller can give"
        );
    }
    let mut tx = begin(store, t).await;
    let erased = ok(tx.erase_contact(doomed.id).await, "erase the contact");
    ok(tx.commit().await, "commit");
    assert_eq!(erased.email.as_str(), placeholder);
    let holders = search(
        store,
        t,
        &ContactQuery {
            email_prefix: Some("erased-".into()),
            page: PageRequest::first(10),
            ..ContactQuery::new()
        },
    )
    .await;
    assert_eq!(
        holders.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        [doomed.id],
        "the erased contact alone holds its placeholder"
    );
    let again = ok(
        store
            .scope(t, &super::support::ctx())
            .get_contact(doomed.id)
            .await,
        "get the erased contact",
    );
    assert_eq!(
        again.map(|c| c.email.as_str().to_string()),
        Some(placeholder)
    );
}

/// Contract: a search prefix longer than any value it searches
/// ([`MAX_PREFIX_CHARS`](crate::store::MAX_PREFIX_CHARS)) is a validation
/// error naming it, on every backend; one at the limit is a search.
pub async fn a_search_prefix_longer_than_any_value_is_refused_naming_it(store: &DynStore) {
    let t = TenantId::new();
    let crm = store.scope(t, &super::support::ctx());
    let long = "x".repeat(crate::store::MAX_PREFIX_CHARS + 1);
    for (field, q) in [
        (
            "email_prefix",
            ContactQuery {
                email_prefix: Some(long.clone()),
                ..ContactQuery::new()
            },
        ),
        (
            "name_prefix",
            ContactQuery {
                name_prefix: Some(long.clone()),
                ..ContactQuery::new()
            },
        ),
        (
            "company_prefix",
            ContactQuery {
                company_prefix: Some(long.clone()),
                ..ContactQuery::new()
            },
        ),
    ] {
        expect_validation(
            crm.search_contacts(&q).await,
            field,
            "a prefix over the limit",
        );
    }
    let at_limit = ContactQuery {
        email_prefix: Some("x".repeat(crate::store::MAX_PREFIX_CHARS)),
        ..ContactQuery::new()
    };
    let page = ok(crm.search_contacts(&at_limit).await, "search");
    assert!(page.items.is_empty());
}
