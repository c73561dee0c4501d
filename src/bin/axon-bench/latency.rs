//! The delivery workloads: DMs at an offered rate (over long-poll, WebSocket, or across two
//! processes), fan-out to a group, and send throughput.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    api::{Api, Arrivals, Receivers, Result, Transport},
    cpu::CpuMeter,
    Args, Figures,
};

/// DM pairs: each sender sends to its room at `rate / pairs` messages a second while the receiver
/// waits on `transport`; the latency runs from the start of the send request to the arrival.
/// Senders use `api`, receivers `receiving` (another process of the same server for two-process).
pub async fn dm_latency(
    api: &Api,
    receiving: &Api,
    args: &Args,
    transport: Transport,
    workload: &'static str,
) -> Result<Figures> {
    let mut figures = Figures::new(workload);
    if transport == Transport::WebSocket && !api.offers_websocket().await {
        return Err("the server does not offer the org.axon.ws stream".into());
    }
    let mut pairs = Vec::new();
    for i in 0..args.pairs {
        let sender = api.register(&format!("s{i}")).await?;
        let receiver = receiving.register(&format!("r{i}")).await?;
        let room = api
            .create_room(
                &sender,
                json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [receiver.user_id]}),
            )
            .await?;
        receiving.join(&receiver, &room).await?;
        pairs.push((sender, receiver, room));
    }
    let seen: Arrivals = Arc::default();
    let mut receivers =
        Receivers::spawn(pairs.iter().map(|(_, r, _)| (receiving.clone(), r.clone(), seen.clone())), transport);
    receivers.wait_ready().await?;

    let cpu = CpuMeter::start(args.server_pid);
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
    figures.drain(&seen, sent).await;
    cpu.finish(&mut figures, sent, "message");
    receivers.stop();
    let started = started.lock().map(|s| s.clone()).unwrap_or_default();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let latencies: Vec<f64> = seen
        .iter()
        .filter_map(|(id, times)| Some(times.first()?.duration_since(*started.get(id)?).as_secs_f64() * 1000.0))
        .collect();
    figures.add("offered_rate", args.rate, "msg/s");
    figures.add("sent", sent as f64, "messages");
    figures.latencies("latency", latencies, &[50, 90, 99]);
    Ok(figures)
}

pub async fn group_fanout(api: &Api, args: &Args) -> Result<Figures> {
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
    let mut receivers = Receivers::spawn(
        members.iter().zip(&seen).map(|(m, s)| (api.clone(), m.clone(), s.clone())),
        Transport::LongPoll,
    );
    receivers.wait_ready().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = args.messages.unwrap_or(20);
    let cpu = CpuMeter::start(args.server_pid);
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
    cpu.finish(&mut figures, messages, "message");
    receivers.stop();
    let duplicated: usize =
        seen.iter().map(|s| s.lock().map(|s| s.values().filter(|t| t.len() > 1).count()).unwrap_or(0)).sum();
    figures.add("duplicated", duplicated as f64, "deliveries");
    if duplicated > 0 {
        figures.errors.push(format!("{duplicated} duplicated deliveries"));
    }
    figures.add("members", args.members as f64, "users");
    figures.latencies("delivery", per_delivery, &[50, 99]);
    figures.latencies("to_last_receiver", to_last, &[50, 99]);
    Ok(figures)
}

pub async fn send_throughput(api: &Api, args: &Args) -> Result<Figures> {
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
    let mut receivers =
        Receivers::spawn(lanes.iter().map(|(_, r, _)| (api.clone(), r.clone(), seen.clone())), Transport::LongPoll);
    receivers.wait_ready().await?;
    let cpu = CpuMeter::start(args.server_pid);
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
    figures.drain(&seen, sent).await;
    cpu.finish(&mut figures, sent, "message");
    receivers.stop();
    Ok(figures)
}
