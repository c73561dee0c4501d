//! Reports to this server's administrators (spec: "Reporting content"): stored in `reports` and
//! logged under the `axon::reports` target, which an admin can route to an alert.

use ruma::{EventId, RoomId, UserId};

use super::Rooms;
use crate::{
    error::{Error, Result},
    storage::now_ms,
};

/// The longest reason kept, in bytes.
const MAX_REASON_BYTES: usize = 16 * 1024;

fn check_reason(reason: &str) -> Result<()> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::InvalidParam(format!("the reason is longer than {MAX_REASON_BYTES} bytes")));
    }
    Ok(())
}

impl Rooms {
    /// Reports an event the reporter can see; any other event is "not found", so that a report
    /// cannot probe for events (spec: 404 when the event is unknown or not visible).
    pub async fn report_event(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        reason: &str,
    ) -> Result<()> {
        check_reason(reason)?;
        self.event_for_user(room_id, reporter, event_id).await?;
        self.storage
            .insert_report(reporter.as_str(), Some(room_id.as_str()), Some(event_id.as_str()), None, reason, now_ms())
            .await?;
        tracing::info!(target: "axon::reports", %reporter, %room_id, %event_id, reason, "event reported");
        Ok(())
    }

    /// Reports a room known to this server; the reporter need not be in it (a room seen in the
    /// directory can be reported).
    pub async fn report_room(&self, reporter: &UserId, room_id: &RoomId, reason: &str) -> Result<()> {
        check_reason(reason)?;
        if self.storage.room(room_id.as_str()).await?.is_none() {
            return Err(Error::NotFound("no such room".into()));
        }
        self.storage.insert_report(reporter.as_str(), Some(room_id.as_str()), None, None, reason, now_ms()).await?;
        tracing::info!(target: "axon::reports", %reporter, %room_id, reason, "room reported");
        Ok(())
    }

    /// Reports a local user.
    pub async fn report_user(&self, reporter: &UserId, user_id: &UserId, reason: &str) -> Result<()> {
        check_reason(reason)?;
        if user_id.server_name() != self.server_name || self.storage.user(user_id.as_str()).await?.is_none() {
            return Err(Error::NotFound("no such user".into()));
        }
        self.storage.insert_report(reporter.as_str(), None, None, Some(user_id.as_str()), reason, now_ms()).await?;
        tracing::info!(target: "axon::reports", %reporter, %user_id, reason, "user reported");
        Ok(())
    }
}
