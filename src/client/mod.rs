//! Client-Server API handlers, one file per spec area. Each handler parses (through `Ruma<T>`),
//! checks who may act, calls one domain function and maps the result; nothing else.

mod account;
mod devices;
mod discovery;
mod profile;
mod register;
mod session;

use axum::Router;

use crate::{http::EndpointRouter, services::Services};

pub fn routes(router: Router<Services>) -> Router<Services> {
    router
        // Discovery (spec: "Server Discovery", "API Standards", "Capabilities negotiation")
        .endpoint(discovery::versions)
        .endpoint(discovery::well_known)
        .endpoint(discovery::capabilities)
        // Account registration and management
        .endpoint(register::register)
        .endpoint(register::username_available)
        .endpoint(account::whoami)
        .endpoint(account::change_password)
        .endpoint(account::deactivate)
        // Login and logout
        .endpoint(session::login_types)
        .endpoint(session::login)
        .endpoint(session::logout)
        .endpoint(session::logout_all)
        // Device management
        .endpoint(devices::list)
        .endpoint(devices::get)
        .endpoint(devices::update)
        .endpoint(devices::delete)
        .endpoint(devices::delete_many)
        // Profiles
        .endpoint(profile::get_profile)
        .endpoint(profile::get_field)
        .endpoint(profile::set_field)
        .endpoint(profile::delete_field)
}
