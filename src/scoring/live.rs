//! Always-current scores: the live state a store keeps per contact, the
//! live top leads, and [`explain`].
//!
//! # What a store keeps
//!
//! A store configured with a model (`InMemoryStore::with_live_scoring`,
//! `PostgresStore::with_live_scoring`; the reference model by default)
//! keeps, per contact, the live state
//!
//! ```text
//! live_log = ln Σ weight(k)·2^(t/half_life)      (t: days since LOG_EPOCH)
//! ```
//!
//! over its activities (as the signal their kind maps to) and recorded
//! signals. [`log_activity`](crate::store::TimelineTx::log_activity) and
//! [`record_signal`](crate::store::TimelineTx::record_signal) add their
//! term ([`ScoringModel::log_add`]) in the same transaction, at a cost
//! that does not grow with the contact's signals; a rollback undoes it
//! with the rest. On PostgreSQL, keeping it does not make logging an
//! activity wait for an open update of the contact. Both backends compute
//! the same bits from the same inputs.
//!
//! Because every contact's decayed sum is `2^(−now/h)·e^live_log`, ordering
//! by `live_log` is ordering by decayed sum at every instant: the live top
//! leads are right at any moment, with no batch. The 0–100 value is derived
//! at read time: [`live_score`] is
//! [`ScoringModel::score_from_log`]`(live_log, now)`.
//!
//! How the PostgreSQL backend keeps the state (a table of its own, its
//! locks and statements) and why: `ARCHITECTURE.md` in the repository,
//! section "Lead scoring".
//!
//! # How the live score differs from the batch score
//!
//! The stored `score` field is the batch's ([`crate::scoring::rescore`]):
//! it applies the lookback window, the age cutoff and `deal_exists`. The
//! live score applies none of them:
//! - no age cutoff (the log form cannot know `now` when a term is added):
//!   each signal older than the cutoff still adds less than
//!   `weight × 0.5^n`; see [`ScoringModel::score_from_log`];
//! - a signal dated in the future counts from its `occurred_at` (its factor
//!   exceeds 1 until then), as the stored signal carries no recording time
//!   a rebuild could use;
//! - `deal_exists` is applied by the batch only: the live state holds what
//!   only ever grows (activities and signals), not deals, which open and
//!   close;
//! - deleting a contact's activity is not possible through the contract;
//!   data written around the stores (bulk loads) is not in the live state
//!   until a rescoring with
//!   [`rebuild_live`](crate::scoring::RescoreOptions::with_rebuild_live).
//!
//! For a contact whose activities and signals are all in the past and
//! within the cutoff, and with no open deal, the two agree up to rounding.
//!
//! The live ranking is [`live_top_leads`]; the contact search's sorts,
//! [`ContactQuery::top_leads`](crate::store::ContactQuery::top_leads) and
//! their cursors stay on the stored `score`, so existing lists and pages
//! keep their meaning. The live update does not rewrite the stored `score`
//! either: it changes only when scores are written back
//! ([`write_scores`](crate::store::ScoringTx::write_scores), as a
//! rescoring does).
//!
//! # What "agrees" means for [`explain`]
//!
//! [`explain`] reads the contact's inputs and reports both the batch
//! breakdown ([`Scored`], with the top signals) and the live value. The
//! live value it reports is computed from the *stored* state, exactly as
//! [`live_score`] and [`live_top_leads`] compute it, so the displayed
//! score always equals the explained one. It also recomputes the state
//! from scratch ([`live_log_sum`](crate::scoring::live_log_sum)); the
//! stored state, built one `log_add` at a time, equals it within
//! [`LIVE_TOLERANCE`] (relative to the number of terms): [`Explanation::live_consistent`].

use chrono::Utc;
use serde::Serialize;

use crate::{
    domain::{ContactId, Score, Timestamp, truncate_to_micros},
    error::Result,
    store::{PageRequest, Transaction},
};

use super::{ContactInputs, Scored, ScoringModel};

/// How far a stored live state may be from its recomputation, per term:
/// each `log_add` rounds once (a few ulps of a value around 10³ at most
/// for dates within centuries of the epoch).
pub const LIVE_TOLERANCE: f64 = 1e-9;

/// A contact's live score at `now`: `Ok(None)` when there is no such
/// contact; a score of 0 when nothing is counted (or the store keeps no
/// live scores).
pub async fn live_score(
    tx: &mut dyn Transaction,
    model: &ScoringModel,
    contact: ContactId,
    now: Timestamp,
) -> Result<Option<Score>> {
    Ok(tx
        .live_score_log(contact)
        .await?
        .map(|state| model.score_from_log(state.log, now)))
}

/// One of the live top leads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveLead {
    /// The contact, as stored (its `score` is the batch's).
    pub contact: crate::domain::Contact,
    /// Its live state.
    pub live_log: f64,
    /// Its live score at the time asked for.
    pub live_score: Score,
}

/// The `limit` (1–1000) active contacts with the highest live state, best
/// first, with their live scores at `now`.
pub async fn live_top_leads(
    tx: &mut dyn Transaction,
    model: &ScoringModel,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<LiveLead>> {
    Ok(tx
        .live_top_leads(limit)
        .await?
        .into_iter()
        .map(|ranked| LiveLead {
            live_score: model.score_from_log(Some(ranked.log), now),
            live_log: ranked.log,
            contact: ranked.contact,
        })
        .collect())
}

/// One of the live top accounts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveAccount {
    /// The company, as stored.
    pub company: crate::domain::Company,
    /// Its best active contacts (at most
    /// [`ACCOUNT_TOP_CONTACTS`](crate::domain::ACCOUNT_TOP_CONTACTS)) with
    /// their live scores at the time asked for, best first.
    pub best_contacts: Vec<(ContactId, Score)>,
    /// The live score of its best contact.
    pub best_score: Score,
    /// The sum of its best contacts' live scores (0–300).
    pub top_score_sum: u16,
    /// What the accounts are ranked by: the log of its best contacts'
    /// decayed sums together
    /// ([`LiveRankedAccount::top_log`](crate::domain::LiveRankedAccount::top_log)).
    pub top_log: f64,
}

/// The `limit` (1–1000) companies whose best active contacts have the
/// highest live states together, best first, with their contacts' live
/// scores at `now` ("top accounts"; see
/// [`ScoringTx::live_top_accounts`](crate::store::ScoringTx::live_top_accounts)).
///
/// The accounts are ranked by the sum of their best contacts' decayed
/// sums, which orders them the same way at every instant; the 0–100 scores
/// shown are derived from it at `now`. Because a score is capped at 100, two
/// accounts whose best contacts are all at 100 show the same
/// `top_score_sum`, and the one with more signal behind it ranks first.
pub async fn live_top_accounts(
    tx: &mut dyn Transaction,
    model: &ScoringModel,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<LiveAccount>> {
    Ok(tx
        .live_top_accounts(limit)
        .await?
        .into_iter()
        .map(|ranked| {
            let best_contacts: Vec<(ContactId, Score)> = ranked
                .best_contacts
                .iter()
                .map(|(id, log)| (*id, model.score_from_log(Some(*log), now)))
                .collect();
            LiveAccount {
                best_score: best_contacts.first().map_or(Score::MIN, |(_, s)| *s),
                top_score_sum: best_contacts.iter().map(|(_, s)| u16::from(s.get())).sum(),
                top_log: ranked.top_log(),
                best_contacts,
                company: ranked.company,
            }
        })
        .collect())
}

/// A contact's score explained at a point in time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The contact.
    pub contact: ContactId,
    /// The time explained.
    pub now: Timestamp,
    /// Whether the batch would score it (active, within the lookback).
    pub eligible: bool,
    /// The score stored by the last batch.
    pub stored_score: Score,
    /// The batch breakdown at `now`: what a rescoring would store (when
    /// eligible), with the top signals.
    pub batch: Scored,
    /// The stored live state.
    pub live_log: Option<f64>,
    /// The live state recomputed from the contact's activities and signals.
    pub live_log_recomputed: Option<f64>,
    /// How many terms the live state holds (activities and signals with a
    /// positive weight).
    pub live_terms: usize,
    /// The live decayed sum at `now`, from the stored state.
    pub live_decayed_sum: f64,
    /// The live score at `now`, from the stored state: what
    /// [`live_score`] and [`live_top_leads`] show.
    pub live_score: Score,
}

impl Explanation {
    /// Whether the stored live state equals its recomputation within
    /// [`LIVE_TOLERANCE`] per term (both empty counts as equal).
    pub fn live_consistent(&self) -> bool {
        match (self.live_log, self.live_log_recomputed) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                (a - b).abs() <= LIVE_TOLERANCE * (self.live_terms.max(1) as f64) * b.abs().max(1.0)
            }
            _ => false,
        }
    }
}

/// Explains a contact's score at `now` (the clock's time for `None`):
/// recomputes the batch breakdown and the live value on demand from its
/// activities, signals and open deals. `Ok(None)` when there is no such
/// contact. See the [module docs](self) for how the two relate.
pub async fn explain(
    tx: &mut dyn Transaction,
    model: &ScoringModel,
    contact: ContactId,
    now: Option<Timestamp>,
) -> Result<Option<Explanation>> {
    let now = truncate_to_micros(now.unwrap_or_else(Utc::now));
    let Some(c) = tx.get_contact(contact).await? else {
        return Ok(None);
    };
    let mut inputs = ContactInputs {
        id: c.id,
        created_at: c.created_at,
        score: c.score,
        activities: Vec::new(),
        signals: Vec::new(),
        open_deals: Vec::new(),
    };
    let mut page = PageRequest::first(crate::store::MAX_PAGE_SIZE);
    loop {
        let p = tx.timeline(contact, &page).await?;
        inputs
            .activities
            .extend(p.items.iter().map(|a| (a.kind, a.occurred_at)));
        match p.next_cursor {
            Some(cursor) => page = PageRequest::after(crate::store::MAX_PAGE_SIZE, cursor),
            None => break,
        }
    }
    inputs.signals = tx
        .list_signals(contact)
        .await?
        .into_iter()
        .map(|s| (s.kind, s.occurred_at))
        .collect();
    let mut page = PageRequest::first(crate::store::MAX_PAGE_SIZE);
    loop {
        let p = tx.list_deals_for_contact(contact, &page).await?;
        inputs.open_deals.extend(
            p.items
                .iter()
                .filter(|d| d.won_at.is_none() && d.lost_at.is_none())
                .map(|d| d.created_at),
        );
        match p.next_cursor {
            Some(cursor) => page = PageRequest::after(crate::store::MAX_PAGE_SIZE, cursor),
            None => break,
        }
    }
    let live_log = tx
        .live_score_log(contact)
        .await?
        .and_then(|state| state.log);
    let live_terms = inputs
        .activities
        .iter()
        .filter(|(k, t)| model.log_term(model.activity_signal(*k), *t).is_some())
        .count()
        + inputs
            .signals
            .iter()
            .filter(|(k, t)| model.log_term(k, *t).is_some())
            .count();
    Ok(Some(Explanation {
        contact,
        now,
        eligible: model.is_eligible(now, c.created_at, c.active),
        stored_score: c.score,
        batch: model.score(now, inputs.scoring_inputs(model)),
        live_log,
        live_log_recomputed: inputs.live_log_sum(model),
        live_terms,
        live_decayed_sum: model.decayed_from_log(live_log, now),
        live_score: model.score_from_log(live_log, now),
    }))
}
