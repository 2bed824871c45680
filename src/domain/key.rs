//! The one definition of "the same text, ignoring case": the caseless key
//! that email uniqueness, email lookups, search prefixes and the name sort
//! are computed from, on every backend.
//!
//! A database's `lower()` depends on its `LC_CTYPE` (and its Unicode
//! tables on the server's version), so two backends — or two databases of
//! one backend — that lower-case text themselves disagree on which emails
//! clash and in which order names sort. The key is therefore computed here,
//! in Rust, once per value; PostgreSQL stores it in a column with the `"C"`
//! collation (byte order, which is code-point order in UTF-8) and indexes
//! it, and the in-memory store computes the same function.

use unicode_normalization::UnicodeNormalization;

/// The caseless key of `text`: equal for two texts exactly when they are
/// the same ignoring case and Unicode normalisation.
///
/// It is the text decomposed (NFD), with every character mapped to its
/// upper case and then to its lower case (full mappings, so `ß` and `SS`
/// meet at `ss`, `ẞ` and `ß` too), repeated until nothing changes, then
/// composed again (NFC). So:
///
/// - a character and its upper- and lower-case forms have one key, for
///   every Unicode scalar value (`Ᲊ`/`ᲊ`, `Σ`/`σ`/`ς`, `İ`/`i̇`, `K` (Kelvin)/`k`);
/// - a precomposed character and its decomposed form have one key
///   (`é` and `e` + U+0301);
/// - the key of a key is itself, and ASCII text is simply lower-cased.
///
/// One exception, as in Unicode's canonical caseless match (D145): U+0345
/// COMBINING GREEK YPOGEGRAMMENI is a mark whose upper case is a letter
/// (`Ι`), so upper-casing a text moves the marks that follow it onto that
/// letter: `"\u{345}\u{300}"` and its `to_uppercase()` have two keys.
///
/// Keys compare in code-point order (Rust's `str` order, PostgreSQL's
/// `COLLATE "C"`). They are computed with the Unicode tables of the Rust
/// standard library and of `unicode-normalization` this crate was built
/// with; keys stored by a build with older tables differ only for
/// characters those tables did not know.
///
/// ```
/// use crm_core::domain::caseless_key;
///
/// assert_eq!(caseless_key("Grace@Example.COM"), "grace@example.com");
/// assert_eq!(caseless_key("STRASSE"), caseless_key("straße"));
/// assert_eq!(caseless_key("Ᲊmile"), caseless_key("ᲊmile"));
/// assert_eq!(caseless_key("E\u{301}mile"), caseless_key("Émile"));
/// ```
pub fn caseless_key(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let mut current: String = text.nfd().collect();
    // Upper then lower case reaches a fixed point after at most two rounds
    // for every scalar value (`ẞ` → `ß` → `SS` → `ss`); the bound only
    // guards against a future table that would cycle.
    for _ in 0..4 {
        let next: String = current
            .chars()
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
            .collect();
        if next == current {
            break;
        }
        current = next;
    }
    current.nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::caseless_key;

    fn lower(s: &str) -> String {
        s.chars().flat_map(char::to_lowercase).collect()
    }

    fn upper(s: &str) -> String {
        s.chars().flat_map(char::to_uppercase).collect()
    }

    #[test]
    fn every_scalar_value_shares_its_key_with_its_upper_and_lower_case() {
        let mut cased = 0;
        for c in (0..=0x10_FFFF_u32).filter_map(char::from_u32) {
            let s = c.to_string();
            let key = caseless_key(&s);
            assert_eq!(
                caseless_key(&key),
                key,
                "the key of U+{:04X} is stable",
                c as u32
            );
            let (l, u) = (lower(&s), upper(&s));
            if l == s && u == s {
                continue;
            }
            cased += 1;
            assert_eq!(
                caseless_key(&l),
                key,
                "U+{:04X} and its lower case",
                c as u32
            );
            assert_eq!(
                caseless_key(&u),
                key,
                "U+{:04X} and its upper case",
                c as u32
            );
        }
        assert!(
            cased > 2_800,
            "only {cased} scalar values have a case mapping"
        );
    }

    #[test]
    fn keys_of_ascii_are_its_lower_case() {
        assert_eq!(
            caseless_key("Ada.Lovelace+CRM@Example.ORG"),
            "ada.lovelace+crm@example.org"
        );
    }

    #[test]
    fn the_sharp_s_its_capital_and_double_s_have_one_key() {
        let k = caseless_key("ss");
        assert_eq!(caseless_key("ß"), k);
        assert_eq!(caseless_key("ẞ"), k);
        assert_eq!(caseless_key("SS"), k);
    }

    #[test]
    fn composed_and_decomposed_forms_have_one_key() {
        assert_eq!(caseless_key("e\u{301}"), caseless_key("é"));
        assert_eq!(caseless_key("E\u{301}"), caseless_key("é"));
        assert_eq!(caseless_key("é"), "é");
    }
}
