//! Axon, a Matrix homeserver. See `DESIGN.md` (shared) for the architecture and README.md for use.

pub mod accounts;
pub mod client;
pub mod config;
pub mod e2ee;
pub mod ephemeral;
pub mod error;
pub mod http;
pub mod memory;
pub mod presence;
pub mod push;
pub mod rooms;
pub mod server;
pub mod services;
pub mod storage;
pub mod sync;
