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
//!   with the values it was sent with: the upsert finds nothing to change
//!   and writes nothing.
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
        ConsumerName, Contact, ContactId, Deal, DealId, EntityKind, ExternalId, ExternalLink,
        ExternalSystem, FeedKind, MAX_EXTERNAL_LINKS, NewContact, NewContactDto, UpsertOutcome,
    },
    error::Error,
    store::{MAX_GET_MANY, Transaction},
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
        for e in &events {
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
        // by email.
        let mut links = Vec::new();
        let (known, new): (Vec<&Contact>, Vec<&Contact>) = contacts
            .iter()
            .partition(|c| contact_map.contains_key(&c.id.as_uuid()));
        let updates: Vec<UpsertInput> = known
            .iter()
            .map(|c| contact_input(contact_map[&c.id.as_uuid()].as_str(), c))
            .collect();
        let outcome = self
            .client
            .batch_update(&ObjectType::Contacts, &updates)
            .await
            .map_err(Stop::HubSpot)?;
        self.settle(&known, outcome, EntityKind::Contact, &mut links, report)?;
        let upserts: Vec<UpsertInput> = new
            .iter()
            .map(|c| contact_input(c.email.as_str(), c))
            .collect();
        let outcome = self
            .client
            .upsert_contacts_by_email(&upserts)
            .await
            .map_err(Stop::HubSpot)?;
        self.settle(&new, outcome, EntityKind::Contact, &mut links, report)?;
        for l in &links {
            contact_map.insert(l.record, l.external.clone());
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

        // Accepted: link the ids and move the cursor, together.
        let mut tx = self.begin().await?;
        for chunk in links.chunks(MAX_EXTERNAL_LINKS) {
            tx.link_external_ids(&self.system, chunk).await?;
        }
        tx.ack(&opts.consumer, last).await?;
        tx.commit().await?;
        Ok(true)
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
        let start = stored.unwrap_or(chrono::DateTime::UNIX_EPOCH);
        let mut pull =
            self.client
                .pull_modified_since(ObjectType::Contacts, start, &CONTACT_PROPERTIES);
        loop {
            let page = match pull.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(error) => {
                    return Err(SyncError::HubSpot {
                        error,
                        report: Box::new(report),
                    });
                }
            };
            report.read += page.len() as u64;
            self.pull_page(&page, &mut report).await?;
        }
        let window = pull.window();
        if stored != Some(window) && window > start {
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
        let mut rows: Vec<NewContact> = Vec::with_capacity(page.len());
        let mut ids: Vec<ExternalId> = Vec::with_capacity(page.len());
        let mut emails = HashSet::new();
        for r in page {
            match pulled_contact(r) {
                Ok((row, id)) => {
                    // HubSpot keeps one contact per email; a page naming one
                    // twice would be a broken answer: keep the first.
                    if emails.insert(row.email.normalized().to_string()) {
                        rows.push(row);
                        ids.push(id);
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
        let outcomes = tx.upsert_contacts(&rows, self.options.pull_policy).await?;
        let mut links = Vec::with_capacity(outcomes.len());
        for (o, external) in outcomes.iter().zip(ids) {
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
        for chunk in links.chunks(MAX_EXTERNAL_LINKS) {
            tx.link_external_ids(&self.system, chunk).await?;
        }
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

/// The HubSpot properties of a contact (those it has).
fn contact_input(id: &str, c: &Contact) -> UpsertInput {
    let mut input = UpsertInput::new(id)
        .with("email", c.email.as_str())
        .with("firstname", c.first_name.as_str())
        .with("lastname", c.last_name.as_str());
    if let Some(p) = &c.phone {
        input = input.with("phone", p.as_str());
    }
    if let Some(t) = &c.title {
        input = input.with("jobtitle", t.as_str());
    }
    if let Some(co) = &c.company {
        input = input.with("company", co.as_str());
    }
    input
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
