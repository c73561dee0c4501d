//! `axon-bench`: a load generator that speaks only the public Client-Server API, so that it can
//! measure Axon and other homeservers alike. It sets up users and rooms untimed, runs a workload,
//! checks correctness while it measures (a message lost, duplicated or out of order fails the run),
//! and prints one line per figure plus a JSON file.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "axon-bench", about = "Load generator for Matrix homeservers (Client-Server API)")]
struct Args {
    /// The homeserver's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    base_url: String,
    #[arg(long, value_enum)]
    workload: Workload,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench-results.json")]
    out: String,
    /// dm-latency: number of DM pairs.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// dm-latency: messages per second offered, over all pairs.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// dm-latency, send-throughput: seconds of load.
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
}

#[derive(Clone, Copy, ValueEnum)]
enum Workload {
    DmLatency,
    GroupFanout,
    SendThroughput,
    InitialSync,
    History,
}

type Result<T> = std::result::Result<T, String>;

/// When each bench message (by id) reached a receiver; more than one arrival is a duplicate.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    run: String,
}

#[derive(Clone)]
struct User {
    token: String,
    user_id: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{path}: {status} {body}"));
        }
        Ok(body)
    }

    async fn register(&self, name: &str) -> Result<User> {
        let username = format!("bench{}{name}", self.run);
        let body =
            json!({"username": username, "password": format!("pw-{username}"), "auth": {"type": "m.login.dummy"}});
        let mut response =
            self.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(body.clone())).await;
        if let Err(e) = &response {
            // Servers that want a session first (Synapse) answer 401 with one.
            if e.contains("401") {
                let first =
                    self.http.post(format!("{}/_matrix/client/v3/register", self.base)).json(&json!({})).send().await;
                let session = match first {
                    Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["session"].as_str().map(str::to_owned)),
                    Err(_) => None,
                };
                let mut body = body;
                body["auth"]["session"] = json!(session);
                response = self.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(body)).await;
            }
        }
        let response = response?;
        Ok(User {
            token: response["access_token"].as_str().ok_or("no access_token")?.to_owned(),
            user_id: response["user_id"].as_str().ok_or("no user_id")?.to_owned(),
        })
    }

    async fn create_room(&self, user: &User, body: Value) -> Result<String> {
        let response =
            self.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&user.token), Some(body)).await?;
        Ok(response["room_id"].as_str().ok_or("no room_id")?.to_owned())
    }

    async fn join(&self, user: &User, room: &str) -> Result<()> {
        self.call(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{room}"), Some(&user.token), Some(json!({})))
            .await
            .map(|_| ())
    }

    async fn send(&self, user: &User, room: &str, txn: &str, text: &str) -> Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let response = self
            .call(reqwest::Method::PUT, &path, Some(&user.token), Some(json!({"msgtype": "m.text", "body": text})))
            .await?;
        Ok(response["event_id"].as_str().ok_or("no event_id")?.to_owned())
    }

    async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64, limit: u64) -> Result<Value> {
        let filter = json!({"room": {"timeline": {"limit": limit}}, "presence": {"types": []}}).to_string();
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}", urlencode(&filter));
        if let Some(since) = since {
            path.push_str(&format!("&since={}", urlencode(since)));
        }
        self.call(reqwest::Method::GET, &path, Some(&user.token), None).await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Message bodies carry `bench:<id>`; every receiver reports what it saw.
fn bench_ids(sync: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    if let Some(rooms) = sync["rooms"]["join"].as_object() {
        for (room, data) in rooms {
            for event in data["timeline"]["events"].as_array().into_iter().flatten() {
                if let Some(id) = event["content"]["body"].as_str().and_then(|b| b.strip_prefix("bench:")) {
                    found.push((room.clone(), id.to_owned()));
                }
            }
        }
    }
    found
}

struct Figures {
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
}

/// A receiver syncing in a loop, recording when each bench id arrives and how often.
fn spawn_receiver(
    api: Api,
    user: User,
    seen: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let mut since =
            Some(api.sync(&user, None, 0, 1).await?["next_batch"].as_str().ok_or("no next_batch")?.to_owned());
        while !stop.load(Ordering::Relaxed) {
            let response = api.sync(&user, since.as_deref(), 5_000, 100).await?;
            let now = Instant::now();
            {
                let mut seen = seen.lock().map_err(|_| "poisoned")?;
                for (_, id) in bench_ids(&response) {
                    seen.entry(id).or_default().push(now);
                }
            }
            since = response["next_batch"].as_str().map(str::to_owned);
        }
        Ok(())
    })
}

/// Checks every sent id arrived exactly once; returns the per-id arrival times.
async fn drain(seen: &Arrivals, sent: usize, figures: &mut Figures) {
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
    figures.add("lost", lost as f64, "messages");
    figures.add("duplicated", duplicated as f64, "messages");
    if lost > 0 || duplicated > 0 {
        figures.errors.push(format!("{lost} lost, {duplicated} duplicated"));
    }
}

async fn dm_latency(api: &Api, args: &Args) -> Result<Figures> {
    let mut figures = Figures::new("dm-latency");
    let mut pairs = Vec::new();
    for i in 0..args.pairs {
        let sender = api.register(&format!("s{i}")).await?;
        let receiver = api.register(&format!("r{i}")).await?;
        let room = api
            .create_room(
                &sender,
                json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [receiver.user_id]}),
            )
            .await?;
        api.join(&receiver, &room).await?;
        pairs.push((sender, receiver, room));
    }
    let seen: Arrivals = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> =
        pairs.iter().map(|(_, r, _)| spawn_receiver(api.clone(), r.clone(), seen.clone(), stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let interval = Duration::from_secs_f64(args.pairs as f64 / args.rate.max(0.001));
    let pair_count = args.pairs as f64;
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let senders: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (sender, _, room))| {
            let (api, sender, room, started) = (api.clone(), sender.clone(), room.clone(), started.clone());
            let duration = Duration::from_secs(args.duration);
            tokio::spawn(async move {
                // Spread the pairs' first sends over one interval.
                tokio::time::sleep(interval.mul_f64(i as f64 / pair_count)).await;
                let mut ticker = tokio::time::interval(interval);
                let end = Instant::now() + duration;
                let mut n = 0;
                while Instant::now() < end {
                    ticker.tick().await;
                    let id = format!("{i}-{n}");
                    started.lock().map_err(|_| "poisoned")?.insert(id.clone(), Instant::now());
                    api.send(&sender, &room, &format!("t{id}"), &format!("bench:{id}")).await?;
                    n += 1;
                }
                Ok::<usize, String>(n)
            })
        })
        .collect();
    let mut sent = 0;
    for sender in senders {
        sent += sender.await.map_err(|e| e.to_string())??;
    }
    drain(&seen, sent, &mut figures).await;
    stop.store(true, Ordering::Relaxed);
    let started = started.lock().map(|s| s.clone()).unwrap_or_default();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let latencies: Vec<f64> = seen
        .iter()
        .filter_map(|(id, times)| Some(times.first()?.duration_since(*started.get(id)?).as_secs_f64() * 1000.0))
        .collect();
    figures.add("offered_rate", args.rate, "msg/s");
    figures.add("sent", sent as f64, "messages");
    figures.latencies("latency", latencies, &[50, 90, 99]);
    for r in receivers {
        r.abort();
    }
    Ok(figures)
}

async fn group_fanout(api: &Api, args: &Args) -> Result<Figures> {
    let mut figures = Figures::new("group-fanout");
    let owner = api.register("owner").await?;
    let room = api.create_room(&owner, json!({"preset": "public_chat"})).await?;
    let mut members = Vec::new();
    for i in 0..args.members.saturating_sub(1) {
        let user = api.register(&format!("m{i}")).await?;
        api.join(&user, &room).await?;
        members.push(user);
    }
    // Every member syncs; the owner is the sender (and counts as the 100th member).
    let seen: Vec<Arrivals> = members.iter().map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = members
        .iter()
        .zip(&seen)
        .map(|(m, s)| spawn_receiver(api.clone(), m.clone(), s.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let messages = args.messages.unwrap_or(20);
    let mut per_delivery = Vec::new();
    let mut to_last = Vec::new();
    for n in 0..messages {
        let id = format!("g{n}");
        let start = Instant::now();
        api.send(&owner, &room, &format!("t{id}"), &format!("bench:{id}")).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let arrived: Vec<Option<Instant>> =
                seen.iter().map(|s| s.lock().ok().and_then(|s| s.get(&id).and_then(|t| t.first().copied()))).collect();
            if arrived.iter().all(Option::is_some) || Instant::now() > deadline {
                let times: Vec<f64> =
                    arrived.iter().flatten().map(|t| t.duration_since(start).as_secs_f64() * 1000.0).collect();
                if times.len() < members.len() {
                    figures.errors.push(format!("message {n} reached {} of {} members", times.len(), members.len()));
                }
                to_last.push(times.iter().copied().fold(0.0, f64::max));
                per_delivery.extend(times);
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let duplicated: usize =
        seen.iter().map(|s| s.lock().map(|s| s.values().filter(|t| t.len() > 1).count()).unwrap_or(0)).sum();
    figures.add("duplicated", duplicated as f64, "deliveries");
    if duplicated > 0 {
        figures.errors.push(format!("{duplicated} duplicated deliveries"));
    }
    figures.add("members", args.members as f64, "users");
    figures.latencies("delivery", per_delivery, &[50, 99]);
    figures.latencies("to_last_receiver", to_last, &[50, 99]);
    for r in receivers {
        r.abort();
    }
    Ok(figures)
}

async fn send_throughput(api: &Api, args: &Args) -> Result<Figures> {
    let mut figures = Figures::new("send-throughput");
    let mut lanes = Vec::new();
    for i in 0..args.senders {
        let sender = api.register(&format!("ts{i}")).await?;
        let receiver = api.register(&format!("tr{i}")).await?;
        let room = api.create_room(&sender, json!({"preset": "public_chat"})).await?;
        api.join(&receiver, &room).await?;
        lanes.push((sender, receiver, room));
    }
    let seen: Arrivals = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> =
        lanes.iter().map(|(_, r, _)| spawn_receiver(api.clone(), r.clone(), seen.clone(), stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let duration = Duration::from_secs(args.duration);
    let senders: Vec<_> = lanes
        .iter()
        .enumerate()
        .map(|(i, (sender, _, room))| {
            let (api, sender, room) = (api.clone(), sender.clone(), room.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0;
                while started.elapsed() < duration {
                    let t = Instant::now();
                    api.send(&sender, &room, &format!("t{i}-{n}"), &format!("bench:{i}-{n}")).await?;
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    n += 1;
                }
                Ok::<Vec<f64>, String>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for sender in senders {
        latencies.extend(sender.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = latencies.len();
    figures.add("accepted", sent as f64 / elapsed, "msg/s");
    figures.latencies("send_latency", latencies, &[50, 99]);
    drain(&seen, sent, &mut figures).await;
    stop.store(true, Ordering::Relaxed);
    for r in receivers {
        r.abort();
    }
    Ok(figures)
}

async fn initial_sync(api: &Api, args: &Args) -> Result<Figures> {
    let mut figures = Figures::new("initial-sync");
    let user = api.register("is").await?;
    let per_room = args.messages.unwrap_or(20);
    for r in 0..args.rooms {
        let room = api.create_room(&user, json!({"name": format!("room {r}")})).await?;
        for n in 0..per_room {
            api.send(&user, &room, &format!("t{r}-{n}"), &format!("message {n}")).await?;
        }
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let response = api.sync(&user, None, 0, 10).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let rooms = response["rooms"]["join"].as_object().map(|r| r.len()).unwrap_or(0);
        if rooms != args.rooms {
            figures.errors.push(format!("initial sync returned {rooms} of {} rooms", args.rooms));
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    figures.add("rooms", args.rooms as f64, "rooms");
    figures.add("median", times[times.len() / 2], "ms");
    Ok(figures)
}

async fn history(api: &Api, args: &Args) -> Result<Figures> {
    let mut figures = Figures::new("history");
    let user = api.register("h").await?;
    let room = api.create_room(&user, json!({})).await?;
    let messages = args.messages.unwrap_or(5000);
    for n in 0..messages {
        api.send(&user, &room, &format!("t{n}"), &format!("bench:{n}")).await?;
    }
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    let mut reached_create = false;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100");
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", urlencode(from)));
        }
        let t = Instant::now();
        let page = api.call(reqwest::Method::GET, &path, Some(&user.token), None).await?;
        pages.push(t.elapsed().as_secs_f64() * 1000.0);
        for event in page["chunk"].as_array().into_iter().flatten() {
            if let Some(id) = event["content"]["body"].as_str().and_then(|b| b.strip_prefix("bench:")) {
                seen.push(id.parse::<usize>().unwrap_or(usize::MAX));
            }
            reached_create |= event["type"] == "m.room.create";
        }
        match page["end"].as_str() {
            Some(end) if !page["chunk"].as_array().is_none_or(|c| c.is_empty()) => from = Some(end.to_owned()),
            _ => break,
        }
    }
    let expected: Vec<usize> = (0..messages).rev().collect();
    if seen != expected {
        figures.errors.push(format!("history returned {} messages, not each of {messages} once in order", seen.len()));
    }
    if !reached_create {
        figures.errors.push("pagination did not reach m.room.create".into());
    }
    figures.add("pages", pages.len() as f64, "pages");
    figures.latencies("page", pages, &[50, 99]);
    Ok(figures)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let api = Api {
        http: reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap_or_default(),
        base: args.base_url.trim_end_matches('/').to_owned(),
        run: format!(
            "{:x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
                % 0xffffff
        ),
    };
    let result = match args.workload {
        Workload::DmLatency => dm_latency(&api, &args).await,
        Workload::GroupFanout => group_fanout(&api, &args).await,
        Workload::SendThroughput => send_throughput(&api, &args).await,
        Workload::InitialSync => initial_sync(&api, &args).await,
        Workload::History => history(&api, &args).await,
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
