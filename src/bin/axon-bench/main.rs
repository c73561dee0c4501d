//! `axon-bench`: a load generator that speaks only the public Client-Server API, so that it can
//! measure Axon and other homeservers alike. It sets up users and rooms untimed, runs a workload,
//! checks correctness while it measures (a message lost, duplicated or out of order fails the run),
//! and prints one line per figure plus a JSON file.

mod api;
mod cpu;
mod idle;
mod latency;
mod reads;

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::json;

use api::{Api, Arrivals, Transport};

#[derive(Parser)]
#[command(name = "axon-bench", about = "Load generator for Matrix homeservers (Client-Server API)")]
pub struct Args {
    /// The homeserver's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    base_url: String,
    #[arg(long, value_enum)]
    workload: Workload,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench-results.json")]
    out: String,
    /// dm-latency, ws-latency, two-process: number of DM pairs.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// dm-latency, ws-latency, two-process: messages per second offered, over all pairs.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// dm-latency, ws-latency, two-process, send-throughput: seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// group-fanout: members of the room, all syncing.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// group-fanout: messages sent; history: messages in the room; initial-sync: messages per room.
    #[arg(long)]
    messages: Option<usize>,
    /// send-throughput: concurrent senders, each in its own room with a syncing receiver.
    #[arg(long, default_value_t = 32)]
    senders: usize,
    /// initial-sync: rooms the user is in.
    #[arg(long, default_value_t = 200)]
    rooms: usize,
    /// two-process: the base URL of the second process, where the receivers register and sync.
    #[arg(long)]
    receiver_base_url: Option<String>,
    /// idle-connections: idle long-poll syncs, then as many idle WebSocket streams.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// idle-connections: the users the connections are spread over.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// The server's process id: idle-connections reads its resident memory from /proc, and the
    /// delivery workloads its CPU time (given or not, they report PostgreSQL's and the machine's).
    #[arg(long)]
    server_pid: Option<u32>,
    /// idle-connections: which kind of connection to measure.
    #[arg(long, value_enum, default_value = "both")]
    idle_transport: idle::IdleTransport,
    /// Bytes of filler added to every message body (bodies are otherwise a few bytes): the cost
    /// of long messages. Spec and Axon cap a body below 100,000 characters.
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Workload {
    DmLatency,
    WsLatency,
    TwoProcess,
    GroupFanout,
    SendThroughput,
    InitialSync,
    History,
    IdleConnections,
}

pub struct Figures {
    workload: &'static str,
    values: Vec<(String, f64, &'static str)>,
    errors: Vec<String>,
}

impl Figures {
    fn new(workload: &'static str) -> Self {
        Self { workload, values: Vec::new(), errors: Vec::new() }
    }
    fn add(&mut self, name: &str, value: f64, unit: &'static str) {
        println!("{} {name} {value:.3} {unit}", self.workload);
        self.values.push((name.to_owned(), value, unit));
    }
    fn latencies(&mut self, name: &str, mut samples: Vec<f64>, percentiles: &[u32]) {
        if samples.is_empty() {
            self.errors.push(format!("{name}: no samples"));
            return;
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        for p in percentiles {
            let index = ((samples.len() as f64 * f64::from(*p) / 100.0).ceil() as usize).clamp(1, samples.len()) - 1;
            self.add(&format!("{name}_p{p}"), samples[index], "ms");
        }
        self.add(&format!("{name}_max"), samples[samples.len() - 1], "ms");
    }

    /// Checks every sent id arrived exactly once, waiting up to 10 s for stragglers.
    async fn drain(&mut self, seen: &Arrivals, sent: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if seen.lock().map(|s| s.len()).unwrap_or(0) >= sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let lost = sent.saturating_sub(seen.len());
        let duplicated = seen.values().filter(|times| times.len() > 1).count();
        self.add("lost", lost as f64, "messages");
        self.add("duplicated", duplicated as f64, "messages");
        if lost > 0 || duplicated > 0 {
            self.errors.push(format!("{lost} lost, {duplicated} duplicated"));
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let run = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
            % 0xffffff
    );
    let api = Api::new(&args.base_url, &run, args.body_bytes);
    let result = match args.workload {
        Workload::DmLatency => latency::dm_latency(&api, &api, &args, Transport::LongPoll, "dm-latency").await,
        Workload::WsLatency => latency::dm_latency(&api, &api, &args, Transport::WebSocket, "ws-latency").await,
        Workload::TwoProcess => match &args.receiver_base_url {
            Some(url) => {
                latency::dm_latency(
                    &api,
                    &Api::new(url, &run, args.body_bytes),
                    &args,
                    Transport::LongPoll,
                    "two-process",
                )
                .await
            }
            None => Err("two-process needs --receiver-base-url (the second process)".into()),
        },
        Workload::GroupFanout => latency::group_fanout(&api, &args).await,
        Workload::SendThroughput => latency::send_throughput(&api, &args).await,
        Workload::InitialSync => reads::initial_sync(&api, &args).await,
        Workload::History => reads::history(&api, &args).await,
        Workload::IdleConnections => idle::idle_connections(&api, &args).await,
    };
    let figures = match result {
        Ok(figures) => figures,
        Err(e) => {
            eprintln!("axon-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let json = json!({
        "workload": figures.workload,
        "base_url": args.base_url,
        "figures": figures.values.iter().map(|(n, v, u)| json!({"name": n, "value": v, "unit": u})).collect::<Vec<_>>(),
        "errors": figures.errors,
    });
    if let Err(e) = std::fs::write(&args.out, serde_json::to_string_pretty(&json).unwrap_or_default()) {
        eprintln!("axon-bench: cannot write {}: {e}", args.out);
    }
    if figures.errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        for e in &figures.errors {
            eprintln!("axon-bench: correctness: {e}");
        }
        std::process::ExitCode::FAILURE
    }
}
