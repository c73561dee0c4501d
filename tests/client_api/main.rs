//! The Client-Server API over real HTTP, every test on SQLite and on PostgreSQL.

#[path = "../common/mod.rs"]
mod common;

mod account;
mod devices;
mod discovery;
mod errors;
mod profile;
mod register;
mod session;
