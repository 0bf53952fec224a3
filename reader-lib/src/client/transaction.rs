//! [`Transaction`]: events staged on one connection, visible together at
//! commit.

use super::conn::Failure;
use super::{
    Client, ClientError, keyed, msgpack, retryable, unexpected, with_keys, with_unresolved,
};
use serde::Serialize;
use weir_protocol::wire::{AppendRequest, ErrorCode, Op, Receipt, Reply};
use weir_protocol::{Coordinate, EventKind};

/// The daemon's checks of one event that need no state of it (see
/// `check_event` in the daemon's writer), for an event staged while it is
/// unreachable.
fn check_event(index: usize, e: &AppendRequest, max_payload: u32) -> Result<(), ClientError> {
    let invalid = |code, what: String| ClientError::InvalidEvent { index, code, what };
    weir_protocol::model::validate_name("entity", &e.entity)
        .and_then(|()| weir_protocol::model::validate_name("scope", &e.scope))
        .map_err(|c| invalid(ErrorCode::InvalidCoordinate, c.to_string()))?;
    EventKind(e.kind)
        .check_client()
        .map_err(|k| invalid(ErrorCode::InvalidKind, k.to_string()))?;
    if e.payload.len() > max_payload as usize {
        return Err(invalid(
            ErrorCode::PayloadTooLarge,
            format!(
                "payload of {} bytes exceeds max-payload-bytes = {max_payload}",
                e.payload.len()
            ),
        ));
    }
    if e.event_id == Some(0) {
        return Err(invalid(
            ErrorCode::InvalidEventId,
            "event id 0 is not allowed".to_owned(),
        ));
    }
    if e.idempotency_key == Some(0) {
        return Err(invalid(
            ErrorCode::InvalidEventId,
            "idempotency key 0 is not allowed (it means \"no key\")".to_owned(),
        ));
    }
    Ok(())
}

/// Events staged on one connection that become visible together at
/// [`commit`](Transaction::commit), or never. Dropping it cancels.
///
/// Each staged event is checked by the daemon when appended. The client
/// keeps a copy (with its idempotency key), so if the connection breaks the
/// whole transaction is replayed on a new one at the next call: a commit is
/// applied exactly once. While the daemon is unreachable, an event is
/// staged in the client only, after the checks the client can make itself
/// ([`ClientError::InvalidEvent`]); should the replay still be refused,
/// the error says which staged event ([`ClientError::StagedEventRefused`]).
#[derive(Debug)]
pub struct Transaction<'c> {
    client: &'c mut Client,
    staged: Vec<AppendRequest>,
    /// The connection generation where `Begin` and the staged events went.
    open_on: Option<u64>,
    done: bool,
}

impl<'c> Transaction<'c> {
    pub(super) fn new(client: &'c mut Client) -> Self {
        Self {
            client,
            staged: Vec::new(),
            open_on: None,
            done: false,
        }
    }
}

impl Transaction<'_> {
    /// Stages one event; returns how many are staged.
    pub fn append(
        &mut self,
        at: &Coordinate,
        kind: EventKind,
        payload: &[u8],
    ) -> Result<u32, ClientError> {
        self.append_with(AppendRequest::new(at, kind, payload))
    }

    /// Stages a msgpack-encoded value.
    pub fn append_msgpack<T: Serialize + ?Sized>(
        &mut self,
        at: &Coordinate,
        kind: EventKind,
        value: &T,
    ) -> Result<u32, ClientError> {
        self.append_with(msgpack(at, kind, value)?)
    }

    /// Stages one fully specified event.
    pub fn append_with(&mut self, mut req: AppendRequest) -> Result<u32, ClientError> {
        keyed(&mut req);
        self.client.forget_if_forked();
        let live = self.open_on.is_some() && self.open_on == Some(self.client.generation);
        let mut ops = Vec::with_capacity(2);
        if !live {
            // (Re)open on the current connection with what is staged so far.
            ops.push(Op::Begin);
            if !self.staged.is_empty() {
                ops.push(Op::AppendBatch(self.staged.clone()));
            }
        }
        ops.push(Op::Append(req.clone()));
        match self.client.unit_once(&ops) {
            Ok(mut replies) => {
                let last = replies.pop().expect("one reply per op");
                if let Some(Err(e)) = replies.into_iter().find(Result::is_err) {
                    self.client.conn = None;
                    self.open_on = None;
                    // Begin refused, or the replay of what is staged. A
                    // refusal about the daemon's state (`Busy`: its staging
                    // room, `max-staged-bytes`, is taken) is not about the
                    // staged events: the call may be made again as is.
                    let for_now = matches!(
                        e.code,
                        ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::TooManyInFlight
                    );
                    return Err(if live || self.staged.is_empty() || for_now {
                        ClientError::Server(e)
                    } else {
                        let index = e.fields.get("index").and_then(|i| i.parse().ok());
                        ClientError::StagedEventRefused { index, error: e }
                    });
                }
                self.open_on = Some(self.client.generation);
                match last {
                    Ok(Reply::Staged { .. }) => {
                        self.staged.push(req);
                        Ok(self.staged.len() as u32)
                    }
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(ClientError::Server(e)),
                }
            }
            Err(Failure::Fatal(e)) => Err(e),
            Err(Failure::Transient(_) | Failure::Refused(_) | Failure::NoAnswer) => {
                // Staged locally; the next call replays everything on a new
                // connection. What the daemon would refuse is refused now,
                // not at that replay, where it would block every call.
                self.client.conn = None;
                self.open_on = None;
                check_event(self.staged.len(), &req, self.client.max_payload)?;
                self.staged.push(req);
                Ok(self.staged.len() as u32)
            }
        }
    }

    /// Events staged.
    #[must_use]
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// Nothing staged?
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Appends everything staged as one all-or-nothing batch.
    ///
    /// When the commit's answer is lost, the staged events are resent as
    /// one batch with the same idempotency keys, which applies them once.
    /// If that resend fails too, the commit may or may not have been
    /// applied: the error's [`ClientError::unresolved_keys`] are the keys
    /// of every staged event.
    pub fn commit(mut self) -> Result<Vec<Receipt>, ClientError> {
        self.done = true;
        // The commit went out and its answer was lost.
        let mut unknown = false;
        self.client.forget_if_forked();
        if self.open_on.is_some() && self.open_on == Some(self.client.generation) {
            match self.client.unit_once(&[Op::Commit]) {
                Ok(mut r) => match r.remove(0) {
                    Ok(Reply::Batch(v)) => return Ok(v),
                    Ok(other) => return Err(unexpected(&other)),
                    Err(e) if e.code == ErrorCode::OutcomeUnknown => {
                        let keys = self.staged.iter().filter_map(|r| r.idempotency_key);
                        return Err(ClientError::Server(with_keys(e, keys.collect())));
                    }
                    Err(e) if !retryable(e.code) => return Err(ClientError::Server(e)),
                    // Refused before it reached the writer: the daemon keeps
                    // the transaction open on this connection. Closing it
                    // discards that; the batch below applies the events once.
                    Err(_) => self.client.conn = None,
                },
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(_) | Failure::Refused(_) | Failure::NoAnswer) => {
                    self.client.conn = None;
                    unknown = true;
                }
            }
        }
        if self.staged.is_empty() {
            return Ok(Vec::new());
        }
        // The commit may or may not have happened: the same keys make the
        // retry apply it once. A batch is all-or-nothing like a commit.
        let staged = std::mem::take(&mut self.staged);
        let keys: Vec<u128> = staged.iter().filter_map(|r| r.idempotency_key).collect();
        self.client.append_batch(staged).map_err(|e| {
            // The resend never reached the daemon (or got no answer): the
            // commit's outcome is as unknown as before it. A refusal of
            // the resend is its answer (a replay, had it been applied).
            if unknown && e.unresolved_keys().is_empty() {
                with_unresolved(e, keys)
            } else {
                e
            }
        })
    }

    /// Drops everything staged.
    pub fn cancel(mut self) -> Result<(), ClientError> {
        self.done = true;
        self.abandon();
        Ok(())
    }

    fn abandon(&mut self) {
        self.client.forget_if_forked();
        if self.open_on.is_some() && self.open_on == Some(self.client.generation) {
            let ok = matches!(
                self.client.unit_once(&[Op::Cancel]).as_deref(),
                Ok([Ok(Reply::Cancelled { .. })])
            );
            if !ok {
                // Closing the connection discards the staged events too.
                self.client.conn = None;
            }
        }
        self.staged.clear();
        self.open_on = None;
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.abandon();
        }
    }
}
