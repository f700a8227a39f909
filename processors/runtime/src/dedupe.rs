//! Receiver-side de-duplication by message id, for handlers that are not
//! idempotent when a message is applied twice (an absolute `SetStock` after
//! an adjustment, an `UpdateProduct` without an expected version).
//!
//! Where copies come from: a processor that crashes after producing its
//! outputs and before committing its input handles that input again, and
//! produces the same outputs (same derived message ids, same sent-at) at new
//! offsets. The offset check cannot see those; the message id can.
//!
//! Each handled message's id is recorded in the partition's state
//! (`SeenMessages`, key = sent-at big-endian ++ message id) in the same
//! write as the state it changed, so "applied" and "remembered" are one
//! event, and the record travels with the changelog. Ids are forgotten once
//! their sent-at is older than the window (message time, so replays prune
//! alike): a copy arrives within seconds of its original, or minutes after a
//! crash, never days.

use d2c_proto::Envelope;
use d2c_state::{ChangeSet, StateError, StateRead, Table};
use std::time::Duration;

/// How long a message id is remembered.
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Ids forgotten per batch at most (the rest go with the next batches).
const PRUNE_PER_BATCH: usize = 64;

fn seen_key(envelope: &Envelope) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&envelope.sent_at_ms.max(0).to_be_bytes());
    key.extend_from_slice(envelope.message_id.as_bytes());
    key
}

/// Whether this message was handled before (its copy must be dropped).
pub fn seen(state: &dyn StateRead, envelope: &Envelope) -> Result<bool, StateError> {
    Ok(state
        .get(Table::SeenMessages, &seen_key(envelope))?
        .is_some())
}

/// Records the message as handled, in the batch's changes.
pub fn remember(changes: &mut ChangeSet, envelope: &Envelope) {
    changes.put(Table::SeenMessages, &seen_key(envelope), Vec::new());
}

/// Forgets ids whose sent-at is older than `now_ms - WINDOW`.
pub fn prune(
    state: &dyn StateRead,
    changes: &mut ChangeSet,
    now_ms: i64,
) -> Result<(), StateError> {
    let horizon = now_ms.saturating_sub(WINDOW.as_millis() as i64).max(0);
    let old = state.range(
        Table::SeenMessages,
        &0i64.to_be_bytes(),
        &horizon.to_be_bytes(),
        PRUNE_PER_BATCH,
    )?;
    for (key, _) in old {
        changes.delete(Table::SeenMessages, &key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestStore;
    use d2c_state::Overlay;

    fn envelope(id: u128, sent_at_ms: i64) -> Envelope {
        Envelope::new("t.M".into(), uuid::Uuid::from_u128(id), sent_at_ms)
    }

    #[test]
    fn a_copy_is_seen_until_its_window_has_passed() {
        let store = TestStore::new();
        let first = envelope(1, 1_000);
        let mut changes = ChangeSet::default();
        {
            let overlay = Overlay {
                base: &store.store,
                changes: &changes,
            };
            assert!(!seen(&overlay, &first).expect("read"));
        }
        remember(&mut changes, &first);
        let overlay = Overlay {
            base: &store.store,
            changes: &changes,
        };
        assert!(
            seen(&overlay, &first).expect("read"),
            "a copy in the same batch"
        );
        assert!(
            !seen(&overlay, &envelope(2, 1_000)).expect("read"),
            "another message"
        );
        store
            .store
            .write(&changes.clone().into_entries())
            .expect("committed");

        let later = 1_000 + WINDOW.as_millis() as i64;
        let mut pruning = ChangeSet::default();
        prune(&store.store, &mut pruning, later).expect("prune");
        assert!(pruning.is_empty(), "still inside the window");
        prune(&store.store, &mut pruning, later + 1).expect("prune");
        store
            .store
            .write(&pruning.into_entries())
            .expect("committed");
        assert!(
            !seen(&store.store, &first).expect("read"),
            "forgotten after the window"
        );
    }
}
