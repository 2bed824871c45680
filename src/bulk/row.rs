//! One imported row, from CSV cells or a JSON object to a validated
//! [`NewContact`]: column names and their aliases, custom fields, and every
//! field error at once.

use serde_json::{Map, Value};

use crate::{
    domain::{CompanyDomain, Metadata, NewContact, NewContactDto, TagName},
    error::FieldError,
};

/// Tag names as one CSV cell: joined by `;`, with a `;` or a `\` inside a
/// name written `\;` or `\\` (a tag name may hold either), so that
/// [`split_tags_cell`] gives the names back.
pub(crate) fn tags_cell<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut cell = String::new();
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            cell.push(';');
        }
        for ch in name.chars() {
            if matches!(ch, ';' | '\\') {
                cell.push('\\');
            }
            cell.push(ch);
        }
    }
    cell
}

/// The tag names of a CSV cell ([`tags_cell`]): split at each `;` not
/// written `\;`; `\;` and `\\` stand for `;` and `\`, and any other
/// `\` for itself (so a cell written before names were escaped reads as
/// it did, unless a `\` in it stood before a `;` or a `\`: a name ending
/// in `\` and followed by another, or holding `\;` or `\\`).
pub(crate) fn split_tags_cell(cell: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut name = String::new();
    let mut chars = cell.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if matches!(chars.peek(), Some(';' | '\\')) => {
                name.extend(chars.next());
            }
            ';' => names.push(std::mem::take(&mut name)),
            _ => name.push(ch),
        }
    }
    names.push(name);
    names
}

/// What a column of an imported file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Column {
    Email,
    FirstName,
    LastName,
    Company,
    Title,
    Phone,
    LeadSource,
    /// The domain of the company the contact works for.
    CompanyDomain,
    /// The owning user's id.
    Owner,
    /// Tag names, `;`-separated (or a JSON array of names).
    Tags,
    /// A JSON object of custom fields.
    Metadata,
    /// When the contact was created in the system it comes from (RFC 3339).
    CreatedAt,
    /// When it last changed there (RFC 3339).
    UpdatedAt,
    /// Exported for information, assigned by the store on import.
    Ignored,
    /// An unknown column: a custom field under this (trimmed) name.
    Custom(String),
}

impl Column {
    /// The column a header names: case, spaces, `-` and `_` do not matter
    /// (`E-mail`, `First Name`, `first_name`), and common aliases are known.
    pub(crate) fn from_header(header: &str) -> Column {
        let header = header.trim_start_matches('\u{feff}').trim();
        let key: String = header
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        match key.as_str() {
            "email" | "emailaddress" | "mail" => Column::Email,
            "firstname" | "givenname" | "first" | "forename" => Column::FirstName,
            "lastname" | "surname" | "familyname" | "last" => Column::LastName,
            "company" | "companyname" | "organization" | "organisation" | "account" => {
                Column::Company
            }
            "title" | "jobtitle" | "position" => Column::Title,
            "phone" | "phonenumber" | "telephone" | "tel" | "mobile" => Column::Phone,
            "leadsource" | "source" => Column::LeadSource,
            "metadata" | "customfields" => Column::Metadata,
            "companydomain" => Column::CompanyDomain,
            "owner" => Column::Owner,
            "tags" => Column::Tags,
            "createdat" => Column::CreatedAt,
            "updatedat" => Column::UpdatedAt,
            "id" | "tenantid" | "companyid" | "score" | "active" | "version" => Column::Ignored,
            _ => Column::Custom(header.to_string()),
        }
    }

    /// The field name errors are reported under.
    pub(crate) fn field(&self) -> &str {
        match self {
            Column::Email => "email",
            Column::FirstName => "first_name",
            Column::LastName => "last_name",
            Column::Company => "company",
            Column::Title => "title",
            Column::Phone => "phone",
            Column::LeadSource => "lead_source",
            Column::CompanyDomain => "company_domain",
            Column::Owner => "owner",
            Column::Tags => "tags",
            Column::CreatedAt => "created_at",
            Column::UpdatedAt => "updated_at",
            Column::Metadata | Column::Ignored => "metadata",
            Column::Custom(name) => name,
        }
    }
}

/// Two texts for one field that are one value: equal once trimmed and
/// compared without case (`Ada@Example.com` and `ada@example.com`, a
/// phone with a trailing space).
pub(crate) fn same_text(a: &str, b: &str) -> bool {
    crate::domain::caseless_key(a.trim()) == crate::domain::caseless_key(b.trim())
}

/// A JSON string of nothing but white space.
fn is_blank(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.trim().is_empty())
}

/// Two JSON values for one field that are one value: texts as
/// [`same_text`] has them, numbers by value, anything else equal.
pub(super) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(a), Value::String(b)) => same_text(a, b),
        // `1` and `1.0` are one number, as custom fields compare them.
        (Value::Number(x), Value::Number(y)) => {
            x == y || x.as_f64().is_some_and(|x| Some(x) == y.as_f64())
        }
        _ => a == b,
    }
}

/// The cells of one row, gathered before validation.
#[derive(Debug, Default)]
pub(crate) struct RawContact {
    dto: NewContactDto,
    metadata: Option<Map<String, Value>>,
    custom: Map<String, Value>,
    company_domain: Option<String>,
    tags: Vec<String>,
    errors: Vec<FieldError>,
}

/// A validated row: the contact, the domain of its company (resolved to
/// the company before the upsert) and the names of its tags (attached
/// after it).
#[derive(Debug, Clone)]
pub(crate) struct ContactRow {
    pub(crate) contact: NewContact,
    pub(crate) company_domain: Option<CompanyDomain>,
    pub(crate) tags: Vec<TagName>,
}

impl RawContact {
    /// Records an error found before validation (bad UTF-8, wrong types);
    /// validation errors on the same field are then not repeated.
    pub(crate) fn error(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// Refuses the row for giving `column`'s field two different values
    /// (two columns or keys that name it: `email` and `E-mail`, `Phone`
    /// and `Mobile`, one header written twice). Which to take is not for
    /// the import to guess; a blank cell, or the same value twice, is no
    /// conflict.
    fn named_twice(&mut self, column: &Column) {
        let field = column.field().to_string();
        if self
            .errors
            .iter()
            .any(|e| e.field == field && e.code == "duplicate")
        {
            return;
        }
        self.error(FieldError::new(
            field,
            "duplicate",
            "is given two different values in the row (two columns or keys name it): keep one",
        ));
    }

    /// Sets a text cell; blank cells are absent.
    pub(crate) fn text(&mut self, column: &Column, value: &str) {
        if value.trim().is_empty() {
            return;
        }
        let slot = match column {
            Column::Email => &mut self.dto.email,
            Column::FirstName => &mut self.dto.first_name,
            Column::LastName => &mut self.dto.last_name,
            Column::Company => &mut self.dto.company,
            Column::Title => &mut self.dto.title,
            Column::Phone => &mut self.dto.phone,
            Column::LeadSource => &mut self.dto.lead_source,
            Column::Owner => &mut self.dto.owner,
            Column::CreatedAt => &mut self.dto.created_at,
            Column::UpdatedAt => &mut self.dto.updated_at,
            Column::CompanyDomain => &mut self.company_domain,
            Column::Tags => {
                self.tags.extend(split_tags_cell(value));
                return;
            }
            Column::Metadata => {
                match serde_json::from_str::<Value>(value) {
                    Ok(v) => self.json(column, v),
                    Err(e) => self.error(FieldError::new(
                        "metadata",
                        "invalid_format",
                        format!("is not JSON ({e})"),
                    )),
                }
                return;
            }
            Column::Ignored => return,
            Column::Custom(_) => {
                self.json(column, Value::String(value.to_string()));
                return;
            }
        };
        match slot {
            Some(given) if !same_text(given, value) => self.named_twice(column),
            Some(_) => {}
            None => *slot = Some(value.to_string()),
        }
    }

    /// Sets a field from a JSON value: text fields take strings (null is
    /// absent), `metadata` takes an object, custom fields take anything.
    pub(crate) fn json(&mut self, column: &Column, value: Value) {
        match (column, value) {
            (Column::Ignored, _) | (_, Value::Null) => {}
            (Column::Custom(name), v) => match self.custom.get(name) {
                // A blank string is what a blank cell would be: absent.
                _ if is_blank(&v) => {
                    if !self.custom.contains_key(name) {
                        self.custom.insert(name.clone(), v);
                    }
                }
                Some(given) if is_blank(given) => {
                    self.custom.insert(name.clone(), v);
                }
                Some(given) if !same_value(given, &v) => self.named_twice(column),
                Some(_) => {}
                None => {
                    self.custom.insert(name.clone(), v);
                }
            },
            (Column::Metadata, Value::Object(map)) => match &self.metadata {
                Some(given) if *given != map => self.named_twice(column),
                _ => self.metadata = Some(map),
            },
            (Column::Tags, Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => self.tags.push(s),
                        _ => self.error(FieldError::new(
                            "tags",
                            "invalid_format",
                            "must hold tag names as strings",
                        )),
                    }
                }
            }
            (Column::Metadata, _) => self.error(FieldError::new(
                "metadata",
                "invalid_format",
                "must be a JSON object",
            )),
            (c, Value::String(s)) => self.text(c, &s),
            (c, _) => {
                let field = c.field().to_string();
                self.error(FieldError::new(field, "invalid_format", "must be a string"));
            }
        }
    }

    /// Validates the row through the domain constructors, reporting every
    /// field error. Without a lead source, the contact's is `import`.
    pub(crate) fn finish(mut self) -> Result<ContactRow, Vec<FieldError>> {
        let mut metadata = self.metadata.take().unwrap_or_default();
        // Custom columns add to (and override) the `metadata` column. Each
        // is checked on its own first, so that a bad one is reported under
        // its own header (the whole object can then only be too large).
        for (name, value) in std::mem::take(&mut self.custom) {
            // A column with a blank header has no name of its own.
            let field = if name.is_empty() { "metadata" } else { &name };
            let alone = Map::from_iter([(name.clone(), value)]);
            match Metadata::parse_field(field, Value::Object(alone)) {
                Ok(field) => metadata.extend(field.as_map().clone()),
                Err(e) => self.errors.push(e),
            }
        }
        self.dto.metadata = Some(Value::Object(metadata));
        if self.dto.lead_source.is_none() {
            self.dto.lead_source = Some("import".to_string());
        }
        let company_domain = match self.company_domain.as_deref() {
            Some(d) => match CompanyDomain::parse_field("company_domain", d) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.errors.push(e);
                    None
                }
            },
            None => None,
        };
        let tags = match super::companies::parse_tag_names(self.tags.iter().map(String::as_str)) {
            Ok(t) => t,
            Err(e) => {
                self.errors.extend(e);
                Vec::new()
            }
        };
        let errors = self.errors;
        match NewContact::try_from(self.dto) {
            Ok(contact) if errors.is_empty() => Ok(ContactRow {
                contact,
                company_domain,
                tags,
            }),
            Ok(_) => Err(errors),
            Err(validation) => {
                let mut all = errors;
                let reported: Vec<String> = all.iter().map(|e| e.field.clone()).collect();
                all.extend(
                    validation
                        .as_slice()
                        .iter()
                        .filter(|e| !reported.contains(&e.field))
                        .cloned(),
                );
                Err(all)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_whatever_their_casing_spacing_and_punctuation() {
        assert_eq!(Column::from_header("E-mail"), Column::Email);
        assert_eq!(Column::from_header("\u{feff}Email Address"), Column::Email);
        assert_eq!(Column::from_header("First Name"), Column::FirstName);
        assert_eq!(Column::from_header("last_name"), Column::LastName);
        assert_eq!(Column::from_header("Job Title"), Column::Title);
        assert_eq!(
            Column::from_header(" Shoe size "),
            Column::Custom("Shoe size".into())
        );
    }

    #[test]
    fn a_row_with_several_bad_fields_reports_each_of_them() {
        let mut raw = RawContact::default();
        raw.text(&Column::Email, "nope");
        raw.text(&Column::Phone, "abc");
        let errors = raw.finish().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"email"), "{fields:?}");
        assert!(fields.contains(&"first_name"), "{fields:?}");
        assert!(fields.contains(&"last_name"), "{fields:?}");
        assert!(fields.contains(&"phone"), "{fields:?}");
    }
}
