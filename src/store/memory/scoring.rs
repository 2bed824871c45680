//! Scoring for `InMemoryStore` ([`ScoringTx`]): score write-backs, the
//! rescoring pipeline's input chunks and the live score state kept per
//! contact (see [`crate::scoring::live`]).

use std::collections::HashMap;

use async_trait::async_trait;
use uuid::Uuid;

use super::{MemoryTransaction, TenantData, Undo};
use crate::{
    domain::{
        ACCOUNT_TOP_CONTACTS, Activity, ActivityId, CompanyId, Contact, ContactId, ContactInputs,
        ContactScore, DealId, InputsRequest, LiveRanked, LiveRankedAccount, LiveState, Signal,
        SignalId, SignalKind, Timestamp,
    },
    error::Result,
    scoring::ScoringModel,
    store::{PageRequest, ScoringTx, shared},
};

/// Sets (or clears) a contact's live state; returns the previous one.
pub(super) fn put_live(data: &mut TenantData, id: ContactId, value: Option<f64>) -> Option<f64> {
    match value {
        Some(v) => data.live_scores.insert(id, v),
        None => data.live_scores.remove(&id),
    }
}

impl MemoryTransaction {
    pub(super) fn set_live(&mut self, id: ContactId, value: Option<f64>) -> Result<()> {
        let tenant = self.tenant;
        let old = put_live(self.data_mut()?, id, value);
        self.undo.push(Undo::LiveScore(tenant, id, old));
        Ok(())
    }

    /// Adds one term to a contact's live state, computed in Rust from the
    /// state read under the store's lock (the same computation as on
    /// PostgreSQL, so both keep identical bits).
    fn live_add(&mut self, id: ContactId, kind: &SignalKind, at: Timestamp) -> Result<()> {
        let Some(model) = self.live_scoring.clone() else {
            return Ok(());
        };
        let Some(term) = model.log_term(kind, at) else {
            return Ok(());
        };
        let current = self.data()?.live_scores.get(&id).copied();
        self.set_live(id, Some(ScoringModel::log_add(current, term)))
    }

    /// Adds the live state of `loser` (being merged away) to the
    /// survivor's, as PostgreSQL does.
    pub(super) fn live_merge(&mut self, survivor: ContactId, loser: ContactId) -> Result<()> {
        if self.live_scoring.is_none() {
            return Ok(());
        }
        let data = self.data()?;
        let Some(gone) = data.live_scores.get(&loser).copied() else {
            return Ok(());
        };
        let current = data.live_scores.get(&survivor).copied();
        self.set_live(survivor, Some(ScoringModel::log_add(current, gone)))
    }

    pub(super) fn live_add_activity(&mut self, a: &Activity) -> Result<()> {
        let Some(model) = self.live_scoring.clone() else {
            return Ok(());
        };
        self.live_add(a.contact_id, model.activity_signal(a.kind), a.occurred_at)
    }

    pub(super) fn live_add_signal(&mut self, s: &Signal) -> Result<()> {
        self.live_add(s.contact_id, &s.kind, s.occurred_at)
    }
}

#[async_trait]
impl ScoringTx for MemoryTransaction {
    async fn write_scores(&mut self, scores: &[ContactScore]) -> Result<u64> {
        let mut changed = 0;
        for ContactScore { contact: id, score } in shared::last_score_per_contact(scores) {
            let Some(c) = self.data()?.contacts.get(&id) else {
                continue;
            };
            if c.score == score {
                continue;
            }
            let old = c.score;
            let mut next = c.clone();
            next.score = score;
            self.set_contact(id, Some(next))?;
            self.feed_score(id.as_uuid(), old, score)?;
            changed += 1;
        }
        Ok(changed)
    }

    async fn scoring_inputs(&mut self, request: &InputsRequest) -> Result<Vec<ContactInputs>> {
        let request = request.checked()?;
        let data = self.data()?;
        let mut ids: Vec<&Contact> = data
            .contacts
            .values()
            .filter(|c| {
                c.active
                    && c.created_at >= request.created_from
                    && request.after.is_none_or(|a| c.id > a)
            })
            .collect();
        ids.sort_unstable_by_key(|c| c.id);
        ids.truncate(request.limit as usize);
        let from = request
            .inputs_from
            .map_or(i64::MIN, |t| t.timestamp_micros());
        let mut out = Vec::with_capacity(ids.len());
        for c in ids {
            let id = c.id;
            let activities = data
                .timeline
                .range(
                    (id, from, ActivityId::from_uuid(Uuid::nil()))
                        ..=(id, i64::MAX, ActivityId::from_uuid(Uuid::max())),
                )
                .filter_map(|k| data.activities.get(&k.2))
                .map(|a| (a.kind, a.occurred_at))
                .collect();
            let signals = data
                .signals
                .range(
                    (id, from, SignalId::from_uuid(Uuid::nil()))
                        ..=(id, i64::MAX, SignalId::from_uuid(Uuid::max())),
                )
                .map(|(_, s)| (s.kind.clone(), s.occurred_at))
                .collect();
            let open_deals = data
                .deals_by_contact
                .range(
                    (id, from, DealId::from_uuid(Uuid::nil()))
                        ..=(id, i64::MAX, DealId::from_uuid(Uuid::max())),
                )
                .filter_map(|k| data.deals.get(&k.2))
                .filter(|d| d.won_at.is_none() && d.lost_at.is_none())
                .map(|d| d.created_at)
                .collect();
            out.push(ContactInputs {
                id,
                created_at: c.created_at,
                score: c.score,
                activities,
                signals,
                open_deals,
            });
        }
        Ok(out)
    }

    async fn live_score_log(&mut self, id: ContactId) -> Result<Option<LiveState>> {
        let data = self.data()?;
        if !data.contacts.contains_key(&id) {
            return Ok(None);
        }
        Ok(Some(LiveState::new(id, data.live_scores.get(&id).copied())))
    }

    async fn live_top_leads(&mut self, limit: u32) -> Result<Vec<LiveRanked>> {
        let limit = PageRequest::first(limit).checked_limit()?;
        let data = self.data()?;
        let mut all: Vec<(f64, ContactId)> = data
            .live_scores
            .iter()
            .filter(|(id, _)| data.contacts.get(id).is_some_and(|c| c.active))
            .map(|(id, l)| (*l, *id))
            .collect();
        // Highest first, ties by id descending (PostgreSQL: score_log DESC,
        // id DESC). States are finite and never -0.0 (see
        // `shared::checked_live_states`),
        // so the numeric order is PostgreSQL's.
        all.sort_unstable_by(|a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.1.cmp(&a.1))
        });
        Ok(all
            .into_iter()
            .take(limit)
            .filter_map(|(log, id)| {
                data.contacts.get(&id).map(|c| LiveRanked {
                    contact: c.clone(),
                    log,
                })
            })
            .collect())
    }

    async fn live_top_accounts(&mut self, limit: u32) -> Result<Vec<LiveRankedAccount>> {
        let limit = PageRequest::first(limit).checked_limit()?;
        let data = self.data()?;
        let mut logs: HashMap<CompanyId, Vec<(ContactId, f64)>> = HashMap::new();
        for (id, l) in &data.live_scores {
            let Some(company) = data
                .contacts
                .get(id)
                .filter(|c| c.active)
                .and_then(|c| c.company_id)
            else {
                continue;
            };
            logs.entry(company).or_default().push((*id, *l));
        }
        let mut accounts: Vec<LiveRankedAccount> = logs
            .into_iter()
            .filter_map(|(id, mut best)| {
                best.sort_unstable_by(LiveRankedAccount::contact_order);
                best.truncate(ACCOUNT_TOP_CONTACTS);
                data.companies.get(&id).map(|c| LiveRankedAccount {
                    company: c.clone(),
                    best_contacts: best,
                })
            })
            .collect();
        accounts.sort_by(LiveRankedAccount::rank);
        accounts.truncate(limit);
        Ok(accounts)
    }

    async fn write_live_score_logs(&mut self, states: &[LiveState]) -> Result<u64> {
        // One per contact, each finite.
        let states = shared::checked_live_states(states)?;
        let mut set = 0;
        for &LiveState { contact: id, log } in &states {
            if !self.data()?.contacts.contains_key(&id) {
                continue;
            }
            self.set_live(id, log)?;
            set += 1;
        }
        Ok(set)
    }
}
