//! Deals: exact money, a pipeline stage, and the moves between stages.

use std::{fmt, str::FromStr};

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    CompanyId, ContactId, OriginalTimes, OwnerId, Pipeline, PipelineKey, StageKey, StageKind,
    TenantId, Timestamp, Version,
    activity::parse_id,
    contact::{double_option, optional, required},
    id_type,
    text::text_type,
};
use crate::domain::error::{Error, FieldError, ValidationErrors};

id_type!(
    /// The id of a [`Deal`] (UUID v7).
    DealId
);

text_type!(
    /// A deal's title: 1–255 characters after trimming.
    DealTitle, field = "title", min = 1, max = 255, multiline = false
);

text_type!(
    /// Why a deal was lost: 1–500 characters after trimming.
    LostReason, field = "lost_reason", min = 1, max = 500, multiline = true
);

/// An ISO 4217 currency code (`EUR`, `USD`, …).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Parses an ISO 4217 code (trimmed, any casing).
    pub fn parse(code: &str) -> Result<Self, FieldError> {
        Self::parse_field("currency", code)
    }

    /// Like [`parse`](Self::parse), reporting the error under `field`.
    pub fn parse_field(field: &str, code: &str) -> Result<Self, FieldError> {
        let c = code.trim().to_ascii_uppercase();
        iso_currency::Currency::from_code(&c)
            .map(Currency)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    "unknown_value",
                    format!("{:?} is not an ISO 4217 currency code", code.trim()),
                )
            })
    }

    /// The three-letter code.
    pub fn code(&self) -> &'static str {
        self.0.code()
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl TryFrom<String> for Currency {
    type Error = FieldError;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        Currency::parse(&v)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_string()
    }
}

/// An exact amount of money: a non-negative decimal with at most
/// [`MAX_SCALE`](Self::MAX_SCALE) decimal places, below 10^15, in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

#[derive(Serialize, Deserialize)]
struct MoneyRepr {
    #[serde(deserialize_with = "deserialize_amount")]
    amount: Decimal,
    currency: Currency,
}

/// An amount in serialized money: a decimal string (as money serializes)
/// or a JSON number, read as strictly as [`Money::parse`] reads text.
fn deserialize_amount<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    struct Amount;
    impl serde::de::Visitor<'_> for Amount {
        type Value = Decimal;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a decimal amount as a string or a number")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
            decimal_text("amount", v).map_err(|e| E::custom(e))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Decimal, E> {
            serde_json::Number::from_f64(v)
                .ok_or_else(|| FieldError::new("amount", "invalid_format", "must be finite"))
                .and_then(|n| decimal_number("amount", &n))
                .map_err(|e| E::custom(e))
        }
    }
    d.deserialize_any(Amount)
}

/// The most significant digits a JSON number amount may have: a double
/// holds every decimal of 15 significant digits exactly, and not more.
const MAX_NUMBER_DIGITS: usize = 15;

/// An amount written as text, read strictly: digits, with at most one
/// decimal point that has digits on both sides, and optionally a leading
/// minus (which [`Money::new`] refuses unless the amount is zero); white
/// space around it is ignored. No plus sign, digit separators (`1_000`,
/// `1,000`), exponents or other numerals: `rust_decimal`'s own parser
/// takes some of these, and an amount is exactly what was written or an
/// error.
fn decimal_text(field: &str, text: &str) -> Result<Decimal, FieldError> {
    let t = text.trim();
    let unsigned = t.strip_prefix('-').unwrap_or(t);
    let (int, frac) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(FieldError::new(
            field,
            "invalid_format",
            format!(
                "must be written as digits with at most one decimal point, like 1250.50 \
                 (no sign, digit separator or exponent), got {t:?}"
            ),
        ));
    }
    // Leading zeros of the integer part and trailing zeros of the fraction
    // carry nothing; the digits left are bounded before converting, so that
    // a long string is an error about its size, not an overflow.
    let int = int.trim_start_matches('0');
    let frac = frac.unwrap_or("").trim_end_matches('0');
    if t.starts_with('-') && !(int.is_empty() && frac.is_empty()) {
        return Err(FieldError::new(
            field,
            "out_of_range",
            format!("must not be negative, got {t}"),
        ));
    }
    if int.len() > 15 {
        return Err(FieldError::new(
            field,
            "out_of_range",
            "must be below 10^15",
        ));
    }
    if frac.len() > Money::MAX_SCALE as usize {
        return Err(FieldError::new(
            field,
            "out_of_range",
            format!(
                "must have at most {} decimal places, got {t}",
                Money::MAX_SCALE
            ),
        ));
    }
    let int = if int.is_empty() { "0" } else { int };
    let canonical = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    Decimal::from_str_exact(&canonical).map_err(|e| {
        FieldError::new(
            field,
            "invalid_format",
            format!("is not a decimal number ({e})"),
        )
    })
}

/// An amount sent as a JSON number: an integer exactly; a double through
/// its shortest decimal form, refused when that has more than
/// [`MAX_NUMBER_DIGITS`] significant digits, since the digits sent beyond
/// those were rounded away before the crate saw them.
fn decimal_number(field: &str, n: &serde_json::Number) -> Result<Decimal, FieldError> {
    if let Some(u) = n.as_u64() {
        return Ok(Decimal::from(u));
    }
    if let Some(i) = n.as_i64() {
        return Ok(Decimal::from(i));
    }
    let text = n.to_string();
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(i32::MAX)),
        None => (text.as_str(), 0),
    };
    let significant: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = significant.trim_start_matches('0').trim_end_matches('0');
    if significant.len() > MAX_NUMBER_DIGITS {
        return Err(FieldError::new(
            field,
            "invalid_format",
            format!(
                "has more significant digits than a JSON number keeps exactly ({} at most): \
                 send the amount as a string, like \"1250.50\"",
                MAX_NUMBER_DIGITS
            ),
        ));
    }
    if exponent > 15 {
        return Err(FieldError::new(
            field,
            "out_of_range",
            "must be below 10^15",
        ));
    }
    if exponent < -(Money::MAX_SCALE as i32) - MAX_NUMBER_DIGITS as i32 {
        return Err(FieldError::new(
            field,
            "out_of_range",
            format!("must have at most {} decimal places", Money::MAX_SCALE),
        ));
    }
    Decimal::from_scientific(&format!("{mantissa}e{exponent}")).map_err(|e| {
        FieldError::new(
            field,
            "invalid_format",
            format!("is not a decimal number ({e})"),
        )
    })
}

impl Money {
    /// The most decimal places an amount may have.
    pub const MAX_SCALE: u32 = 4;

    /// Validates an amount in a currency.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, FieldError> {
        Self::new_field("amount", amount, currency)
    }

    /// Like [`new`](Self::new), reporting the error under `field`.
    pub fn new_field(field: &str, amount: Decimal, currency: Currency) -> Result<Self, FieldError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(FieldError::new(
                field,
                "out_of_range",
                format!("must not be negative, got {amount}"),
            ));
        }
        let amount = amount.normalize();
        if amount.scale() > Self::MAX_SCALE {
            return Err(FieldError::new(
                field,
                "out_of_range",
                format!(
                    "must have at most {} decimal places, got {amount}",
                    Self::MAX_SCALE
                ),
            ));
        }
        if amount >= Decimal::from(1_000_000_000_000_000_i64) {
            return Err(FieldError::new(
                field,
                "out_of_range",
                "must be below 10^15",
            ));
        }
        // Normalized, so that 100, 100.0 and 100.00 are stored alike.
        let amount = if amount.is_zero() {
            Decimal::ZERO
        } else {
            amount
        };
        Ok(Money { amount, currency })
    }

    /// Parses an amount written as a decimal string (`"1250.50"`): digits
    /// with at most one decimal point, nothing else (no sign but a minus,
    /// which is refused unless the amount is zero; no `1_000`, `1,000`,
    /// `+5`, `.5` or `1e3`).
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, FieldError> {
        Money::new(decimal_text("amount", amount)?, currency)
    }

    /// The amount.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

impl TryFrom<MoneyRepr> for Money {
    type Error = FieldError;
    fn try_from(r: MoneyRepr) -> Result<Self, Self::Error> {
        Money::new(r.amount, r.currency)
    }
}

impl From<Money> for MoneyRepr {
    fn from(m: Money) -> Self {
        MoneyRepr {
            amount: m.amount,
            currency: m.currency,
        }
    }
}

/// A deal as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deal {
    /// Its id.
    pub id: DealId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// The contact it is with.
    pub contact_id: ContactId,
    /// Its title.
    pub title: DealTitle,
    /// Its value.
    pub amount: Money,
    /// The pipeline it moves through.
    pub pipeline: PipelineKey,
    /// The stage it is in.
    pub stage: StageKey,
    /// When it is expected to close.
    pub expected_close_date: Option<NaiveDate>,
    /// When it was won (set while in a won stage).
    pub won_at: Option<Timestamp>,
    /// When it was lost (set while in a lost stage).
    pub lost_at: Option<Timestamp>,
    /// Why it was lost (set while in a lost stage).
    pub lost_reason: Option<LostReason>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Its version, for optimistic concurrency.
    pub version: Version,
    /// The company it is with, if linked.
    pub company_id: Option<CompanyId>,
    /// The user who owns it, if any.
    pub owner: Option<OwnerId>,
}

impl Deal {
    /// A new deal from validated input. The stage must be an open stage of
    /// `pipeline` (the first open stage when the input names none) — or,
    /// for a deal imported closed, a won or lost stage with its original
    /// close time (`original_closed_at`, which becomes `won_at` or
    /// `lost_at`) and, for a lost stage, its lost reason.
    ///
    /// Errors ([`Error::Validation`]): `stage` (not in the pipeline, or
    /// closed without `original_closed_at`), `original_closed_at` (given
    /// for an open stage), `lost_reason` (missing for a lost stage, given
    /// for another).
    pub fn create(
        tenant_id: TenantId,
        new: NewDeal,
        pipeline: &Pipeline,
        now: Timestamp,
    ) -> Result<Deal, Error> {
        let stage = match new.stage {
            Some(s) => s,
            None => pipeline.first_open_stage().key.clone(),
        };
        let def = pipeline
            .require_stage("stage", &stage)
            .map_err(ValidationErrors::single)?;
        let mut errors = ValidationErrors::new();
        let (mut won_at, mut lost_at) = (None, None);
        match (def.kind, new.original_closed_at) {
            (StageKind::Open, None) => {}
            (StageKind::Open, Some(_)) => errors.push(FieldError::new(
                "original_closed_at",
                "invalid_value",
                format!("is only given for a deal created in a won or lost stage, not in {stage}"),
            )),
            (_, None) => errors.push(FieldError::new(
                "stage",
                "invalid_value",
                "a new deal starts in an open stage (a deal imported closed gives its \
                 original_closed_at)",
            )),
            (StageKind::Won, Some(t)) => won_at = Some(t),
            (StageKind::Lost, Some(t)) => lost_at = Some(t),
        }
        match (def.kind, &new.lost_reason) {
            (StageKind::Lost, None) if new.original_closed_at.is_some() => {
                errors.push(FieldError::new(
                    "lost_reason",
                    "required",
                    format!("is required for a deal in the lost stage {stage}"),
                ))
            }
            (StageKind::Lost, _) | (_, None) => {}
            (_, Some(_)) => errors.push(FieldError::new(
                "lost_reason",
                "invalid_value",
                "is only given for a deal created in a lost stage",
            )),
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
        Ok(Deal {
            id: DealId::new(),
            tenant_id,
            contact_id: new.contact_id,
            title: new.title,
            amount: new.amount,
            pipeline: pipeline.key().clone(),
            stage,
            expected_close_date: new.expected_close_date,
            won_at,
            lost_at,
            lost_reason: new.lost_reason,
            created_at: new.original.map_or(now, |t| t.created_at()),
            updated_at: new.original.map_or(now, |t| t.updated_at()),
            version: Version::FIRST,
            company_id: new.company_id,
            owner: new.owner,
        })
    }

    /// The deal moved to stage `to`, following the stage machine of `pipeline`.
    pub fn moved(
        &self,
        pipeline: &Pipeline,
        to: &StageKey,
        lost_reason: Option<LostReason>,
        now: Timestamp,
    ) -> Result<Deal, Error> {
        let kind = pipeline.check_move(&self.stage, to, lost_reason.is_some())?;
        let mut next = self.clone();
        next.stage = to.clone();
        match kind {
            StageKind::Won => next.won_at = Some(now),
            StageKind::Lost => {
                next.lost_at = Some(now);
                next.lost_reason = lost_reason;
            }
            StageKind::Open => {}
        }
        next.updated_at = now;
        next.version = self.version.next();
        Ok(next)
    }

    /// The closed deal reopened into open stage `to`; clears the close stamps
    /// and the lost reason.
    pub fn reopened(
        &self,
        pipeline: &Pipeline,
        to: &StageKey,
        now: Timestamp,
    ) -> Result<Deal, Error> {
        pipeline.check_reopen(&self.stage, to)?;
        let mut next = self.clone();
        next.stage = to.clone();
        next.won_at = None;
        next.lost_at = None;
        next.lost_reason = None;
        next.updated_at = now;
        next.version = self.version.next();
        Ok(next)
    }

    /// The deal with `patch` applied, or `None` when it changes nothing.
    pub fn patched(&self, patch: &DealPatch, now: Timestamp) -> Option<Deal> {
        let mut next = self.clone();
        if let Some(t) = &patch.title {
            next.title = t.clone();
        }
        if let Some(a) = patch.amount {
            next.amount = a;
        }
        if let Some(d) = patch.expected_close_date {
            next.expected_close_date = d;
        }
        if let Some(v) = patch.company_id {
            next.company_id = v;
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
}

/// Inbound JSON for a new deal. `amount` may be a JSON string or number.
/// Unknown fields are rejected.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDealDto {
    /// Required: the contact's id.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// Required.
    #[serde(default)]
    pub title: Option<String>,
    /// Required: a decimal ≥ 0, as a string (`"1250.50"`) or a number.
    #[serde(default)]
    pub amount: Option<Value>,
    /// Required: an ISO 4217 code.
    #[serde(default)]
    pub currency: Option<String>,
    /// The pipeline's key; `default` when absent.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// The starting stage; the pipeline's first open stage when absent.
    #[serde(default)]
    pub stage: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub expected_close_date: Option<String>,
    /// Optional: the id (a UUID) of the company it is with; blank means none.
    #[serde(default)]
    pub company_id: Option<String>,
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
    /// Optional, for a deal imported in a won stage: when it was won
    /// (RFC 3339, from `created_at` to `updated_at`).
    #[serde(default)]
    pub won_at: Option<String>,
    /// Optional, for a deal imported in a lost stage: when it was lost
    /// (RFC 3339, from `created_at` to `updated_at`).
    #[serde(default)]
    pub lost_at: Option<String>,
    /// Required for a deal imported in a lost stage, refused otherwise.
    #[serde(default)]
    pub lost_reason: Option<String>,
}

/// A validated new deal. Whether the stage belongs to the pipeline is
/// checked by the store, which knows the pipelines.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeal {
    /// The contact the deal is with.
    pub contact_id: ContactId,
    /// Title.
    pub title: DealTitle,
    /// Value.
    pub amount: Money,
    /// Pipeline.
    pub pipeline: PipelineKey,
    /// Starting stage (`None`: the pipeline's first open stage).
    pub stage: Option<StageKey>,
    /// Expected close date.
    pub expected_close_date: Option<NaiveDate>,
    /// The company it is with.
    pub company_id: Option<CompanyId>,
    /// The owning user.
    pub owner: Option<OwnerId>,
    /// When it was created and last changed in the system it is imported
    /// from; `None`: now. Honoured only when the deal is created.
    pub original: Option<OriginalTimes>,
    /// For a deal imported in a won or lost stage: when it was won or
    /// lost there (its `won_at` or `lost_at`). Only with [`original`](Self::original),
    /// from its `created_at` to its `updated_at`; refused for an open stage.
    pub original_closed_at: Option<Timestamp>,
    /// For a deal imported in a lost stage: why it was lost (required
    /// there, refused for any other stage).
    pub lost_reason: Option<LostReason>,
}

impl NewDeal {
    /// The deal as every store takes it, or why it cannot be: an expected
    /// close date within years 1–9999 ([`check_date`](super::check_date)),
    /// original times not after the current time, and an
    /// `original_closed_at` within range, not in the future, only with
    /// original times and between their `created_at` and `updated_at`.
    /// Whether the stage is closed is checked by the store, which knows
    /// the pipelines ([`Deal::create`]). Every store calls it before
    /// anything else.
    pub fn checked(mut self) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if let Some(d) = self.expected_close_date {
            errors.check(super::check_date("expected_close_date", d));
        }
        let now = super::original::now();
        if let Some(t) = self.original {
            match t.recheck(now) {
                Ok(t) => self.original = Some(t),
                Err(e) => {
                    for e in e {
                        errors.push(e);
                    }
                }
            }
        }
        if let Some(t) = self.original_closed_at {
            self.original_closed_at = errors.check(check_closed_at(
                "original_closed_at",
                t,
                self.original.as_ref(),
                now,
            ));
        }
        errors.finish(|| self)
    }

    /// Sets the times it had in the system it is imported from.
    pub fn original_times(mut self, times: OriginalTimes) -> Self {
        self.original = Some(times);
        self
    }

    /// Sets when it was won or lost in the system it is imported from
    /// (for a deal created in a won or lost stage).
    pub fn original_closed_at(mut self, at: Timestamp) -> Self {
        self.original_closed_at = Some(at);
        self
    }

    /// A new deal in the default pipeline's first stage.
    pub fn new(contact_id: ContactId, title: DealTitle, amount: Money) -> Self {
        NewDeal {
            contact_id,
            title,
            amount,
            pipeline: PipelineKey::default_pipeline(),
            stage: None,
            expected_close_date: None,
            company_id: None,
            owner: None,
            original: None,
            original_closed_at: None,
            lost_reason: None,
        }
    }
}

/// An original close time `t`, reported under `field`: within range, not
/// after `now`, given only with original times and between their
/// `created_at` and `updated_at`.
pub(crate) fn check_closed_at(
    field: &str,
    t: Timestamp,
    original: Option<&OriginalTimes>,
    now: Timestamp,
) -> Result<Timestamp, FieldError> {
    let t = super::check_past(field, t, now)?;
    let Some(original) = original else {
        return Err(FieldError::new(
            field,
            "invalid_value",
            "is given only with the original created_at and updated_at",
        ));
    };
    let show = |t: Timestamp| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    if t < original.created_at() {
        return Err(FieldError::new(
            field,
            "out_of_order",
            format!(
                "must not be before created_at ({}), got {}",
                show(original.created_at()),
                show(t)
            ),
        ));
    }
    if t > original.updated_at() {
        return Err(FieldError::new(
            field,
            "out_of_order",
            format!(
                "must not be after updated_at ({}), got {}",
                show(original.updated_at()),
                show(t)
            ),
        ));
    }
    Ok(t)
}

fn parse_amount(v: &Value) -> Result<Decimal, FieldError> {
    parse_amount_field("amount", v)
}

/// An amount sent as a JSON string or number, read as a deal's amount is
/// read; the error names `field`.
pub(crate) fn parse_amount_field(field: &str, v: &Value) -> Result<Decimal, FieldError> {
    match v {
        Value::String(s) => decimal_text(field, s),
        Value::Number(n) => decimal_number(field, n),
        _ => Err(FieldError::new(
            field,
            "invalid_format",
            "must be a decimal string or number",
        )),
    }
}

fn parse_date(field: &str, v: &str) -> Result<NaiveDate, FieldError> {
    let date = NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d").map_err(|e| {
        FieldError::new(
            field,
            "invalid_format",
            format!("must be a date YYYY-MM-DD ({e})"),
        )
    })?;
    super::check_date(field, date)
}

impl TryFrom<NewDealDto> for NewDeal {
    type Error = ValidationErrors;

    fn try_from(mut dto: NewDealDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        // A caller's JSON may nest deeply: read it, then drop it without
        // recursing.
        let amount_value = dto.amount.take();
        let contact_id = errors.check(required("contact_id", &dto.contact_id).and_then(|v| {
            ContactId::from_str(v.trim()).map_err(|e| {
                FieldError::new(
                    "contact_id",
                    "invalid_format",
                    format!("is not a UUID ({e})"),
                )
            })
        }));
        let title = errors.check(required("title", &dto.title).and_then(DealTitle::parse));
        let amount = errors.check(
            amount_value
                .as_ref()
                .ok_or_else(|| FieldError::new("amount", "required", "is required"))
                .and_then(parse_amount),
        );
        if let Some(v) = amount_value {
            super::json::dispose(v);
        }
        let currency = errors.check(required("currency", &dto.currency).and_then(Currency::parse));
        let money = match (amount, currency) {
            (Some(a), Some(c)) => errors.check(Money::new(a, c)),
            _ => None,
        };
        let pipeline = errors.check(match dto.pipeline.as_deref() {
            None => Ok(PipelineKey::default_pipeline()),
            Some(p) => PipelineKey::parse(p),
        });
        let stage = errors.check(dto.stage.as_deref().map(StageKey::parse).transpose());
        let expected_close_date = errors.check(
            dto.expected_close_date
                .as_deref()
                .map(|d| parse_date("expected_close_date", d))
                .transpose(),
        );
        let company_id = errors.check(optional(dto.company_id.as_deref(), |v| {
            parse_id("company_id", v)
        }));
        let owner = errors.check(optional(dto.owner.as_deref(), OwnerId::parse));
        let original = super::parse_original(
            &mut errors,
            dto.created_at.as_deref(),
            dto.updated_at.as_deref(),
        );
        let original_closed_at = closed_at_of(&mut errors, &dto, original);
        let lost_reason = errors.check(optional(dto.lost_reason.as_deref(), LostReason::parse));
        match (
            contact_id,
            title,
            money,
            pipeline,
            stage,
            expected_close_date,
            company_id,
            owner,
            original,
            original_closed_at,
            lost_reason,
        ) {
            (
                Some(contact_id),
                Some(title),
                Some(amount),
                Some(pipeline),
                Some(stage),
                Some(expected_close_date),
                Some(company_id),
                Some(owner),
                Some(original),
                Some(original_closed_at),
                Some(lost_reason),
            ) if errors.is_empty() => Ok(NewDeal {
                contact_id,
                title,
                amount,
                pipeline,
                stage,
                expected_close_date,
                company_id,
                owner,
                original,
                original_closed_at,
                lost_reason,
            }),
            _ => Err(errors),
        }
    }
}

/// The original close time of a new deal's DTO: its `won_at` or its
/// `lost_at` (not both), checked as [`check_closed_at`] checks it and
/// reported under the name it was sent as; `None` when an error was
/// recorded.
fn closed_at_of(
    errors: &mut ValidationErrors,
    dto: &NewDealDto,
    original: Option<Option<OriginalTimes>>,
) -> Option<Option<Timestamp>> {
    fn given(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|v| !v.trim().is_empty())
    }
    let (field, text) = match (given(&dto.won_at), given(&dto.lost_at)) {
        (None, None) => return Some(None),
        (Some(w), None) => ("won_at", w),
        (None, Some(l)) => ("lost_at", l),
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "lost_at",
                "invalid_value",
                "a deal is won or lost, not both: give won_at or lost_at",
            ));
            return None;
        }
    };
    let t = super::activity::parse_timestamp(field, text);
    // Compared with the original times only when they were read.
    let t = match original {
        Some(original) => {
            t.and_then(|t| check_closed_at(field, t, original.as_ref(), super::original::now()))
        }
        None => t,
    };
    errors.check(t).map(Some)
}

/// Inbound JSON for a partial update of a deal's details (stage changes go
/// through a move or a reopen). Unknown fields are rejected.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DealPatchDto {
    /// New title.
    #[serde(default)]
    pub title: Option<String>,
    /// New amount (with `currency`, or in the deal's currency when absent is
    /// not allowed: amount and currency go together).
    #[serde(default)]
    pub amount: Option<Value>,
    /// New currency; required with `amount`.
    #[serde(default)]
    pub currency: Option<String>,
    /// New expected close date; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expected_close_date: Option<Option<String>>,
    /// New company (the id, a UUID); `null` unlinks it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub company_id: Option<Option<String>>,
    /// New owner; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub owner: Option<Option<String>>,
}

/// A validated partial update of a deal: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DealPatch {
    /// New title.
    pub title: Option<DealTitle>,
    /// New amount and currency.
    pub amount: Option<Money>,
    /// New expected close date (`Some(None)` clears it).
    pub expected_close_date: Option<Option<NaiveDate>>,
    /// New company (`Some(None)` unlinks it).
    pub company_id: Option<Option<CompanyId>>,
    /// New owner (`Some(None)` clears it).
    pub owner: Option<Option<OwnerId>>,
}

impl DealPatch {
    /// The patch as every store takes it, or why it cannot be: an expected
    /// close date within years 1–9999 ([`check_date`](super::check_date)).
    /// Every store calls it before anything else.
    pub fn checked(self) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if let Some(Some(d)) = self.expected_close_date {
            errors.check(super::check_date("expected_close_date", d));
        }
        errors.finish(|| self)
    }
}

impl TryFrom<DealPatchDto> for DealPatch {
    type Error = ValidationErrors;

    fn try_from(mut dto: DealPatchDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let mut patch = DealPatch::default();
        if let Some(t) = &dto.title {
            patch.title = errors.check(DealTitle::parse(t));
        }
        let amount_value = dto.amount.take();
        match (&amount_value, &dto.currency) {
            (Some(a), Some(c)) => {
                let a = errors.check(parse_amount(a));
                let c = errors.check(Currency::parse(c));
                if let (Some(a), Some(c)) = (a, c) {
                    patch.amount = errors.check(Money::new(a, c));
                }
            }
            (Some(_), None) => errors.push(FieldError::new(
                "currency",
                "required",
                "is required with amount",
            )),
            (None, Some(_)) => errors.push(FieldError::new(
                "amount",
                "required",
                "is required with currency",
            )),
            (None, None) => {}
        }
        if let Some(v) = amount_value {
            super::json::dispose(v);
        }
        if let Some(d) = &dto.expected_close_date {
            patch.expected_close_date = errors.check(
                d.as_deref()
                    .map(|d| parse_date("expected_close_date", d))
                    .transpose(),
            );
        }
        if let Some(v) = &dto.company_id {
            patch.company_id = errors.check(optional(v.as_deref(), |v| parse_id("company_id", v)));
        }
        if let Some(v) = &dto.owner {
            patch.owner = errors.check(optional(v.as_deref(), OwnerId::parse));
        }
        errors.finish(|| patch)
    }
}
