//! Ephemeral room data: typing notifications (in memory, they expire) and read receipts (stored).

pub mod typing;
