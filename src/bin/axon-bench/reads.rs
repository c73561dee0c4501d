//! The read workloads: a fresh sync of many rooms, and paging back through a long history.

use std::time::Instant;

use serde_json::json;

use crate::{
    api::{bench_id, urlencode, Api, Result},
    Args, Figures,
};

pub async fn initial_sync(api: &Api, args: &Args) -> Result<Figures> {
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

pub async fn history(api: &Api, args: &Args) -> Result<Figures> {
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
            if let Some(id) = event["content"]["body"].as_str().and_then(bench_id) {
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
