//! What the scoring engines read and write ([`ScoringTx`]): scoring inputs,
//! score write-backs and the live score states ([`crate::scoring`]).

use async_trait::async_trait;

#[cfg(doc)]
use crate::error::Error;
use crate::{domain::*, error::Result};

/// Scoring inputs, score write-backs and live scores. Part of
/// [`Transaction`](crate::Transaction).
#[async_trait]
pub trait ScoringTx: Send {
    /// Writes lead scores in bulk. Ids that are not contacts of the tenant
    /// are ignored; neither versions nor `updated_at` change. An id listed
    /// more than once gets the last score given for it. Returns how many
    /// contacts' scores actually changed (a contact counts once, and not at
    /// all when its final score is the one it had).
    async fn write_scores(&mut self, scores: &[ContactScore]) -> Result<u64>;

    /// The scoring inputs of one chunk of contacts, for the rescoring
    /// pipeline ([`crate::scoring::rescore`]): the active contacts created
    /// at or after `request.created_from` with an id greater than
    /// `request.after`, in ascending id order, at most `request.limit`, each
    /// with its activities, signals and open deals (those before
    /// `request.inputs_from` may be left out). A few statements per chunk,
    /// never one per contact.
    ///
    /// Errors: [`Error::Validation`] on `limit` when it is 0.
    async fn scoring_inputs(&mut self, request: &InputsRequest) -> Result<Vec<ContactInputs>>;

    /// Locks the contacts [`scoring_inputs`](Self::scoring_inputs) would
    /// read for `request` (the same predicate, order and limit) and their
    /// live score states, each contact before its state, in id order, until
    /// the transaction ends, and returns those contacts. For a rebuild of the
    /// live states ([`RescoreOptions::rebuild_live`](crate::scoring::RescoreOptions::rebuild_live)):
    /// the inputs read after it count every activity and signal committed
    /// before, and one logged after waits for the rebuilt state and adds
    /// its term to it. Without the lock, a state computed from a read and
    /// written later would drop the terms committed between the two. A
    /// contact the inputs then hold that was not locked (created
    /// meanwhile) is left out of the rebuild.
    ///
    /// The default returns the contacts without locking anything: right
    /// for a store whose transactions run one at a time.
    ///
    /// Errors: those of [`scoring_inputs`](Self::scoring_inputs).
    async fn lock_live_states(&mut self, request: &InputsRequest) -> Result<Vec<ContactId>> {
        Ok(self
            .scoring_inputs(request)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// A contact's live score state: `ln Σ weight·2^(t/half_life)` over its
    /// activities and signals (see [`crate::scoring::live`]). `Ok(None)`
    /// when there is no such contact; a state whose `log` is `None` when it
    /// has nothing counted (or the store keeps no live scores).
    async fn live_score_log(&mut self, id: ContactId) -> Result<Option<LiveState>>;

    /// The live top leads: active contacts with a live state, highest
    /// state first (ties by id, descending), at most `limit` (1–1000),
    /// each with its state.
    ///
    /// Errors: [`Error::Validation`] on `limit`.
    async fn live_top_leads(&mut self, limit: u32) -> Result<Vec<LiveRanked>>;

    /// The live top accounts: companies ranked by the live states of their
    /// best active contacts ([`LiveRankedAccount::rank`]: the top
    /// [`ACCOUNT_TOP_CONTACTS`] together, then the best one, then company
    /// id, descending), at most `limit` (1–1000). A company counts once one
    /// of its active contacts has a live state; each comes with the states
    /// of its best contacts. Like the live top leads it is right at any
    /// moment: a logged activity moves its contact's company at once.
    ///
    /// Errors: [`Error::Validation`] on `limit`.
    async fn live_top_accounts(&mut self, limit: u32) -> Result<Vec<LiveRankedAccount>>;

    /// Replaces live states in bulk (a rebuild by the batch). Ids that are
    /// not contacts of the tenant are ignored; versions, `updated_at` and
    /// history are untouched. An id listed more than once gets the last
    /// state given for it and counts once. Returns how many contacts it
    /// set.
    ///
    /// Errors: [`Error::Validation`] on `score_log` for a state that is not
    /// a finite number (a log-scaled sum never is NaN or infinite); a
    /// negative zero is kept as zero, as PostgreSQL keeps it.
    async fn write_live_score_logs(&mut self, states: &[LiveState]) -> Result<u64>;
}
