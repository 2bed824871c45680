//! A tenant's sync with HubSpot over the store: push as a change-feed
//! consumer, pull as an incremental window, ids mapped in the store.
//!
//! - **Push** ([`HubSpotSync::push`]) reads the tenant's change feed as the
//!   consumer [`SyncOptions::consumer`] and sends the contacts and deals
//!   that changed, in batches: contacts HubSpot knows (their id is mapped)
//!   are updated by HubSpot id, the others upserted by email; deals are
//!   upserted by the unique property [`SyncOptions::deal_id_property`]
//!   (`crm_core_id`, holding the deal's crm-core id), then associated with
//!   their contact. The HubSpot ids are linked
//!   ([`ExternalIdsTx`](crate::store::ExternalIdsTx)) and the consumer
//!   acked in one transaction, only after HubSpot accepted the batch. A
//!   process stopped between HubSpot's answer and that transaction sends
//!   the batch again, which creates nothing twice: every call is an upsert
//!   or an update by a key HubSpot holds, and associating twice changes
//!   nothing.
//! - **Pull** ([`HubSpotSync::pull`]) reads the contacts HubSpot changed
//!   since the stored window (minus [`PULL_OVERLAP`](super::PULL_OVERLAP)),
//!   paged by (`lastmodifieddate`, `hs_object_id`), writes them through
//!   [`BulkTx::upsert_contacts`](crate::store::BulkTx::upsert_contacts) by
//!   email (the policy [`SyncOptions::pull_policy`]), links their ids and
//!   stores the new window.
//! - **No echo.** The pull writes as the actor [`SYNC_ACTOR`]; the push
//!   skips the events that actor made, so a change that came from HubSpot
//!   is not sent back. A contact the push sent comes back in the next pull
//!   with the values it was sent with: nothing changes, nothing is
//!   written.
//! - **Links follow HubSpot's answers.** A HubSpot id that HubSpot answers
//!   with moves to the record it answered for (a contact deleted and
//!   created again with its email, two contacts HubSpot merged); a linked
//!   HubSpot record that is gone is replaced by an upsert by email; a
//!   contact HubSpot got in a run stopped before its ack, whose email
//!   changed since, is found there by its old email. A pulled record
//!   linked to a contact crm-core deleted or erased is not brought back.
//! - **The newer change wins.** A pulled record applies to the contact it
//!   is linked to (its email too) or, unlinked, to the contact with its
//!   email, only when HubSpot changed it after the contact last changed
//!   here; a local change not pushed yet is kept and pushed. A linked
//!   contact's empty fields are cleared in HubSpot (`""`).
//! - **Associations follow the deal's contact**: a deal that moves to
//!   another contact (a merge moves the loser's) loses the association
//!   with the one it left, and a contact that reaches HubSpot late (it was
//!   refused, or existed before the sync) gets its deals' associations.
//!
//! Run one push and one pull per tenant at a time (for example from one
//! scheduled worker): two pushes of one consumer would send the same
//! batch twice (harmlessly, as above) and race on the cursor.
//!
//! On HubSpot, create the deal property `crm_core_id` (a single-line text
//! property with unique values) once per portal before the first push:
//! see the README's HubSpot section.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use uuid::Uuid;

use super::{BatchOutcome, HubSpotClient, HubSpotError, InputOutcome, ObjectType, UpsertInput};
use crate::{
    Actor, Context, Store, TenantId,
    bulk::ConflictPolicy,
    domain::{
        ConsumerName, Contact, ContactId, ContactPatch, Deal, DealId, Email, EntityKind,
        ExternalId, ExternalLink, ExternalSystem, FeedKind, MAX_EXTERNAL_LINKS, NewContact,
        NewContactDto, Timestamp, UpsertOutcome, conflict_patch,
    },
    error::Error,
    store::{MAX_GET_MANY, PageRequest, Transaction},
};

/// The external system's name under which HubSpot ids are linked.
pub const SYSTEM: &str = "hubspot";
/// The actor of the pull's writes (and of the push's bookkeeping); the
/// push skips the events this actor made.
pub const SYNC_ACTOR: &str = "sync:hubspot";
/// The HubSpot deal property holding a deal's crm-core id (unique values).
pub const DEAL_ID_PROPERTY: &str = "crm_core_id";
/// The contact properties the sync sends and reads.
pub const CONTACT_PROPERTIES: [&str; 6] = [
    "email",
    "firstname",
    "lastname",
    "phone",
    "jobtitle",
    "company",
];

/// How a [`HubSpotSync`] runs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The feed consumer the push reads as (default `hubspot-push`).
    pub consumer: ConsumerName,
    /// Events read per push batch (default 1,000; at most
    /// [`MAX_FEED_BATCH`](crate::domain::MAX_FEED_BATCH)).
    pub batch_events: usize,
    /// How pulled contacts meet stored ones (default
    /// [`ConflictPolicy::NonEmptyIncoming`]: HubSpot's filled values win, its
    /// empty ones keep what is stored).
    pub pull_policy: ConflictPolicy,
    /// The HubSpot deal property deals are upserted by (default
    /// [`DEAL_ID_PROPERTY`]).
    pub deal_id_property: String,
    /// crm-core stage → HubSpot `dealstage` (default: the default
    /// pipeline's stages to HubSpot's default pipeline's; a stage not
    /// listed is sent as it is).
    pub stage_map: BTreeMap<String, String>,
    /// crm-core pipeline → HubSpot `pipeline` (default: `default` to
    /// `default`; a pipeline not listed is sent as it is).
    pub pipeline_map: BTreeMap<String, String>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        let stages = [
            ("qualified", "qualifiedtobuy"),
            ("proposal", "presentationscheduled"),
            ("negotiation", "contractsent"),
            ("closed_won", "closedwon"),
            ("closed_lost", "closedlost"),
        ];
        SyncOptions {
            consumer: ConsumerName::parse("hubspot-push")
                .unwrap_or_else(|_| unreachable!("a valid consumer name")),
            batch_events: 1000,
            pull_policy: ConflictPolicy::NonEmptyIncoming,
            deal_id_property: DEAL_ID_PROPERTY.to_string(),
            stage_map: stages
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            pipeline_map: [("default".to_string(), "default".to_string())].into(),
        }
    }
}

/// A record the sync could not carry over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFailure {
    /// Contact or deal.
    pub kind: EntityKind,
    /// Its crm-core id, when it has one.
    pub record: Option<Uuid>,
    /// Its HubSpot id or email, when known.
    pub external: Option<String>,
    /// Why (HubSpot's message, or the fields crm-core refused).
    pub reason: String,
}

/// What a push or a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Records sent to HubSpot and accepted (push), or written into
    /// crm-core, created or changed (pull).
    pub pushed: u64,
    /// Records written into crm-core (pull).
    pub pulled: u64,
    /// Pull: records HubSpot sent that crm-core held already as they are.
    /// Push: changes skipped because they came from HubSpot.
    pub unchanged: u64,
    /// Records refused, with the reason (a push acks them: they are not
    /// sent again until they change).
    pub failed: Vec<SyncFailure>,
    /// Feed events read (push) or HubSpot records read (pull).
    pub read: u64,
}

/// A sync run that stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The store failed; nothing of the current batch was acked.
    #[error("the store failed: {0}")]
    Store(#[from] Error),
    /// HubSpot failed after the client's retries (or its breaker is open);
    /// nothing of the current batch was acked. `report` holds what the
    /// run did before.
    #[error("HubSpot failed: {error}")]
    HubSpot {
        /// The failure.
        error: HubSpotError,
        /// What was done before it.
        report: Box<SyncReport>,
    },
}

/// The sync of one tenant with one HubSpot portal.
#[derive(Debug, Clone)]
pub struct HubSpotSync {
    client: HubSpotClient,
    store: Arc<dyn Store>,
    tenant: TenantId,
    options: SyncOptions,
    system: ExternalSystem,
    context: Context,
}

fn actor() -> Actor {
    Actor::parse(SYNC_ACTOR).unwrap_or_else(|_| unreachable!("a valid actor"))
}

impl HubSpotSync {
    /// The sync of `tenant` in `store` with the portal `client` talks to.
    pub fn new(client: HubSpotClient, store: Arc<dyn Store>, tenant: TenantId) -> Self {
        HubSpotSync {
            client,
            store,
            tenant,
            options: SyncOptions::default(),
            system: ExternalSystem::parse(SYSTEM)
                .unwrap_or_else(|_| unreachable!("a valid system name")),
            context: Context::new(actor()),
        }
    }

    /// The same sync with `options`.
    pub fn with_options(mut self, options: SyncOptions) -> Self {
        self.options = options;
        self
    }

    /// Its options.
    pub fn options(&self) -> &SyncOptions {
        &self.options
    }

    async fn begin(&self) -> Result<Box<dyn Transaction>, Error> {
        self.store.begin(self.tenant, self.context.clone()).await
    }

    /// Sends every change of a contact or deal since the consumer's cursor,
    /// batch by batch, until the feed is read to its head. See the
    /// [module docs](self).
    pub async fn push(&self) -> Result<SyncReport, SyncError> {
        let mut report = SyncReport::default();
        loop {
            match self.push_batch(&mut report).await {
                Ok(true) => continue,
                Ok(false) => return Ok(report),
                Err(Stop::Store(e)) => return Err(SyncError::Store(e)),
                Err(Stop::HubSpot(error)) => {
                    return Err(SyncError::HubSpot {
                        error,
                        report: Box::new(report),
                    });
                }
            }
        }
    }

    /// One batch: false when the feed had nothing left.
    async fn push_batch(&self, report: &mut SyncReport) -> Result<bool, Stop> {
        let opts = &self.options;
        // What changed, and the records as they are now.
        let mut tx = self.begin().await?;
        let events = tx.next_batch(&opts.consumer, opts.batch_events).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            tx.commit().await?;
            return Ok(false);
        };
        report.read += events.len() as u64;
        let (mut contact_ids, mut deal_ids) = (Vec::new(), Vec::new());
        let (mut seen_contacts, mut seen_deals) = (HashSet::new(), HashSet::new());
        // The emails a contact had before this batch's changes: a contact
        // HubSpot got in a run that stopped before its ack, and whose email
        // changed since, is found there by its old email.
        let mut old_emails: HashMap<Uuid, Vec<String>> = HashMap::new();
        let mut left_contacts: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        let mut created_here: HashSet<Uuid> = HashSet::new();
        for e in &events {
            if e.kind == FeedKind::Contact
                && let Some(old) = e
                    .diff
                    .as_ref()
                    .and_then(|d| d.get("email"))
                    .and_then(|c| c.old.as_str())
            {
                old_emails.entry(e.id).or_default().push(old.to_string());
            }
            if e.kind == FeedKind::Contact && e.operation == crate::history::Operation::Created {
                created_here.insert(e.id);
            }
            // The contacts a deal left in this batch (a move, a merge).
            if e.kind == FeedKind::Deal
                && let Some(old) = e
                    .diff
                    .as_ref()
                    .and_then(|d| d.get("contact_id"))
                    .and_then(|c| c.old.as_str())
                    .and_then(|s| s.parse::<Uuid>().ok())
            {
                left_contacts.entry(e.id).or_default().push(old);
            }
            if e.actor == SYNC_ACTOR {
                if matches!(e.kind, FeedKind::Contact | FeedKind::Deal) {
                    report.unchanged += 1;
                }
                continue;
            }
            match e.kind {
                FeedKind::Contact if seen_contacts.insert(e.id) => contact_ids.push(e.id),
                FeedKind::Deal if seen_deals.insert(e.id) => deal_ids.push(e.id),
                _ => {}
            }
        }
        let mut deals: Vec<Deal> = Vec::new();
        for chunk in deal_ids.chunks(MAX_GET_MANY) {
            let ids: Vec<DealId> = chunk.iter().map(|id| DealId::from_uuid(*id)).collect();
            deals.extend(tx.get_deals(&ids).await?);
        }
        // A deal's contact goes first when HubSpot does not know it yet.
        let deal_contacts: Vec<Uuid> = deals.iter().map(|d| d.contact_id.as_uuid()).collect();
        let known = self
            .external_ids(&mut *tx, EntityKind::Contact, &deal_contacts)
            .await?;
        for c in deal_contacts {
            if !known.contains_key(&c) && seen_contacts.insert(c) {
                contact_ids.push(c);
            }
        }
        let mut contacts: Vec<Contact> = Vec::new();
        for chunk in contact_ids.chunks(MAX_GET_MANY) {
            let ids: Vec<ContactId> = chunk.iter().map(|id| ContactId::from_uuid(*id)).collect();
            contacts.extend(
                tx.get_contacts(&ids)
                    .await?
                    .into_iter()
                    .filter(|c| !c.is_erased()),
            );
        }
        let mut contact_map = self
            .external_ids(
                &mut *tx,
                EntityKind::Contact,
                &contacts.iter().map(|c| c.id.as_uuid()).collect::<Vec<_>>(),
            )
            .await?;
        tx.commit().await?;
        // The HubSpot ids of the deals' contacts that this batch does not
        // send, for the associations.
        for (c, id) in known {
            contact_map.entry(c).or_insert(id);
        }

        // Contacts: known ones updated by HubSpot id, the others upserted
        // by email. An unknown one whose email changed in this batch may
        // be in HubSpot under its old email (sent by a run that stopped
        // before its ack): it is found there first.
        let mut links = Vec::new();
        let lost: Vec<String> = contacts
            .iter()
            .filter(|c| !contact_map.contains_key(&c.id.as_uuid()))
            .flat_map(|c| {
                old_emails
                    .get(&c.id.as_uuid())
                    .into_iter()
                    .flatten()
                    .cloned()
            })
            .collect();
        if !lost.is_empty() {
            let found = self
                .client
                .batch_read(&ObjectType::Contacts, &lost, Some("email"), &["email"])
                .await
                .map_err(Stop::HubSpot)?;
            let by_email: HashMap<String, String> = found
                .found
                .into_iter()
                .filter_map(|r| Some((r.property("email")?.to_lowercase(), r.id)))
                .collect();
            for c in &contacts {
                let id = c.id.as_uuid();
                if contact_map.contains_key(&id) {
                    continue;
                }
                let hit = old_emails
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .find_map(|e| by_email.get(&e.to_lowercase()));
                if let Some(hs) = hit.and_then(|h| ExternalId::parse(h).ok()) {
                    contact_map.insert(id, hs);
                }
            }
        }
        let (known, mut new): (Vec<&Contact>, Vec<&Contact>) = contacts
            .iter()
            .partition(|c| contact_map.contains_key(&c.id.as_uuid()));
        let updates: Vec<UpsertInput> = known
            .iter()
            .map(|c| contact_input(contact_map[&c.id.as_uuid()].as_str(), c, true))
            .collect();
        let mut outcome = self
            .client
            .batch_update(&ObjectType::Contacts, &updates)
            .await
            .map_err(Stop::HubSpot)?;
        // A HubSpot record that is gone (deleted there): the contact is
        // upserted by email instead, and linked again.
        let mut updated = Vec::with_capacity(known.len());
        let mut outcomes = Vec::with_capacity(known.len());
        for (c, o) in known.into_iter().zip(std::mem::take(&mut outcome.outcomes)) {
            match &o {
                InputOutcome::Rejected(e) if e.category.as_deref() == Some("OBJECT_NOT_FOUND") => {
                    contact_map.remove(&c.id.as_uuid());
                    new.push(c);
                }
                _ => {
                    updated.push(c);
                    outcomes.push(o);
                }
            }
        }
        outcome.outcomes = outcomes;
        self.settle(&updated, outcome, EntityKind::Contact, &mut links, report)?;
        let upserts: Vec<UpsertInput> = new
            .iter()
            .map(|c| contact_input(c.email.as_str(), c, false))
            .collect();
        let outcome = self
            .client
            .upsert_contacts_by_email(&upserts)
            .await
            .map_err(Stop::HubSpot)?;
        self.settle(&new, outcome, EntityKind::Contact, &mut links, report)?;
        // A contact that reaches HubSpot only now, though it was created
        // before this batch (it was refused, or the sync started after
        // it): its deals HubSpot has are associated with it now, and those
        // it does not have are sent.
        let late: Vec<Uuid> = links
            .iter()
            .map(|l| l.record)
            .filter(|c| !contact_map.contains_key(c) && !created_here.contains(c))
            .collect();
        for l in &links {
            contact_map.insert(l.record, l.external.clone());
        }
        if !late.is_empty() {
            let mut tx = self.begin().await?;
            for c in late {
                // Every deal of the contact, page by page.
                let mut request = PageRequest::first(100);
                loop {
                    let page = tx
                        .list_deals_for_contact(ContactId::from_uuid(c), &request)
                        .await?;
                    for d in page.items {
                        if seen_deals.insert(d.id.as_uuid()) {
                            deals.push(d);
                        }
                    }
                    match page.next_cursor {
                        Some(cursor) => request = PageRequest::after(100, cursor),
                        None => break,
                    }
                }
            }
            tx.commit().await?;
        }

        // Deals: upserted by their crm-core id, then associated with their
        // contact (by default association; sending it twice is harmless).
        let inputs: Vec<UpsertInput> = deals.iter().map(|d| self.deal_input(d)).collect();
        let outcome = self
            .client
            .batch_upsert(&ObjectType::Deals, &opts.deal_id_property, &inputs)
            .await
            .map_err(Stop::HubSpot)?;
        let deal_refs: Vec<&Deal> = deals.iter().collect();
        let before = links.len();
        self.settle(&deal_refs, outcome, EntityKind::Deal, &mut links, report)?;
        let mut pairs = Vec::new();
        for link in &links[before..] {
            if let Some(d) = deals.iter().find(|d| d.id.as_uuid() == link.record)
                && let Some(c) = contact_map.get(&d.contact_id.as_uuid())
            {
                pairs.push((link.external.as_str().to_string(), c.as_str().to_string()));
            }
        }
        let refused = self
            .client
            .associate_default(&ObjectType::Deals, &ObjectType::Contacts, &pairs)
            .await
            .map_err(Stop::HubSpot)?;
        for e in refused {
            report.failed.push(SyncFailure {
                kind: EntityKind::Deal,
                record: None,
                external: None,
                reason: format!("association with its contact refused: {}", describe(&e)),
            });
        }
        // A deal that moved to another contact (a merge moves the loser's)
        // leaves the association with the one it left.
        let left: Vec<Uuid> = deals
            .iter()
            .flat_map(|d| {
                left_contacts
                    .get(&d.id.as_uuid())
                    .into_iter()
                    .flatten()
                    .copied()
            })
            .collect();
        if !left.is_empty() {
            let mut tx = self.begin().await?;
            let left_ids = self
                .external_ids(&mut *tx, EntityKind::Contact, &left)
                .await?;
            tx.commit().await?;
            let mut gone = Vec::new();
            for link in &links[before..] {
                let Some(d) = deals.iter().find(|d| d.id.as_uuid() == link.record) else {
                    continue;
                };
                let now = contact_map.get(&d.contact_id.as_uuid());
                for c in left_contacts.get(&link.record).into_iter().flatten() {
                    if let Some(hs) = left_ids.get(c)
                        && Some(hs) != now
                    {
                        gone.push((link.external.as_str().to_string(), hs.as_str().to_string()));
                    }
                }
            }
            self.client
                .disassociate(&ObjectType::Deals, &ObjectType::Contacts, &gone)
                .await
                .map_err(Stop::HubSpot)?;
        }

        // Accepted: link the ids and move the cursor, together.
        let mut tx = self.begin().await?;
        self.relink(&mut *tx, links, report).await?;
        tx.ack(&opts.consumer, last).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Links records to the HubSpot ids HubSpot answered with. The answer
    /// wins over what was linked before: a HubSpot id still linked to
    /// another record (a contact deleted or erased here and created again,
    /// or two records HubSpot merged into one) is moved to this one; two
    /// records of one call that HubSpot resolved to one id keep the last,
    /// and the other is reported.
    async fn relink(
        &self,
        tx: &mut dyn Transaction,
        links: Vec<ExternalLink>,
        report: &mut SyncReport,
    ) -> Result<(), Error> {
        let mut by_external: HashMap<(EntityKind, ExternalId), Uuid> = HashMap::new();
        let mut by_record: HashSet<(EntityKind, Uuid)> = HashSet::new();
        let mut kept = Vec::with_capacity(links.len());
        for l in links.into_iter().rev() {
            if let Some(other) = by_external.get(&(l.kind, l.external.clone())) {
                if *other != l.record {
                    report.failed.push(SyncFailure {
                        kind: l.kind,
                        record: Some(l.record),
                        external: Some(l.external.as_str().to_string()),
                        reason: format!(
                            "HubSpot holds it as the same record as {} {other}",
                            l.kind
                        ),
                    });
                }
                continue;
            }
            if !by_record.insert((l.kind, l.record)) {
                continue;
            }
            by_external.insert((l.kind, l.external.clone()), l.record);
            kept.push(l);
        }
        kept.reverse();
        for kind in [EntityKind::Contact, EntityKind::Deal] {
            let of_kind: Vec<&ExternalLink> = kept.iter().filter(|l| l.kind == kind).collect();
            let externals: Vec<ExternalId> = of_kind.iter().map(|l| l.external.clone()).collect();
            let mut stale = Vec::new();
            for chunk in externals.chunks(MAX_EXTERNAL_LINKS) {
                let holders = tx.records_by_external_id(&self.system, kind, chunk).await?;
                stale.extend(holders.into_iter().filter_map(|(external, holder)| {
                    (by_external.get(&(kind, external)) != Some(&holder)).then_some(holder)
                }));
            }
            for chunk in stale.chunks(MAX_EXTERNAL_LINKS) {
                tx.unlink_external_ids(&self.system, kind, chunk).await?;
            }
        }
        for chunk in kept.chunks(MAX_EXTERNAL_LINKS) {
            tx.link_external_ids(&self.system, chunk).await?;
        }
        Ok(())
    }

    /// The HubSpot ids of `records`, read in chunks the store takes.
    async fn external_ids(
        &self,
        tx: &mut dyn Transaction,
        kind: EntityKind,
        records: &[Uuid],
    ) -> Result<HashMap<Uuid, ExternalId>, Error> {
        let mut out = HashMap::with_capacity(records.len());
        for chunk in records.chunks(MAX_EXTERNAL_LINKS) {
            out.extend(tx.external_ids(&self.system, kind, chunk).await?);
        }
        Ok(out)
    }

    /// Reads a batch's outcome: links what HubSpot wrote, reports what it
    /// refused, and stops (acking nothing) when anything else happened.
    fn settle<R: Record>(
        &self,
        records: &[&R],
        outcome: BatchOutcome,
        kind: EntityKind,
        links: &mut Vec<ExternalLink>,
        report: &mut SyncReport,
    ) -> Result<(), Stop> {
        if let Some(e) = outcome.stopped_by {
            return Err(Stop::HubSpot(e));
        }
        for (r, o) in records.iter().zip(outcome.outcomes) {
            match o {
                InputOutcome::Written { record, .. } => match ExternalId::parse(&record.id) {
                    Ok(external) => {
                        report.pushed += 1;
                        links.push(ExternalLink {
                            kind,
                            record: r.uuid(),
                            external,
                        });
                    }
                    Err(e) => report.failed.push(SyncFailure {
                        kind,
                        record: Some(r.uuid()),
                        external: Some(record.id.clone()),
                        reason: format!("HubSpot's id is not one crm-core keeps: {e}"),
                    }),
                },
                InputOutcome::Rejected(e) => report.failed.push(SyncFailure {
                    kind,
                    record: Some(r.uuid()),
                    external: None,
                    reason: describe(&e),
                }),
                // Accepted without an answer for it: send the batch again.
                _ => {
                    return Err(Stop::HubSpot(HubSpotError::Decode(format!(
                        "HubSpot's answer does not say what became of {kind} {}",
                        r.uuid()
                    ))));
                }
            }
        }
        Ok(())
    }

    fn deal_input(&self, d: &Deal) -> UpsertInput {
        let opts = &self.options;
        let map = |m: &BTreeMap<String, String>, k: &str| {
            m.get(k).cloned().unwrap_or_else(|| k.to_string())
        };
        let mut input = UpsertInput::new(d.id.as_uuid().to_string())
            .with("dealname", d.title.as_str())
            .with("amount", d.amount.amount().normalize().to_string())
            .with("deal_currency_code", d.amount.currency().code())
            .with("pipeline", map(&opts.pipeline_map, d.pipeline.as_str()))
            .with("dealstage", map(&opts.stage_map, d.stage.as_str()));
        if let Some(close) = d.expected_close_date {
            input = input.with("closedate", format!("{close}T00:00:00Z"));
        }
        input
    }

    /// Writes the contacts HubSpot changed since the stored window into
    /// the store, page by page, and stores the new window. See the
    /// [module docs](self).
    pub async fn pull(&self) -> Result<SyncReport, SyncError> {
        let mut report = SyncReport::default();
        let mut tx = self.begin().await?;
        let stored = tx.sync_window(&self.system, EntityKind::Contact).await?;
        tx.commit().await?;
        // A window stored past the clock (by a version that let a record
        // stamped in the future move it) would have every pull ask for
        // changes from then. When the last real pull was is not known, so
        // this one starts from the beginning (every record read again,
        // the unchanged reported so) and stores what it leaves.
        let start = match stored {
            Some(at) if at <= chrono::Utc::now() => at,
            _ => chrono::DateTime::UNIX_EPOCH,
        };
        let mut pull =
            self.client
                .pull_modified_since(ObjectType::Contacts, start, &CONTACT_PROPERTIES);
        let mut pending: Option<Vec<super::HubSpotRecord>> = None;
        loop {
            // The next page is asked for while this one is written: the
            // pull's pace is HubSpot's search budget, not the store's.
            let (next, written) = match pending.take() {
                Some(page) => {
                    let (next, written) =
                        tokio::join!(pull.next_page(), self.pull_page(&page, &mut report));
                    (next, written)
                }
                None => (pull.next_page().await, Ok(())),
            };
            written?;
            match next {
                Ok(Some(page)) => {
                    report.read += page.len() as u64;
                    pending = Some(page);
                }
                Ok(None) => break,
                Err(error) => {
                    return Err(SyncError::HubSpot {
                        error,
                        report: Box::new(report),
                    });
                }
            }
        }
        if let Some(page) = pending.take() {
            self.pull_page(&page, &mut report).await?;
        }
        let window = pull.window();
        if stored != Some(window) && (window > start || stored.is_some_and(|s| s > start)) {
            let mut tx = self.begin().await?;
            tx.set_sync_window(&self.system, EntityKind::Contact, window)
                .await?;
            tx.commit().await?;
        }
        Ok(report)
    }

    async fn pull_page(
        &self,
        page: &[super::HubSpotRecord],
        report: &mut SyncReport,
    ) -> Result<(), Error> {
        let mut rows: Vec<(NewContact, ExternalId, Option<Timestamp>)> =
            Vec::with_capacity(page.len());
        let mut emails = HashSet::new();
        for r in page {
            match pulled_contact(r) {
                Ok((row, id)) => {
                    // HubSpot keeps one contact per email; a page naming one
                    // twice would be a broken answer: keep the first.
                    if emails.insert(row.email.normalized().to_string()) {
                        let modified = r.last_modified(&ObjectType::Contacts);
                        rows.push((row, id, modified));
                    } else {
                        report.failed.push(SyncFailure {
                            kind: EntityKind::Contact,
                            record: None,
                            external: Some(r.id.clone()),
                            reason: format!(
                                "HubSpot sent {} twice in one page; the first was taken",
                                row.email
                            ),
                        });
                    }
                }
                Err(reason) => report.failed.push(SyncFailure {
                    kind: EntityKind::Contact,
                    record: None,
                    external: Some(r.id.clone()),
                    reason,
                }),
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        // The contacts these HubSpot records are linked to already.
        let externals: Vec<ExternalId> = rows.iter().map(|(_, id, _)| id.clone()).collect();
        let mut holders: HashMap<ExternalId, Uuid> = HashMap::new();
        for chunk in externals.chunks(MAX_EXTERNAL_LINKS) {
            holders.extend(
                tx.records_by_external_id(&self.system, EntityKind::Contact, chunk)
                    .await?,
            );
        }
        let mut linked: HashMap<Uuid, Contact> = HashMap::new();
        let holder_ids: Vec<ContactId> =
            holders.values().map(|u| ContactId::from_uuid(*u)).collect();
        for chunk in holder_ids.chunks(MAX_GET_MANY) {
            for c in tx.get_contacts(chunk).await? {
                linked.insert(c.id.as_uuid(), c);
            }
        }
        // The contacts holding the unlinked records' emails.
        let unlinked: Vec<Email> = rows
            .iter()
            .filter(|(_, id, _)| !holders.contains_key(id))
            .map(|(row, _, _)| row.email.clone())
            .collect();
        let mut by_email: HashMap<String, Contact> = HashMap::new();
        for chunk in unlinked.chunks(MAX_GET_MANY) {
            for c in tx.get_contacts_by_email(chunk).await? {
                by_email.insert(c.email.normalized().to_string(), c);
            }
        }
        let mut links = Vec::with_capacity(rows.len());
        let mut new_rows = Vec::new();
        let mut new_ids = Vec::new();
        for (row, external, modified) in rows {
            let target = match holders.get(&external) {
                // Linked to a contact deleted (or erased) here: it stays
                // deleted.
                Some(holder) if !linked.contains_key(holder) => {
                    report.failed.push(SyncFailure {
                        kind: EntityKind::Contact,
                        record: Some(*holder),
                        external: Some(external.as_str().to_string()),
                        reason: "deleted in crm-core; not brought back".to_string(),
                    });
                    continue;
                }
                Some(holder) => linked.get(holder).cloned().map(|c| (c, true)),
                None => by_email
                    .get(row.email.normalized())
                    .cloned()
                    .map(|c| (c, false)),
            };
            let Some((contact, is_linked)) = target else {
                new_rows.push(row);
                new_ids.push(external);
                continue;
            };
            links.push(ExternalLink {
                kind: EntityKind::Contact,
                record: contact.id.as_uuid(),
                external: external.clone(),
            });
            if contact.is_erased() {
                report.unchanged += 1;
                continue;
            }
            // The newer change wins: a contact changed here after HubSpot's
            // last change keeps its values (the push sends them).
            if modified.is_some_and(|m| m <= contact.updated_at) {
                report.unchanged += 1;
                continue;
            }
            let patch = pull_patch(&contact, &row, self.options.pull_policy, is_linked);
            if patch.is_empty() {
                report.unchanged += 1;
                continue;
            }
            match tx.update_contact(contact.id, contact.version, patch).await {
                Ok(_) => report.pulled += 1,
                Err(e @ (Error::DuplicateEmail { .. } | Error::Conflict { .. })) => {
                    report.failed.push(SyncFailure {
                        kind: EntityKind::Contact,
                        record: Some(contact.id.as_uuid()),
                        external: Some(external.as_str().to_string()),
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if !new_rows.is_empty() {
            let outcomes = tx
                .upsert_contacts(&new_rows, self.options.pull_policy)
                .await?;
            for (o, external) in outcomes.iter().zip(new_ids) {
                match o {
                    UpsertOutcome::Inserted(_) | UpsertOutcome::Updated(_) => report.pulled += 1,
                    UpsertOutcome::Unchanged(_) => report.unchanged += 1,
                }
                links.push(ExternalLink {
                    kind: EntityKind::Contact,
                    record: o.id().as_uuid(),
                    external,
                });
            }
        }
        self.relink(&mut *tx, links, report).await?;
        tx.commit().await
    }
}

/// Why a batch stopped.
enum Stop {
    Store(Error),
    HubSpot(HubSpotError),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Store(e)
    }
}

/// A record a batch was made of.
trait Record {
    fn uuid(&self) -> Uuid;
}

impl Record for Contact {
    fn uuid(&self) -> Uuid {
        self.id.as_uuid()
    }
}

impl Record for Deal {
    fn uuid(&self) -> Uuid {
        self.id.as_uuid()
    }
}

/// HubSpot's reason for refusing an input, in words.
fn describe(e: &super::InputError) -> String {
    match (&e.category, &e.message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (None, Some(m)) => m.clone(),
        (Some(c), None) => c.clone(),
        (None, None) => "refused by HubSpot without a reason".to_string(),
    }
}

/// The HubSpot properties of a contact. `linked`: HubSpot's record is
/// this contact's, so a field the contact has empty is cleared there too
/// (HubSpot clears a property set to `""`); a first upsert by email leaves
/// the fields HubSpot may hold of its own alone.
fn contact_input(id: &str, c: &Contact, linked: bool) -> UpsertInput {
    let mut input = UpsertInput::new(id)
        .with("email", c.email.as_str())
        .with("firstname", c.first_name.as_str())
        .with("lastname", c.last_name.as_str());
    for (name, value) in [
        ("phone", c.phone.as_ref().map(|v| v.as_str())),
        ("jobtitle", c.title.as_ref().map(|v| v.as_str())),
        ("company", c.company.as_ref().map(|v| v.as_str())),
    ] {
        match value {
            Some(v) => input = input.with(name, v),
            None if linked => input = input.with(name, ""),
            None => {}
        }
    }
    input
}

/// What a pulled record changes in the contact it meets: the fields the
/// sync carries, picked by `policy` (as an upsert picks them), and the
/// email too when the record is linked to the contact (an email changed
/// in HubSpot); the fields that would not change are left out, so that an
/// empty patch means nothing to write.
fn pull_patch(
    existing: &Contact,
    row: &NewContact,
    policy: ConflictPolicy,
    linked: bool,
) -> ContactPatch {
    let full = conflict_patch(existing, row, policy);
    ContactPatch {
        email: (linked && row.email.normalized() != existing.email.normalized())
            .then(|| row.email.clone()),
        first_name: full.first_name.filter(|v| *v != existing.first_name),
        last_name: full.last_name.filter(|v| *v != existing.last_name),
        company: full.company.filter(|v| *v != existing.company),
        title: full.title.filter(|v| *v != existing.title),
        phone: full.phone.filter(|v| *v != existing.phone),
        ..ContactPatch::default()
    }
}

/// A HubSpot contact as a row to upsert, through the same validation as
/// every input; the reason names each field crm-core refused.
fn pulled_contact(r: &super::HubSpotRecord) -> Result<(NewContact, ExternalId), String> {
    let id = ExternalId::parse(&r.id).map_err(|e| format!("HubSpot id: {e}"))?;
    let prop = |name: &str| {
        r.property(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let dto = NewContactDto {
        email: prop("email"),
        first_name: prop("firstname"),
        last_name: prop("lastname"),
        company: prop("company"),
        title: prop("jobtitle"),
        phone: prop("phone"),
        ..NewContactDto::default()
    };
    let row = NewContact::try_from(dto).map_err(|e| e.to_string())?;
    Ok((row, id))
}
