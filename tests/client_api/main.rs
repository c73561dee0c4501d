//! The Client-Server API over real HTTP, every test on SQLite and on PostgreSQL.

#[path = "../common/mod.rs"]
mod common;

mod account;
mod client_start;
mod delivery;
mod devices;
mod directory;
mod discovery;
mod errors;
mod history;
mod keys;
mod presence;
mod processes;
mod profile;
mod push;
mod push_counts;
mod register;
mod relations;
mod room_auth;
mod rooms;
mod session;
mod sync;
mod ws;
