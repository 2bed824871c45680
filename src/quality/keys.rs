//! The comparison keys of duplicate detection: names folded to their
//! letters (case by [`caseless_key`], compatibility forms and accents
//! dropped), nicknames mapped to
//! the name they shorten, email local parts as name tokens, and phone
//! numbers in E.164.

use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};

use crate::domain::{Email, Phone, caseless_key};

/// `text` folded for comparing names: its [`caseless_key`], in its
/// compatibility form (fullwidth `Ｊｏｈｎ` is `john`, the ligature `ﬁ` is
/// `fi`) and lower case again, accents (combining marks) dropped, only
/// letters and digits kept. `"Zoë O'Brien-Smith"` and `"zoe obriensmith"`
/// fold alike.
pub fn fold(text: &str) -> String {
    caseless_key(text)
        .nfkd()
        .filter(|c| !is_combining_mark(*c) && c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Common English nicknames and the names they shorten: a small table,
/// each nickname mapped to one full name (both folded).
const NICKNAMES: &[(&str, &str)] = &[
    ("abby", "abigail"),
    ("al", "albert"),
    ("alex", "alexander"),
    ("andy", "andrew"),
    ("barb", "barbara"),
    ("becky", "rebecca"),
    ("ben", "benjamin"),
    ("beth", "elizabeth"),
    ("betty", "elizabeth"),
    ("bill", "william"),
    ("billy", "william"),
    ("bob", "robert"),
    ("bobby", "robert"),
    ("charlie", "charles"),
    ("chris", "christopher"),
    ("chuck", "charles"),
    ("cindy", "cynthia"),
    ("dan", "daniel"),
    ("danny", "daniel"),
    ("dave", "david"),
    ("debbie", "deborah"),
    ("dick", "richard"),
    ("don", "donald"),
    ("drew", "andrew"),
    ("ed", "edward"),
    ("eddie", "edward"),
    ("fred", "frederick"),
    ("gabe", "gabriel"),
    ("greg", "gregory"),
    ("hank", "henry"),
    ("harry", "henry"),
    ("jack", "john"),
    ("jake", "jacob"),
    ("jeff", "jeffrey"),
    ("jen", "jennifer"),
    ("jenny", "jennifer"),
    ("jess", "jessica"),
    ("jim", "james"),
    ("jimmy", "james"),
    ("joe", "joseph"),
    ("johnny", "john"),
    ("josh", "joshua"),
    ("kate", "katherine"),
    ("kathy", "katherine"),
    ("katie", "katherine"),
    ("ken", "kenneth"),
    ("larry", "lawrence"),
    ("liz", "elizabeth"),
    ("maggie", "margaret"),
    ("mandy", "amanda"),
    ("matt", "matthew"),
    ("meg", "margaret"),
    ("mike", "michael"),
    ("molly", "mary"),
    ("nate", "nathan"),
    ("nick", "nicholas"),
    ("pam", "pamela"),
    ("pat", "patricia"),
    ("peggy", "margaret"),
    ("pete", "peter"),
    ("phil", "philip"),
    ("ray", "raymond"),
    ("rich", "richard"),
    ("rick", "richard"),
    ("rob", "robert"),
    ("ron", "ronald"),
    ("sam", "samuel"),
    ("sandy", "sandra"),
    ("steve", "steven"),
    ("sue", "susan"),
    ("ted", "edward"),
    ("tim", "timothy"),
    ("tom", "thomas"),
    ("tony", "anthony"),
    ("vicky", "victoria"),
    ("vince", "vincent"),
    ("walt", "walter"),
    ("will", "william"),
    ("zach", "zachary"),
];

/// The full name a folded first name stands for: the name itself unless
/// it is a nickname of the table.
pub fn canonical_first(folded: &str) -> &str {
    NICKNAMES
        .binary_search_by(|(nick, _)| (*nick).cmp(folded))
        .map_or(folded, |i| NICKNAMES[i].1)
}

/// True when `folded` is a nickname of the table.
pub(crate) fn is_nickname(folded: &str) -> bool {
    NICKNAMES
        .binary_search_by(|(nick, _)| (*nick).cmp(folded))
        .is_ok()
}

/// Local parts shared by many people (a role, not a person): never a
/// blocking key of their own.
const ROLE_LOCAL_PARTS: &[&str] = &[
    "admin",
    "billing",
    "contact",
    "hello",
    "help",
    "hi",
    "info",
    "mail",
    "marketing",
    "office",
    "sales",
    "support",
    "team",
];

/// The local part of `email` as a key: its caseless form with any
/// `+tag` removed, each word (split at `.`, `_` and `-`) folded and
/// a nickname replaced by its full name, words joined by `.`. `None` for an
/// erased contact's placeholder.
pub fn local_part_key(email: &Email) -> Option<String> {
    if email.is_erased_domain() {
        return None;
    }
    let (local, _) = email.normalized().rsplit_once('@')?;
    let local = local.split('+').next().unwrap_or(local);
    let words: Vec<String> = local
        .split(['.', '_', '-'])
        .map(fold)
        .filter(|w| !w.is_empty())
        .map(|w| canonical_first(&w).to_string())
        .collect();
    (!words.is_empty()).then(|| words.join("."))
}

/// True for a local part key of a role address (`info`, `sales`, …) or one
/// too short to tell people apart.
pub(crate) fn is_generic_local_part(key: &str) -> bool {
    key.chars().count() < 4 || ROLE_LOCAL_PARTS.contains(&key)
}

/// A phone number in E.164 (`+14155550134`), read as written with
/// `region` for numbers without a country code; `None` when it cannot be
/// read as a number. The extension is left out.
pub fn e164(phone: &Phone, region: phonenumber::country::Id) -> Option<String> {
    let number = phonenumber::parse(Some(region), phone.as_str()).ok()?;
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nickname_table_is_sorted_for_its_binary_search() {
        assert!(NICKNAMES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(
            NICKNAMES
                .iter()
                .all(|(n, f)| fold(n) == *n && fold(f) == *f)
        );
    }

    #[test]
    fn casing_accents_and_punctuation_fold_away() {
        assert_eq!(fold("Zoë O'Brien-Smith"), "zoeobriensmith");
        assert_eq!(fold("ÉMILE"), fold("emile"));
        assert_eq!(fold("Strauß"), fold("STRAUSS"));
    }

    #[test]
    fn compatibility_forms_fold_to_their_letters() {
        assert_eq!(fold("Ｊｏｈｎ Ｓｍｉｔｈ"), "johnsmith");
        assert_eq!(fold("Stéﬁ"), "stefi");
        assert_eq!(fold("ℌarry"), "harry");
    }

    #[test]
    fn a_nickname_stands_for_its_full_name() {
        assert_eq!(canonical_first("bob"), "robert");
        assert_eq!(canonical_first("liz"), "elizabeth");
        assert_eq!(canonical_first("robert"), "robert");
        assert!(is_nickname("bill") && !is_nickname("william"));
    }

    #[test]
    fn local_parts_become_words_with_nicknames_resolved() {
        let key = |e: &str| local_part_key(&Email::parse(e).unwrap());
        assert_eq!(key("Bob.Smith+crm@x.com").as_deref(), Some("robert.smith"));
        assert_eq!(key("robert_smith@y.org").as_deref(), Some("robert.smith"));
        assert_eq!(
            key("robert-smith77@y.org").as_deref(),
            Some("robert.smith77")
        );
        assert!(is_generic_local_part("info"));
        assert!(is_generic_local_part("jo"));
        assert!(!is_generic_local_part("robert.smith"));
    }

    #[test]
    fn phone_formats_of_one_number_meet_in_e164() {
        let us = phonenumber::country::Id::US;
        let e = |s: &str| e164(&Phone::parse(s).unwrap(), us);
        let want = Some("+14155550134".to_string());
        assert_eq!(e("(415) 555-0134"), want);
        assert_eq!(e("415.555.0134"), want);
        assert_eq!(e("+1 415 555 0134"), want);
        assert_eq!(e("4155550134 x12"), want);
        assert_eq!(
            e("+44 20 7946 0958").as_deref(),
            Some("+442079460958"),
            "a country code overrides the default region"
        );
    }
}
