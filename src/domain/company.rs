//! Companies: the organisations a tenant sells to, and the validated
//! values they are made of (their domain is in `company_domain`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    CompanyDomain, CompanyName, Currency, Metadata, Money, OriginalTimes, OwnerId, TenantId,
    Timestamp, Version,
    contact::{double_option, optional, present, required},
    deal::parse_amount_field,
    id_type,
    text::text_type,
};
use crate::domain::error::{FieldError, ValidationErrors};

id_type!(
    /// The id of a [`Company`] (UUID v7).
    CompanyId
);

text_type!(
    /// A company's industry (`"Software"`, `"Logistics"`): 1–100 characters
    /// after trimming.
    Industry, field = "industry", min = 1, max = 100, multiline = false
);

text_type!(
    /// One part of a postal address (street, city, region, postal code or
    /// country): 1–255 characters after trimming. Read it with
    /// [`parse_field`](Self::parse_field) naming the part.
    AddressPart, field = "address", min = 1, max = 255, multiline = false
);

/// The most employees a company may be recorded with.
pub const MAX_EMPLOYEES: u32 = 10_000_000;

/// A postal address; every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    /// Street and number.
    pub street: Option<AddressPart>,
    /// City.
    pub city: Option<AddressPart>,
    /// Region, state or province.
    pub region: Option<AddressPart>,
    /// Postal code.
    pub postal_code: Option<AddressPart>,
    /// Country.
    pub country: Option<AddressPart>,
}

impl Address {
    /// True when no part is set.
    pub fn is_empty(&self) -> bool {
        *self == Address::default()
    }
}

/// A company as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Company {
    /// Its id.
    pub id: CompanyId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// Its name.
    pub name: CompanyName,
    /// Its internet domain, if known.
    pub domain: Option<CompanyDomain>,
    /// Its industry, if known.
    pub industry: Option<Industry>,
    /// How many people it employs, if known (at most [`MAX_EMPLOYEES`]).
    pub employee_count: Option<u32>,
    /// Its yearly revenue, if known.
    pub annual_revenue: Option<Money>,
    /// Its postal address.
    pub address: Address,
    /// Custom fields.
    pub metadata: Metadata,
    /// The host's user who owns it, if any.
    pub owner: Option<OwnerId>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Its version, for optimistic concurrency.
    pub version: Version,
}

impl Company {
    /// A new company from validated input, version 1.
    pub fn create(tenant_id: TenantId, new: NewCompany, now: Timestamp) -> Company {
        Company {
            id: CompanyId::new(),
            tenant_id,
            name: new.name,
            domain: new.domain,
            industry: new.industry,
            employee_count: new.employee_count,
            annual_revenue: new.annual_revenue,
            address: new.address,
            metadata: new.metadata,
            owner: new.owner,
            created_at: new.original.map_or(now, |t| t.created_at()),
            updated_at: new.original.map_or(now, |t| t.updated_at()),
            version: Version::FIRST,
        }
    }

    /// The company with `patch` applied, its version bumped and
    /// `updated_at` set — or `None` when the patch changes nothing.
    pub fn patched(&self, patch: &CompanyPatch, now: Timestamp) -> Option<Company> {
        let mut next = self.clone();
        if let Some(v) = &patch.name {
            next.name = v.clone();
        }
        if let Some(v) = &patch.domain {
            next.domain = v.clone();
        }
        if let Some(v) = &patch.industry {
            next.industry = v.clone();
        }
        if let Some(v) = patch.employee_count {
            next.employee_count = v;
        }
        if let Some(v) = patch.annual_revenue {
            next.annual_revenue = v;
        }
        if let Some(v) = &patch.street {
            next.address.street = v.clone();
        }
        if let Some(v) = &patch.city {
            next.address.city = v.clone();
        }
        if let Some(v) = &patch.region {
            next.address.region = v.clone();
        }
        if let Some(v) = &patch.postal_code {
            next.address.postal_code = v.clone();
        }
        if let Some(v) = &patch.country {
            next.address.country = v.clone();
        }
        if let Some(v) = &patch.metadata {
            next.metadata = v.clone();
        }
        if let Some(v) = &patch.owner {
            next.owner = v.clone();
        }
        if next == *self {
            return None;
        }
        next.updated_at = now;
        next.version = self.version.next();
        Some(next)
    }

    /// This company (the survivor of a merge) with its blanks filled from
    /// `loser`'s values: the domain, industry, employee count, revenue and
    /// owner it lacks, the loser's whole address when it has none (an
    /// address is never pieced together from two companies), and the
    /// loser's custom fields under keys it does not have. The name and
    /// everything the survivor holds stay. `None` when nothing changes.
    ///
    /// Errors: `metadata` when the merged custom fields break the
    /// [`Metadata`] limits.
    pub fn merged_with(
        &self,
        loser: &Company,
        now: Timestamp,
    ) -> Result<Option<Company>, FieldError> {
        fn fill<T: Clone>(kept: &Option<T>, gone: &Option<T>) -> Option<Option<T>> {
            match (kept, gone) {
                (None, Some(v)) => Some(Some(v.clone())),
                _ => None,
            }
        }
        let mut map = loser.metadata.as_map().clone();
        map.extend(self.metadata.as_map().clone());
        let address = if self.address.is_empty() {
            &loser.address
        } else {
            &self.address
        };
        let patch = CompanyPatch {
            domain: fill(&self.domain, &loser.domain),
            industry: fill(&self.industry, &loser.industry),
            employee_count: fill(&self.employee_count, &loser.employee_count),
            annual_revenue: fill(&self.annual_revenue, &loser.annual_revenue),
            street: Some(address.street.clone()),
            city: Some(address.city.clone()),
            region: Some(address.region.clone()),
            postal_code: Some(address.postal_code.clone()),
            country: Some(address.country.clone()),
            // Both sides are stored values: the rules they were stored
            // under (a merge must not fail on a custom field an earlier
            // version kept).
            metadata: Some(Metadata::parse_stored(Value::Object(map))?),
            owner: fill(&self.owner, &loser.owner),
            name: None,
        };
        Ok(self.patched(&patch, now))
    }
}

/// A validated new company.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCompany {
    /// Name.
    pub name: CompanyName,
    /// Internet domain.
    pub domain: Option<CompanyDomain>,
    /// Industry.
    pub industry: Option<Industry>,
    /// Number of employees (at most [`MAX_EMPLOYEES`]).
    pub employee_count: Option<u32>,
    /// Yearly revenue.
    pub annual_revenue: Option<Money>,
    /// Postal address.
    pub address: Address,
    /// Custom fields.
    pub metadata: Metadata,
    /// The host's user who owns it.
    pub owner: Option<OwnerId>,
    /// When it was created and last changed in the system it is imported
    /// from; `None`: now. Honoured only when the company is created.
    pub original: Option<OriginalTimes>,
}

impl NewCompany {
    /// A new company with a name and nothing else.
    pub fn new(name: CompanyName) -> Self {
        NewCompany {
            name,
            domain: None,
            industry: None,
            employee_count: None,
            annual_revenue: None,
            address: Address::default(),
            metadata: Metadata::new(),
            owner: None,
            original: None,
        }
    }

    /// Sets the times it had in the system it is imported from.
    pub fn original_times(mut self, times: OriginalTimes) -> Self {
        self.original = Some(times);
        self
    }

    /// The company as every store takes it, or why it cannot be: at most
    /// [`MAX_EMPLOYEES`] employees, original times (if any) not after the
    /// current time. Every store calls it before anything else.
    pub fn checked(mut self) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if let Some(n) = self.employee_count {
            errors.check(employee_count(i64::from(n)));
        }
        if let Some(t) = self.original {
            match t.recheck(super::original::now()) {
                Ok(t) => self.original = Some(t),
                Err(e) => {
                    for e in e {
                        errors.push(e);
                    }
                }
            }
        }
        errors.finish(|| self)
    }
}

/// A number of employees, `0..=MAX_EMPLOYEES`.
fn employee_count(n: i64) -> Result<u32, FieldError> {
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_EMPLOYEES)
        .ok_or_else(|| {
            FieldError::new(
                "employee_count",
                "out_of_range",
                format!("must be 0 to {MAX_EMPLOYEES}, got {n}"),
            )
        })
}

const REVENUE_AMOUNT: &str = "annual_revenue_amount";
const REVENUE_CURRENCY: &str = "annual_revenue_currency";

/// The annual revenue sent as an amount and a currency, which go together:
/// `Some(None)` when both are absent or blank (`null` or `""`), `None` when
/// an error was recorded.
fn annual_revenue(
    errors: &mut ValidationErrors,
    amount: Option<&Value>,
    currency: Option<&str>,
) -> Option<Option<Money>> {
    let amount = amount.filter(|v| match v {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        _ => true,
    });
    let currency = currency.filter(|c| !c.trim().is_empty());
    match (amount, currency) {
        (None, None) => Some(None),
        (Some(a), Some(c)) => {
            let a = errors.check(parse_amount_field(REVENUE_AMOUNT, a));
            let c = errors.check(Currency::parse_field(REVENUE_CURRENCY, c));
            let (a, c) = (a?, c?);
            errors
                .check(Money::new_field(REVENUE_AMOUNT, a, c))
                .map(Some)
        }
        (Some(_), None) => {
            errors.push(FieldError::new(
                REVENUE_CURRENCY,
                "required",
                format!("is required with {REVENUE_AMOUNT}"),
            ));
            None
        }
        (None, Some(_)) => {
            errors.push(FieldError::new(
                REVENUE_AMOUNT,
                "required",
                format!("is required with {REVENUE_CURRENCY}"),
            ));
            None
        }
    }
}

/// Drops a caller's JSON value without recursing (it may nest deeply).
fn dispose(v: Option<Value>) {
    if let Some(v) = v {
        super::json::dispose(v);
    }
}

/// Inbound JSON for a new company, as an API receives it. Unknown fields
/// are rejected; convert with `NewCompany::try_from(dto)` to validate
/// every field.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCompanyDto {
    /// Required.
    #[serde(default)]
    pub name: Option<String>,
    /// Optional: a domain or a URL naming it; blank means none.
    #[serde(default)]
    pub domain: Option<String>,
    /// Optional; blank means none.
    #[serde(default)]
    pub industry: Option<String>,
    /// Optional: 0 to 10,000,000.
    #[serde(default)]
    pub employee_count: Option<i64>,
    /// Optional: a decimal ≥ 0, as a string (`"1250000.00"`) or a number;
    /// with `annual_revenue_currency`.
    #[serde(default)]
    pub annual_revenue_amount: Option<Value>,
    /// Optional: an ISO 4217 code; with `annual_revenue_amount`.
    #[serde(default)]
    pub annual_revenue_currency: Option<String>,
    /// Optional; blank means none.
    #[serde(default)]
    pub street: Option<String>,
    /// Optional; blank means none.
    #[serde(default)]
    pub city: Option<String>,
    /// Optional; blank means none.
    #[serde(default)]
    pub region: Option<String>,
    /// Optional; blank means none.
    #[serde(default)]
    pub postal_code: Option<String>,
    /// Optional; blank means none.
    #[serde(default)]
    pub country: Option<String>,
    /// Optional JSON object of custom fields.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Optional: the owning user's id; blank means none.
    #[serde(default)]
    pub owner: Option<String>,
    /// Optional, with `updated_at`: when it was created in the system it
    /// is imported from (RFC 3339; see [`OriginalTimes`]).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Optional, with `created_at`: when it last changed there (RFC 3339).
    #[serde(default)]
    pub updated_at: Option<String>,
}

fn address_part(field: &'static str) -> impl Fn(&str) -> Result<AddressPart, FieldError> + 'static {
    move |v| AddressPart::parse_field(field, v)
}

impl TryFrom<NewCompanyDto> for NewCompany {
    type Error = ValidationErrors;

    fn try_from(mut dto: NewCompanyDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let amount_value = dto.annual_revenue_amount.take();
        let name = errors
            .check(required("name", &dto.name).and_then(|v| CompanyName::parse_field("name", v)));
        let domain = errors.check(optional(dto.domain.as_deref(), CompanyDomain::parse));
        let industry = errors.check(optional(dto.industry.as_deref(), Industry::parse));
        let employee_count = errors.check(dto.employee_count.map(employee_count).transpose());
        let annual_revenue = annual_revenue(
            &mut errors,
            amount_value.as_ref(),
            dto.annual_revenue_currency.as_deref(),
        );
        dispose(amount_value);
        let street = errors.check(optional(dto.street.as_deref(), address_part("street")));
        let city = errors.check(optional(dto.city.as_deref(), address_part("city")));
        let region = errors.check(optional(dto.region.as_deref(), address_part("region")));
        let postal_code = errors.check(optional(
            dto.postal_code.as_deref(),
            address_part("postal_code"),
        ));
        let country = errors.check(optional(dto.country.as_deref(), address_part("country")));
        let metadata = errors.check(match dto.metadata {
            None | Some(Value::Null) => Ok(Metadata::new()),
            Some(v) => Metadata::parse(v),
        });
        let owner = errors.check(optional(dto.owner.as_deref(), OwnerId::parse));
        let original = super::parse_original(
            &mut errors,
            dto.created_at.as_deref(),
            dto.updated_at.as_deref(),
        );
        match (
            name,
            domain,
            industry,
            employee_count,
            annual_revenue,
            street,
            city,
            region,
            postal_code,
            country,
            metadata,
            owner,
            original,
        ) {
            (
                Some(name),
                Some(domain),
                Some(industry),
                Some(employee_count),
                Some(annual_revenue),
                Some(street),
                Some(city),
                Some(region),
                Some(postal_code),
                Some(country),
                Some(metadata),
                Some(owner),
                Some(original),
            ) if errors.is_empty() => Ok(NewCompany {
                name,
                domain,
                industry,
                employee_count,
                annual_revenue,
                address: Address {
                    street,
                    city,
                    region,
                    postal_code,
                    country,
                },
                metadata,
                owner,
                original,
            }),
            _ => Err(errors),
        }
    }
}

/// Inbound JSON for a partial update of a company. An absent field is left
/// as it is; `null` (or a blank string) clears an optional field. The
/// annual revenue's amount and currency go together; `null` for the
/// amount clears it. Unknown fields are rejected.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanyPatchDto {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New domain; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub domain: Option<Option<String>>,
    /// New industry; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub industry: Option<Option<String>>,
    /// New number of employees; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub employee_count: Option<Option<i64>>,
    /// New annual revenue amount (with `annual_revenue_currency`); `null`
    /// clears the annual revenue.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub annual_revenue_amount: Option<Value>,
    /// New annual revenue currency (with `annual_revenue_amount`).
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub annual_revenue_currency: Option<Option<String>>,
    /// New street; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub street: Option<Option<String>>,
    /// New city; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub city: Option<Option<String>>,
    /// New region; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub region: Option<Option<String>>,
    /// New postal code; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub postal_code: Option<Option<String>>,
    /// New country; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub country: Option<Option<String>>,
    /// New custom fields (replaces them all); `null` clears them.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata: Option<Value>,
    /// New owner; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub owner: Option<Option<String>>,
}

/// A validated partial update of a company: `None` leaves a field as it
/// is, `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompanyPatch {
    /// New name.
    pub name: Option<CompanyName>,
    /// New domain.
    pub domain: Option<Option<CompanyDomain>>,
    /// New industry.
    pub industry: Option<Option<Industry>>,
    /// New number of employees (at most [`MAX_EMPLOYEES`]).
    pub employee_count: Option<Option<u32>>,
    /// New annual revenue.
    pub annual_revenue: Option<Option<Money>>,
    /// New street.
    pub street: Option<Option<AddressPart>>,
    /// New city.
    pub city: Option<Option<AddressPart>>,
    /// New region.
    pub region: Option<Option<AddressPart>>,
    /// New postal code.
    pub postal_code: Option<Option<AddressPart>>,
    /// New country.
    pub country: Option<Option<AddressPart>>,
    /// New custom fields (replaces them all).
    pub metadata: Option<Metadata>,
    /// New owner.
    pub owner: Option<Option<OwnerId>>,
}

impl CompanyPatch {
    /// True when the patch sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == CompanyPatch::default()
    }

    /// The patch as every store takes it, or why it cannot be: at most
    /// [`MAX_EMPLOYEES`] employees. Every store calls it before anything
    /// else.
    pub fn checked(self) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if let Some(Some(n)) = self.employee_count {
            errors.check(employee_count(i64::from(n)));
        }
        errors.finish(|| self)
    }
}

impl TryFrom<CompanyPatchDto> for CompanyPatch {
    type Error = ValidationErrors;

    fn try_from(mut dto: CompanyPatchDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let mut patch = CompanyPatch::default();
        let amount_value = dto.annual_revenue_amount.take();
        if let Some(v) = &dto.name {
            patch.name = errors.check(CompanyName::parse_field("name", v));
        }
        if let Some(v) = &dto.domain {
            patch.domain = errors.check(optional(v.as_deref(), CompanyDomain::parse));
        }
        if let Some(v) = &dto.industry {
            patch.industry = errors.check(optional(v.as_deref(), Industry::parse));
        }
        if let Some(v) = dto.employee_count {
            patch.employee_count = errors.check(v.map(employee_count).transpose());
        }
        if amount_value.is_some() || dto.annual_revenue_currency.is_some() {
            patch.annual_revenue = annual_revenue(
                &mut errors,
                amount_value.as_ref(),
                dto.annual_revenue_currency
                    .as_ref()
                    .and_then(Option::as_deref),
            );
        }
        dispose(amount_value);
        let parts = [
            ("street", &dto.street, &mut patch.street),
            ("city", &dto.city, &mut patch.city),
            ("region", &dto.region, &mut patch.region),
            ("postal_code", &dto.postal_code, &mut patch.postal_code),
            ("country", &dto.country, &mut patch.country),
        ];
        for (field, value, slot) in parts {
            if let Some(v) = value {
                *slot = errors.check(optional(v.as_deref(), address_part(field)));
            }
        }
        if let Some(v) = dto.metadata {
            patch.metadata = errors.check(match v {
                Value::Null => Ok(Metadata::new()),
                v => Metadata::parse(v),
            });
        }
        if let Some(v) = &dto.owner {
            patch.owner = errors.check(optional(v.as_deref(), OwnerId::parse));
        }
        errors.finish(|| patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn a_new_company_reads_every_field_and_reports_every_error() {
        let dto = NewCompanyDto {
            name: Some(" Acme ".into()),
            domain: Some("https://www.acme.example/".into()),
            industry: Some("Anvils".into()),
            employee_count: Some(120),
            annual_revenue_amount: Some(Value::String("1250000.50".into())),
            annual_revenue_currency: Some("eur".into()),
            city: Some("Springfield".into()),
            country: Some(" ".into()),
            owner: Some("user:1".into()),
            ..NewCompanyDto::default()
        };
        let new = NewCompany::try_from(dto).unwrap();
        assert_eq!(new.name.as_str(), "Acme");
        assert_eq!(new.domain.unwrap().as_str(), "acme.example");
        assert_eq!(new.employee_count, Some(120));
        assert_eq!(new.annual_revenue.unwrap().to_string(), "1250000.5 EUR");
        assert_eq!(new.address.city.unwrap().as_str(), "Springfield");
        assert_eq!(new.address.country, None);
        assert_eq!(new.owner.unwrap().as_str(), "user:1");

        let dto = NewCompanyDto {
            domain: Some("localhost".into()),
            employee_count: Some(-1),
            annual_revenue_amount: Some(Value::from(5)),
            street: Some("a\u{1}b".into()),
            owner: Some(" x".into()),
            ..NewCompanyDto::default()
        };
        let errors = NewCompany::try_from(dto).unwrap_err();
        let fields: Vec<&str> = errors.as_slice().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "domain",
                "employee_count",
                "annual_revenue_currency",
                "street",
                "owner"
            ]
        );
    }

    #[test]
    fn revenue_amount_and_currency_go_together() {
        let dto = NewCompanyDto {
            name: Some("Acme".into()),
            annual_revenue_currency: Some("USD".into()),
            ..NewCompanyDto::default()
        };
        let e = NewCompany::try_from(dto).unwrap_err();
        assert_eq!(e.as_slice()[0].field, "annual_revenue_amount");
        let dto = NewCompanyDto {
            name: Some("Acme".into()),
            annual_revenue_amount: Some(Value::String("-3".into())),
            annual_revenue_currency: Some("XYZ".into()),
            ..NewCompanyDto::default()
        };
        let e = NewCompany::try_from(dto).unwrap_err();
        let fields: Vec<&str> = e.as_slice().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["annual_revenue_amount", "annual_revenue_currency"]);
    }

    #[test]
    fn too_many_employees_are_refused_by_the_check_every_store_makes() {
        let mut new = NewCompany::new(CompanyName::parse("Acme").unwrap());
        new.employee_count = Some(MAX_EMPLOYEES + 1);
        let e = new.checked().unwrap_err();
        assert_eq!(e.as_slice()[0].field, "employee_count");
        let patch = CompanyPatch {
            employee_count: Some(Some(u32::MAX)),
            ..CompanyPatch::default()
        };
        assert!(patch.checked().is_err());
        let mut new = NewCompany::new(CompanyName::parse("Acme").unwrap());
        new.employee_count = Some(MAX_EMPLOYEES);
        assert!(new.checked().is_ok());
    }

    #[test]
    fn a_patch_changes_the_company_only_when_it_changes_something() {
        let c = Company::create(
            TenantId::new(),
            NewCompany::new(CompanyName::parse("Acme").unwrap()),
            now(),
        );
        assert_eq!(c.version, Version::FIRST);
        assert_eq!(c.patched(&CompanyPatch::default(), now()), None);
        let same = CompanyPatch {
            name: Some(c.name.clone()),
            domain: Some(None),
            ..CompanyPatch::default()
        };
        assert_eq!(c.patched(&same, now()), None);
        let later = now() + chrono::Duration::seconds(5);
        let patch: CompanyPatch = CompanyPatchDto {
            city: Some(Some("Paris".into())),
            domain: Some(Some("WWW.acme.example".into())),
            ..CompanyPatchDto::default()
        }
        .try_into()
        .unwrap();
        let next = c.patched(&patch, later).unwrap();
        assert_eq!(next.version, Version::FIRST.next());
        assert_eq!(next.updated_at, later);
        assert_eq!(next.address.city.as_ref().unwrap().as_str(), "Paris");
        assert_eq!(next.domain.as_ref().unwrap().as_str(), "acme.example");
        let clear: CompanyPatch = CompanyPatchDto {
            city: Some(None),
            annual_revenue_amount: Some(Value::Null),
            ..CompanyPatchDto::default()
        }
        .try_into()
        .unwrap();
        assert_eq!(clear.annual_revenue, Some(None));
        let cleared = next.patched(&clear, later).unwrap();
        assert!(cleared.address.is_empty());
    }

    #[test]
    fn a_patch_dto_reads_null_as_clear_and_reports_named_fields() {
        let p: CompanyPatch = CompanyPatchDto {
            owner: Some(None),
            employee_count: Some(None),
            ..CompanyPatchDto::default()
        }
        .try_into()
        .unwrap();
        assert_eq!(p.owner, Some(None));
        assert_eq!(p.employee_count, Some(None));
        assert!(!p.is_empty());
        let e = CompanyPatch::try_from(CompanyPatchDto {
            name: Some(String::new()),
            postal_code: Some(Some("x".repeat(300))),
            annual_revenue_amount: Some(Value::from(10)),
            ..CompanyPatchDto::default()
        })
        .unwrap_err();
        let fields: Vec<&str> = e.as_slice().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "annual_revenue_currency", "postal_code"]);
    }
}
