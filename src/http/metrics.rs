//! Prometheus metrics: request counts and latency histograms by endpoint group, served in the
//! OpenMetrics text format on their own listener (`[listen] metrics`).

use std::{sync::Mutex, time::Duration};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{push::EvaluationBatches, services::Services, sync::RememberedStarts};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    group: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    method: String,
    group: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<GroupLabels, Histogram>,
    /// Read when rendered: a queue that grew with every sync would show here.
    presence_deadlines: Gauge,
}

impl Metrics {
    /// The process's metrics, with the push evaluator's `batches` and how syncs began.
    pub fn new(batches: &EvaluationBatches, starts: &RememberedStarts) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<GroupLabels, Histogram>::new_with_constructor(|| {
            // 0.25 ms … ~8 s: message delivery is measured in milliseconds, long-polls in seconds.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00025, 2.0, 16))
        });
        let mut registry = Registry::with_prefix("axon");
        registry.register("http_requests", "Client-Server API requests answered", requests.clone());
        registry.register("http_request_duration_seconds", "Time to answer a request", latency.clone());
        let presence_deadlines = Gauge::default();
        registry.register(
            "presence_deadlines",
            "Presence deadlines queued in this process, about one per user it knows",
            presence_deadlines.clone(),
        );
        registry.register(
            "push_batches_read",
            "Push evaluation batches whose events were read from the database",
            batches.read.clone(),
        );
        registry.register(
            "push_batches_handed_over",
            "Push evaluation batches of one event, handed over by its writer without a read",
            batches.handed_over.clone(),
        );
        registry.register(
            "push_batches_with_message",
            "Push evaluations of one message, made by its sender and recorded with the message",
            batches.with_message.clone(),
        );
        registry.register(
            "sync_starts_remembered",
            "Syncs woken for new messages alone that took their start from the previous answer",
            starts.used.clone(),
        );
        registry.register(
            "sync_starts_outdated",
            "Syncs whose remembered start a membership change or a write in flight outdated: read again",
            starts.outdated.clone(),
        );
        Self { registry: Mutex::new(registry), requests, latency, presence_deadlines }
    }

    /// Counts and times one answered request; `route` is the template of the route it matched.
    pub fn record_request(&self, method: &str, route: Option<&str>, status: StatusCode, took: Duration) {
        let group = route.map_or_else(|| "unmatched".to_owned(), endpoint_group);
        self.latency
            .get_or_create(&GroupLabels { method: method.to_owned(), group: group.clone() })
            .observe(took.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { method: method.to_owned(), group, status: status.as_u16() }).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = encode(&mut out, &registry);
        }
        out
    }
}

/// The endpoint group a route belongs to: the spec area after the version segment, e.g.
/// `/_matrix/client/v3/profile/{user_id}/{field}` → `profile`, `…/rooms/{room_id}/send/…` → `rooms/send`.
fn endpoint_group(route: &str) -> String {
    let Some(rest) = route.strip_prefix("/_matrix/client/") else {
        return route.trim_start_matches('/').trim_start_matches('.').split('/').next().unwrap_or("other").to_owned();
    };
    let mut segments = rest.split('/');
    let first = match segments.next() {
        Some(version @ ("v1" | "v3" | "r0" | "unstable")) => {
            let next = segments.next().unwrap_or(version);
            // Unstable paths carry the MSC's namespace first.
            if version == "unstable" && next.contains('.') {
                segments.next().unwrap_or(next)
            } else {
                next
            }
        }
        Some(other) => other,
        None => "other",
    };
    match first {
        "rooms" => format!("rooms/{}", segments.nth(1).unwrap_or("other")),
        other => other.to_owned(),
    }
}

/// The router of the metrics listener.
pub fn router(services: Services) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(services): State<Services>| async move {
                let deadlines = services.sync.presence().queued_deadlines();
                services.metrics.presence_deadlines.set(i64::try_from(deadlines).unwrap_or(i64::MAX));
                (
                    [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    services.metrics.render(),
                )
                    .into_response()
            }),
        )
        .with_state(services)
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups() {
        use super::endpoint_group as g;
        assert_eq!(g("/_matrix/client/v3/profile/{user_id}/{field}"), "profile");
        assert_eq!(g("/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}"), "rooms/send");
        assert_eq!(g("/_matrix/client/versions"), "versions");
        assert_eq!(g("/.well-known/matrix/client"), "well-known");
    }
}
