//! CSV cells that a spreadsheet would run as formulas ("CSV injection"):
//! how exports neutralise them and how imports read them back.
//!
//! The scheme is documented on [`CsvFormulas`].

use std::borrow::Cow;

/// Whether CSV cells that would start a spreadsheet formula are neutralised
/// (on export) or read back (on import): the defence against "CSV
/// injection".
///
/// A spreadsheet reads a cell that starts with `=`, `+`, `-` or `@` (and,
/// in some, with a tab or a carriage return) as a formula, which can run
/// commands or leak data when someone opens an export. With
/// [`Neutralise`](Self::Neutralise), an export writes such a cell with one
/// single quote `'` in front, as OWASP recommends; a spreadsheet shows it
/// as text.
///
/// To keep this reversible, a value that itself starts with `'` gets one
/// more `'` in front too. So every cell an export prefixed starts with `'`
/// followed by one of `= + - @ ' tab CR`, and an import removes the first
/// `'` of exactly those cells: `'=1+1` reads as `=1+1`, `''t Hooft` as
/// `'t Hooft`. A cell that starts with `'` followed by anything else
/// (`'t Hooft` in a file written by hand) was never prefixed and reads as
/// it is. Every value thus makes the round trip export → import exactly.
/// The one reading this changes is a cell of a file written by something
/// else that means `'=x` or `''x` literally: it reads as `=x` or `'x`;
/// import such a file with [`Verbatim`](Self::Verbatim).
///
/// Exports use the setting to choose what they write, imports to choose
/// how they read cells: a file reads back exactly with the setting it was
/// written with. JSON Lines are never changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CsvFormulas {
    /// Exports put a `'` in front of every cell that starts with `=`, `+`,
    /// `-`, `@`, tab, carriage return or `'`; imports remove it again. The
    /// default: safe to open in a spreadsheet, and read back exactly.
    #[default]
    Neutralise,
    /// Cells are written and read exactly as they are: for programs that
    /// read the file, never for a spreadsheet.
    Verbatim,
}

/// The characters a neutralised cell may not start with.
fn is_formula_start(c: char) -> bool {
    matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r' | '\'')
}

impl CsvFormulas {
    /// The cell an export writes for `value`.
    pub(crate) fn write<'a>(self, value: &'a str) -> Cow<'a, str> {
        match self {
            CsvFormulas::Neutralise if value.starts_with(is_formula_start) => {
                Cow::Owned(format!("'{value}"))
            }
            _ => Cow::Borrowed(value),
        }
    }

    /// The value of a cell an import reads.
    pub(crate) fn read(self, cell: &str) -> &str {
        match self {
            CsvFormulas::Neutralise => match cell.strip_prefix('\'') {
                Some(rest) if rest.starts_with(is_formula_start) => rest,
                _ => cell,
            },
            CsvFormulas::Verbatim => cell,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_cell_that_would_start_a_formula_gets_one_quote_in_front() {
        let n = CsvFormulas::Neutralise;
        for (value, cell) in [
            ("=1+1", "'=1+1"),
            ("+44 20 7946 0958", "'+44 20 7946 0958"),
            ("-- call back", "'-- call back"),
            ("@channel", "'@channel"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("'t Hooft", "''t Hooft"),
            ("plain", "plain"),
            ("", ""),
        ] {
            assert_eq!(n.write(value), cell);
            assert_eq!(n.read(cell), value);
        }
    }

    #[test]
    fn a_quote_not_followed_by_a_formula_character_is_read_as_it_is() {
        assert_eq!(CsvFormulas::Neutralise.read("'t Hooft"), "'t Hooft");
        assert_eq!(CsvFormulas::Neutralise.read("'"), "'");
        assert_eq!(CsvFormulas::Verbatim.read("'=1"), "'=1");
        assert_eq!(CsvFormulas::Verbatim.write("=1"), "=1");
    }

    proptest! {
        #[test]
        fn every_value_reads_back_exactly_and_no_neutralised_cell_starts_a_formula(
            value in "['=+\\-@\t\r a-z]{0,6}",
        ) {
            let cell = CsvFormulas::Neutralise.write(&value);
            prop_assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']));
            prop_assert_eq!(CsvFormulas::Neutralise.read(&cell), value.as_str());
        }
    }
}
