//! Batch rescoring over any [`Store`]: streams the scoring inputs of the
//! eligible contacts chunk by chunk, scores them with a [`ScoringModel`],
//! writes back only the scores that changed, and reports what it did.
//!
//! # Bounded memory
//!
//! Inputs are read with [`Transaction::scoring_inputs`] one chunk of
//! `chunk_size` contacts at a time in id order (keyset pagination), and a
//! chunk's changed scores are written with one [`Transaction::write_scores`]
//! before the next chunk is read. Memory is bounded by `chunk_size` ×
//! (inputs per contact) plus the `top` best contacts kept for the report,
//! whatever the size of the tenant (twice that when reads and writes
//! overlap, below). Inputs past the model's age cutoff are
//! not even read (unless the live state is rebuilt, which needs them all).
//!
//! # All or nothing
//!
//! The whole run is one transaction: [`rescore`] commits only when
//! every chunk was scored and written, and a failure (or a dry run) leaves
//! every score as it was. Chunks bound memory, not the transaction: the
//! run holds row locks on the contacts whose score changed until it
//! commits, which a nightly job can afford, and readers never see a half
//! rescored tenant. A caller that prefers shorter transactions can call
//! [`rescore_in_transaction`] on transactions of its own, but must then
//! accept a tenant that is partly rescored while it runs.
//!
//! # Reads beside the writes
//!
//! When the store can open a second transaction at once
//! ([`Store::concurrent_transactions`]: PostgreSQL when its pool has a
//! connection to spare), [`rescore`] reads the chunks on a second
//! transaction, opened with [`Store::begin_read`] (on PostgreSQL `READ
//! ONLY`), which writes nothing and is rolled back at the end: the
//! next chunk is read while the previous chunk's scores are written, so
//! that the database works on both at once. The writes are still one
//! transaction, all or nothing as above. The reads see what others have
//! committed, as before (each statement of a transaction at PostgreSQL's
//! default isolation does); a chunk never holds a contact whose score the
//! run has written already (chunks go in id order), so nothing the
//! writing transaction holds uncommitted is missed. The reader is opened
//! right after the writer, before anything is locked, and only when the
//! store says it can open one without waiting (with a pool of one, or
//! when the caller holds the pool's other connections, the run reads and
//! writes on its one transaction). A dry run, and
//! [`rescore_in_transaction`], read and write on the one transaction.
//!
//! [`Store::concurrent_transactions`]: crate::Store::concurrent_transactions
//! [`Store::begin_read`]: crate::Store::begin_read

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashSet},
};

use chrono::{Duration, Utc};
use serde::Serialize;

use crate::{
    domain::{
        ContactId, ContactScore, Context, LiveState, Score, TenantId, Timestamp, check_timestamp,
    },
    error::{FieldError, Result, ValidationErrors},
    store::{DynStore, Transaction},
};

use super::{ContactInputs, InputsRequest, Scored, ScoringModel};

/// The default number of contacts read per chunk.
pub const DEFAULT_CHUNK_SIZE: u32 = 2_000;
/// The default number of top contacts in a report.
pub const DEFAULT_TOP: usize = 10;
/// The most top contacts a report lists (a larger `top` is refused: the
/// report keeps them, with their explanations, in memory).
pub const MAX_TOP: usize = 1_000;

/// How to run a rescoring: [`RescoreOptions::new`] (or
/// [`dry_run`](RescoreOptions::dry_run)), then the `with_*` setters for
/// what differs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RescoreOptions {
    /// Score and report, but write nothing (and roll back).
    pub dry_run: bool,
    /// Replaces the model's lookback window, in days (finite, ≥ 0).
    pub lookback_days: Option<f64>,
    /// Scores at this time instead of the clock's (for reproducible runs).
    pub now: Option<Timestamp>,
    /// Contacts read per chunk (≥ 1).
    pub chunk_size: u32,
    /// How many of the best-scored contacts the report lists, with their
    /// explanations: at most [`MAX_TOP`].
    pub top: usize,
    /// Also recompute every scanned contact's live state from all of its
    /// activities and signals and store it (see [`crate::scoring::live`]):
    /// for data loaded around the stores, or after a model change. Reads
    /// every input, not only those within the age cutoff.
    pub rebuild_live: bool,
}

impl Default for RescoreOptions {
    fn default() -> Self {
        RescoreOptions {
            dry_run: false,
            lookback_days: None,
            now: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            top: DEFAULT_TOP,
            rebuild_live: false,
        }
    }
}

impl RescoreOptions {
    /// The defaults: write, the model's lookback, the clock's time, chunks
    /// of [`DEFAULT_CHUNK_SIZE`], the top [`DEFAULT_TOP`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A dry run: score and report the top 10, write nothing.
    pub fn dry_run() -> Self {
        RescoreOptions {
            dry_run: true,
            ..Self::default()
        }
    }

    /// Scores and reports, but writes nothing (and rolls back), or not.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Scores at `now` instead of the clock's time ([`now`](Self::now)).
    pub fn with_now(mut self, now: Timestamp) -> Self {
        self.now = Some(now);
        self
    }

    /// Replaces the model's lookback window, in days (finite, ≥ 0)
    /// ([`lookback_days`](Self::lookback_days)).
    pub fn with_lookback_days(mut self, days: f64) -> Self {
        self.lookback_days = Some(days);
        self
    }

    /// Reads `n` contacts per chunk, at least 1 ([`chunk_size`](Self::chunk_size)).
    pub fn with_chunk_size(mut self, n: u32) -> Self {
        self.chunk_size = n;
        self
    }

    /// Lists the best `n` contacts in the report, at most [`MAX_TOP`]
    /// ([`top`](Self::top)).
    pub fn with_top(mut self, n: usize) -> Self {
        self.top = n;
        self
    }

    /// Also rebuilds the live state of every scanned contact, or not
    /// ([`rebuild_live`](Self::rebuild_live)).
    pub fn with_rebuild_live(mut self, rebuild: bool) -> Self {
        self.rebuild_live = rebuild;
        self
    }
}

/// One of the best-scored contacts of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopLead {
    /// The contact.
    pub contact: ContactId,
    /// Its score before the run.
    pub previous: Score,
    /// Its new score with the explanation.
    pub scored: Scored,
}

/// What a rescoring did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RescoreReport {
    /// The time scored at.
    pub now: Timestamp,
    /// Whether it was a dry run (nothing written).
    pub dry_run: bool,
    /// Eligible contacts scored.
    pub scanned: u64,
    /// Of those, how many got a different score (written unless a dry run).
    pub changed: u64,
    /// Of those, how many kept their score.
    pub unchanged: u64,
    /// Scores actually written (0 on a dry run).
    pub written: u64,
    /// Live states rebuilt (0 unless asked for, and on a dry run).
    pub live_rebuilt: u64,
    /// How many chunks were read.
    pub chunks: u64,
    /// New scores per bucket: `[0]` is 0–9, `[1]` 10–19, …, `[9]` 90–99
    /// and `[10]` exactly 100.
    pub distribution: [u64; 11],
    /// The best-scored contacts, best first (score, then decayed sum, then
    /// id, descending), with their explanations.
    pub top: Vec<TopLead>,
}

/// Ranks a [`TopLead`] so that the heap's top is the worst kept.
struct Ranked(TopLead);

impl Ranked {
    fn cmp_key(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.0, &other.0);
        a.scored
            .score
            .cmp(&b.scored.score)
            .then(a.scored.decayed_sum.total_cmp(&b.scored.decayed_sum))
            .then(a.contact.cmp(&b.contact))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_key(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    // Reversed: BinaryHeap is a max-heap, and the top must be the worst.
    fn cmp(&self, other: &Self) -> Ordering {
        other.cmp_key(self)
    }
}

/// `t − days`, floored at year 1 (a window reaching further back covers
/// everything a store can hold).
fn days_before(t: Timestamp, days: f64) -> Timestamp {
    let floor = crate::domain::earliest_timestamp();
    let micros = days * 86_400e6;
    if !micros.is_finite() || micros >= 1e17 {
        return floor;
    }
    t.checked_sub_signed(Duration::microseconds(micros.ceil() as i64))
        .map_or(floor, |x| x.max(floor))
}

/// Rescores the eligible contacts of `tx`'s tenant with `model`, inside
/// `tx`: what [`rescore`] does in a transaction of its own, with
/// committing left to the caller. On a dry run nothing is written.
///
/// Errors: [`Error::Validation`](crate::Error::Validation) on
/// `lookback_days`, `chunk_size`, `top` (above [`MAX_TOP`]) or `now`
/// (outside years 1–9999); whatever the store returns.
pub async fn rescore_in_transaction(
    tx: &mut dyn Transaction,
    model: &ScoringModel,
    options: &RescoreOptions,
) -> Result<RescoreReport> {
    run(Io::One(tx), model, options).await
}

/// Where a run reads its chunks and writes its scores: one transaction,
/// or a transaction to read and another to write, used at once.
enum Io<'a> {
    One(&'a mut dyn Transaction),
    Two {
        reader: &'a mut dyn Transaction,
        writer: &'a mut dyn Transaction,
    },
}

/// What a chunk leaves to write.
#[derive(Default)]
struct ChunkWrites {
    scores: Vec<ContactScore>,
    live: Vec<LiveState>,
}

/// Writes a chunk's changed scores and live states; the scores written.
async fn write_chunk(tx: &mut dyn Transaction, writes: &ChunkWrites) -> Result<(u64, u64)> {
    let mut written = (0, 0);
    if !writes.scores.is_empty() {
        written.0 = tx.write_scores(&writes.scores).await?;
    }
    if !writes.live.is_empty() {
        written.1 = tx.write_live_score_logs(&writes.live).await?;
    }
    Ok(written)
}

/// Reads a chunk's inputs on `tx`; for a rebuild of the live states
/// (`rebuild`), after locking the chunk's states, whose contacts `locked`
/// then holds.
async fn read_chunk(
    tx: &mut dyn Transaction,
    request: &InputsRequest,
    rebuild: bool,
    locked: &mut HashSet<ContactId>,
) -> Result<Vec<ContactInputs>> {
    if rebuild {
        *locked = tx.lock_live_states(request).await?.into_iter().collect();
    }
    tx.scoring_inputs(request).await
}

/// The rescoring loop: reads chunk after chunk, scores each and writes
/// what changed. With [`Io::Two`], the next chunk is read while the
/// previous one's scores are written, each on its own transaction (so on
/// its own connection, and the database works on both at once).
async fn run(
    mut io: Io<'_>,
    model: &ScoringModel,
    options: &RescoreOptions,
) -> Result<RescoreReport> {
    let mut errors = ValidationErrors::new();
    if options.chunk_size == 0 {
        errors.push(FieldError::new(
            "chunk_size",
            "out_of_range",
            "must be at least 1",
        ));
    }
    if options.top > MAX_TOP {
        errors.push(FieldError::new(
            "top",
            "out_of_range",
            format!("must be at most {MAX_TOP}, got {}", options.top),
        ));
    }
    let now = errors.check(check_timestamp("now", options.now.unwrap_or_else(Utc::now)));
    let (Some(now), true) = (now, errors.is_empty()) else {
        return Err(errors.into());
    };
    let owned;
    let model = match options.lookback_days {
        Some(days) => {
            owned = model.to_builder().lookback_days(days).build()?;
            &owned
        }
        None => model,
    };
    // The store's filters are a superset (a second of slack); the model
    // decides exactly.
    let created_from = days_before(now, model.lookback_days() + 1.0 / 86_400.0);
    let inputs_from = match (options.rebuild_live, model.ignore_after_half_lives()) {
        (false, Some(n)) => Some(days_before(
            now,
            n * model.half_life_days() + 1.0 / 86_400.0,
        )),
        _ => None,
    };
    let mut report = RescoreReport {
        now,
        dry_run: options.dry_run,
        scanned: 0,
        changed: 0,
        unchanged: 0,
        written: 0,
        live_rebuilt: 0,
        chunks: 0,
        distribution: [0; 11],
        top: Vec::new(),
    };
    let mut top: BinaryHeap<Ranked> = BinaryHeap::with_capacity(options.top + 1);
    // Live states are rebuilt on one transaction only (`rescore` opens no
    // reader for a rebuild): with a reader, nothing is locked or rebuilt.
    let rebuild = options.rebuild_live && !options.dry_run && matches!(io, Io::One(_));
    let request = |after| InputsRequest {
        created_from,
        after,
        limit: options.chunk_size,
        inputs_from,
    };
    // A rebuild of the live states reads each chunk on the one transaction
    // after locking the chunk's states (see `ScoringTx::lock_live_states`),
    // and rebuilds only the states it locked.
    let mut locked: HashSet<ContactId> = HashSet::new();
    let mut chunk = match &mut io {
        Io::One(tx) => read_chunk(&mut **tx, &request(None), rebuild, &mut locked).await?,
        Io::Two { reader, .. } => reader.scoring_inputs(&request(None)).await?,
    };
    while let Some(last) = chunk.last() {
        let next = (chunk.len() == options.chunk_size as usize).then(|| request(Some(last.id)));
        report.chunks += 1;
        let mut writes = ChunkWrites::default();
        for c in &chunk {
            if !model.is_eligible(now, c.created_at, true) {
                continue;
            }
            let scored = model.score(now, c.scoring_inputs(model));
            report.scanned += 1;
            let bucket = usize::from(scored.score.get() / 10).min(10);
            report.distribution[bucket] += 1;
            if scored.score == c.score {
                report.unchanged += 1;
            } else {
                report.changed += 1;
                writes.scores.push(ContactScore::new(c.id, scored.score));
            }
            if rebuild && locked.contains(&c.id) {
                writes
                    .live
                    .push(LiveState::new(c.id, c.live_log_sum(model)));
            }
            if options.top > 0 {
                let lead = Ranked(TopLead {
                    contact: c.id,
                    previous: c.score,
                    scored,
                });
                if top.len() < options.top {
                    top.push(lead);
                } else if top.peek().is_some_and(|worst| lead < *worst) {
                    top.pop();
                    top.push(lead);
                }
            }
        }
        drop(chunk);
        if options.dry_run {
            writes = ChunkWrites::default();
        }
        let (written, read) = match &mut io {
            Io::One(tx) => {
                let written = write_chunk(&mut **tx, &writes).await?;
                let read = match &next {
                    Some(r) => Some(read_chunk(&mut **tx, r, rebuild, &mut locked).await?),
                    None => None,
                };
                (written, read)
            }
            Io::Two { reader, writer } => {
                // Both run to the end, whatever the other gives: neither
                // is dropped halfway through a statement.
                let (written, read) =
                    futures_util::join!(write_chunk(&mut **writer, &writes), async {
                        match &next {
                            Some(r) => reader.scoring_inputs(r).await.map(Some),
                            None => Ok(None),
                        }
                    });
                (written?, read?)
            }
        };
        report.written += written.0;
        report.live_rebuilt += written.1;
        match read {
            Some(c) => chunk = c,
            None => break,
        }
    }
    report.top = top.into_sorted_vec().into_iter().map(|r| r.0).collect();
    Ok(report)
}

/// Rescores `tenant`'s eligible contacts with `model` in one transaction
/// of its own: commits when everything was written, rolls back on a dry
/// run or an error (leaving every score as it was). To rescore inside a
/// transaction of the caller's: [`rescore_in_transaction`].
///
/// When the store can open a second transaction at once it reads on it,
/// read-only, while it writes (see the module's documentation, *Reads
/// beside the writes*): it then takes two of the pool's connections for the
/// whole run.
///
/// Errors: those of [`rescore_in_transaction`], and whatever opening or
/// committing the transactions returns.
pub async fn rescore(
    store: &DynStore,
    tenant: TenantId,
    context: Context,
    model: &ScoringModel,
    options: &RescoreOptions,
) -> Result<RescoreReport> {
    let mut tx = store.begin(tenant, context.clone()).await?;
    // A reader only when the store can open one now: a caller that holds
    // the pool's other connections (or a pool of one) gets the run on one
    // transaction rather than a wait. Nothing is locked yet (the writing
    // transaction has sent nothing), so the run never holds locks while it
    // waits for a connection. The answer can be out of date when `begin`
    // runs (another task took the idle connection): a reader that cannot
    // be had within the store's own wait is done without, not an error.
    // A rebuild of the live states reads each chunk after locking its
    // states, on the writing transaction: no reader then.
    let mut reader = if !options.dry_run && !options.rebuild_live && store.concurrent_transactions()
    {
        store.begin_read(tenant, context).await.ok()
    } else {
        None
    };
    let io = match reader.as_mut() {
        Some(reader) => Io::Two {
            reader: reader.as_mut(),
            writer: tx.as_mut(),
        },
        None => Io::One(tx.as_mut()),
    };
    let result = run(io, model, options).await;
    if let Some(reader) = reader {
        // It only read: ending it cannot change what the run did.
        let _ = reader.rollback().await;
    }
    match result {
        Ok(report) => {
            if options.dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok(report)
        }
        Err(e) => {
            // The error that stopped the run is the one to report.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}
