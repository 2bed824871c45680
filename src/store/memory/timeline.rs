//! Activities and signals in the in-memory store ([`TimelineTx`]): each
//! write also adds its term to the contact's live score and moves its
//! freshness.

use async_trait::async_trait;
use uuid::Uuid;

use super::{MemoryTransaction, page_desc};
use crate::{
    domain::{
        Activity, ActivityId, ContactId, NewActivity, NewSignal, Signal, SignalId,
        deal_of_another_contact,
    },
    error::Result,
    store::{
        CursorList, Page, PageRequest, TimeIdKey, TimelineTx, shared::now, timeline::row_error,
    },
};

#[async_trait]
impl TimelineTx for MemoryTransaction {
    async fn log_activity(&mut self, new: NewActivity) -> Result<Activity> {
        let new = new.checked()?;
        self.contact(new.contact_id)?;
        if let Some(deal_id) = new.deal_id {
            let deal = self.deal(deal_id)?;
            if deal.contact_id != new.contact_id {
                return Err(deal_of_another_contact().into());
            }
        }
        let activity = Activity::create(self.tenant, new, now());
        self.atomic(|tx| {
            tx.set_activity(activity.id, Some(activity.clone()))?;
            tx.fresh_engaged(activity.contact_id, None, activity.occurred_at)?;
            tx.live_add_activity(&activity)
        })?;
        Ok(activity)
    }

    async fn log_activities(&mut self, new: &[NewActivity]) -> Result<Vec<Activity>> {
        // Every row checked as one call checks it, in order, before
        // anything is written.
        let mut activities = Vec::with_capacity(new.len());
        for (i, new) in new.iter().enumerate() {
            let new = new
                .clone()
                .checked()
                .map_err(|e| row_error("activities", i, e.into()))?;
            self.contact(new.contact_id)?;
            if let Some(deal_id) = new.deal_id
                && self.deal(deal_id)?.contact_id != new.contact_id
            {
                return Err(row_error("activities", i, deal_of_another_contact().into()));
            }
            activities.push(Activity::create(self.tenant, new, now()));
        }
        self.atomic(|tx| {
            for activity in &activities {
                tx.set_activity(activity.id, Some(activity.clone()))?;
                tx.fresh_engaged(activity.contact_id, None, activity.occurred_at)?;
                tx.live_add_activity(activity)?;
            }
            Ok(())
        })?;
        Ok(activities)
    }

    async fn timeline(&mut self, contact: ContactId, page: &PageRequest) -> Result<Page<Activity>> {
        let limit = page.checked_limit()?;
        let after: Option<TimeIdKey> = page.position(CursorList::timeline(contact))?;
        let data = self.data()?;
        let items = page_desc(
            &data.timeline,
            (contact, i64::MIN, ActivityId::from_uuid(Uuid::nil())),
            (contact, i64::MAX, ActivityId::from_uuid(Uuid::max())),
            after.map(|(t, id)| (contact, t, ActivityId::from_uuid(id))),
            limit,
            |k| data.activities.get(&k.2).cloned(),
        );
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::timeline(contact),
            |a: &Activity| (a.occurred_at.timestamp_micros(), a.id.as_uuid()),
        ))
    }

    async fn record_signal(&mut self, new: NewSignal) -> Result<Signal> {
        let new = new.checked()?;
        self.contact(new.contact_id)?;
        let signal = Signal::create(self.tenant, new, now());
        self.atomic(|tx| {
            tx.set_signal(
                (
                    signal.contact_id,
                    signal.occurred_at.timestamp_micros(),
                    signal.id,
                ),
                Some(signal.clone()),
            )?;
            tx.fresh_engaged(signal.contact_id, Some(&signal.kind), signal.occurred_at)?;
            tx.live_add_signal(&signal)
        })?;
        Ok(signal)
    }

    async fn record_signals(&mut self, new: &[NewSignal]) -> Result<Vec<Signal>> {
        let mut signals = Vec::with_capacity(new.len());
        for (i, new) in new.iter().enumerate() {
            let new = new
                .clone()
                .checked()
                .map_err(|e| row_error("signals", i, e.into()))?;
            self.contact(new.contact_id)?;
            signals.push(Signal::create(self.tenant, new, now()));
        }
        self.atomic(|tx| {
            for signal in &signals {
                tx.set_signal(
                    (
                        signal.contact_id,
                        signal.occurred_at.timestamp_micros(),
                        signal.id,
                    ),
                    Some(signal.clone()),
                )?;
                tx.fresh_engaged(signal.contact_id, Some(&signal.kind), signal.occurred_at)?;
                tx.live_add_signal(signal)?;
            }
            Ok(())
        })?;
        Ok(signals)
    }

    async fn list_signals(&mut self, contact: ContactId) -> Result<Vec<Signal>> {
        let lo = (contact, i64::MIN, SignalId::from_uuid(Uuid::nil()));
        let hi = (contact, i64::MAX, SignalId::from_uuid(Uuid::max()));
        Ok(self
            .data()?
            .signals
            .range(lo..=hi)
            .map(|(_, s)| s.clone())
            .collect())
    }
}
