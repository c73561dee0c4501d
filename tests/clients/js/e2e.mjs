// End-to-end test of Axon with matrix-js-sdk, used the way a web or mobile app would:
// a DM, a 10-member group, one user on two devices, the online indicator, typing, read receipts,
// scroll-back. Run by scripts/test through tests/cli.rs; by hand: AXON_URL=http://… node e2e.mjs
// (the server needs [presence] offline_after = 2 and idle_after = 4).
import fs from "node:fs";
import * as sdk from "matrix-js-sdk";
import {
    BASE, PASSWORD, RUN, out, check, fail, httpLog, makeFetch, safeJson, sleep, until, waitFor, register, login, run,
} from "./harness.mjs";

const {
    createClient, ClientEvent, RoomEvent, RoomMemberEvent, UserEvent, SyncState, Preset, EventType,
} = sdk;

const OVERALL_TIMEOUT_MS = 120_000;

const bodyOf = (ev) => ev.getContent()?.body;
function timelineMsgs(room) {
    return room.getLiveTimeline().getEvents().filter((e) => e.getType() === "m.room.message");
}
function waitTimelineBody(client, roomId, body, ms, label) {
    return waitFor(client, RoomEvent.Timeline,
        (ev, room, toStart) => room?.roomId === roomId && !toStart && bodyOf(ev) === body && !ev.status, ms, label);
}

const clients = [];
function makeClient(who, creds, extra = {}) {
    const c = createClient({
        baseUrl: BASE, userId: creds.user_id, accessToken: creds.access_token, deviceId: creds.device_id,
        fetchFn: makeFetch(who), ...extra,
    });
    c.who = who;
    clients.push(c);
    return c;
}
async function start(client, ms = 10_000) {
    const prepared = waitFor(client, ClientEvent.Sync, (s) => s === SyncState.Prepared || s === SyncState.Syncing, ms, `${client.who} sync PREPARED`);
    await client.startClient({ initialSyncLimit: 10 });
    await prepared;
}
async function roomOf(client, roomId, ms = 10_000) {
    return until(() => client.getRoom(roomId), ms, `${client.who} to know room ${roomId}`);
}
/** Accept an invite the way an app does: wait for the invite to show up in the client, then joinRoom. */
async function acceptInvite(client, roomId, ms = 10_000) {
    const room = await until(() => { const r = client.getRoom(roomId); return r?.getMyMembership() === "invite" && r; }, ms, `${client.who} invite to ${roomId}`);
    await client.joinRoom(roomId);
    await until(() => room.getMyMembership() === "join", ms, `${client.who} membership=join in ${roomId}`);
    return room;
}
async function scrollToStart(client, room, step = 20, maxIter = 50) {
    let iter = 0;
    while (room.oldState.paginationToken !== null && iter++ < maxIter) await client.scrollback(room, step);
    return iter;
}

// ---------------------------------------------------------------- scenarios
async function main() {
    out(`# matrix-js-sdk ${JSON.parse(fs.readFileSync(new URL("./node_modules/matrix-js-sdk/package.json", import.meta.url))).version}, server ${BASE}, run ${RUN}`);

    // 0. A plain startClient reaches PREPARED (it reads push rules, versions, capabilities first).
    {
        const creds = await register(`plain_${RUN}`, "plain");
        const c = makeClient("plain", creds);
        try { await start(c, 8_000); check("0. startClient() without workaround reaches PREPARED", true); }
        catch (e) {
            const st = c.getSyncState(); const err = c.getSyncStateData()?.error;
            const mine = httpLog.filter((h) => h.who === "plain");
            const n = (re) => mine.filter((h) => re.test(h.path)).length;
            check("0. startClient() without workaround reaches PREPARED", false,
                `sync state ${st}; ${err ? `${err.httpStatus} ${err.errcode} ${err.url}` : e.message}; in 8 s: ${n(/\/pushrules\/$/)}x GET /pushrules/, ${n(/\/versions$/)}x GET /versions, ${n(/\/filter$/)}x POST filter, ${n(/\/sync$/)}x /sync`);
        }
        c.stopClient();
    }

    // Users and clients
    const aliceCreds = await register(`alice_${RUN}`, "alice web");
    const bobCreds = await register(`bob_${RUN}`, "bob phone");
    const alice = makeClient("alice", aliceCreds);
    const bob = makeClient("bob#1", bobCreds);
    const A = aliceCreds.user_id, B = bobCreds.user_id;

    // Record bob's presence as alice's client sees it, from the very beginning.
    const bobPresence = [];
    alice.on(UserEvent.Presence, (ev, user) => { if (user?.userId === B) bobPresence.push({ t: Date.now(), presence: user.presence, currentlyActive: user.currentlyActive }); });
    // raw m.presence events from alice's /sync responses (to tell "server did not send" from "SDK did not emit")
    const rawPresence = [];
    alice.on(ClientEvent.Event, (ev) => { if (ev.getType() === "m.presence") rawPresence.push({ t: Date.now(), sender: ev.getSender(), ...ev.getContent() }); });

    try { await Promise.all([start(alice), start(bob)]); check("startClient alice + bob reach PREPARED", true); }
    catch (e) { fail("startClient alice + bob reach PREPARED", e); throw e; }

    // ---------------- a. DM
    let dmId, bobJoinedAt = 0;
    try {
        // onboarding: apps let the user pick a display name (Axon sets none at registration)
        await alice.setDisplayName("Alice");
        await bob.setDisplayName("Bob");
        const bobSeesInvite = waitFor(bob, RoomEvent.MyMembership, (room, m) => m === "invite", 10_000, "bob invite");
        ({ room_id: dmId } = await alice.createRoom({ preset: Preset.TrustedPrivateChat, is_direct: true, invite: [B] }));
        // Apps record DMs in m.direct account data
        const adSeen = waitFor(alice, ClientEvent.AccountData, (ev) => ev.getType() === "m.direct", 10_000, "m.direct echo");
        await alice.setAccountData(EventType.Direct, { [B]: [dmId] });
        const [inviteRoom] = await bobSeesInvite;
        check("a. bob's client sees the DM invite (Room.myMembership=invite)", inviteRoom.roomId === dmId);
        check("a. the invite is shown under the inviter's name (room.name from invite_state)", inviteRoom.name === "Alice", `room.name="${inviteRoom.name}"`);
        check("a. bob's client recognises it as a DM from alice (room.getDMInviter())", inviteRoom.getDMInviter() === A,
            `getDMInviter()=${inviteRoom.getDMInviter()}; own member event content=${safeJson(inviteRoom.currentState.getMember(B)?.events.member?.getContent())}`);
        try { const [ev] = await adSeen; check("a. alice's m.direct account data comes back via /sync", ev.getContent()[B]?.[0] === dmId); }
        catch (e) { fail("a. alice's m.direct account data comes back via /sync", e); }

        const aliceSeesJoin = waitFor(alice, RoomMemberEvent.Membership, (ev, m) => m.roomId === dmId && m.userId === B && m.membership === "join", 10_000, "alice sees bob join");
        await acceptInvite(bob, dmId);
        await aliceSeesJoin;
        bobJoinedAt = Date.now();
        check("a. bob joins; alice's client sees bob's membership=join", alice.getRoom(dmId).getMember(B)?.membership === "join");

        let p = waitTimelineBody(bob, dmId, "hello bob", 10_000, "bob gets 'hello bob'");
        await alice.sendTextMessage(dmId, "hello bob");
        const [evB] = await p;
        check("a. alice -> bob message arrives on bob's timeline", evB.getSender() === A);
        p = waitTimelineBody(alice, dmId, "hi alice", 10_000, "alice gets 'hi alice'");
        await bob.sendTextMessage(dmId, "hi alice");
        const [evA] = await p;
        check("a. bob -> alice message arrives on alice's timeline", evA.getSender() === B);
        // room list display: an unnamed DM is named after the other member (SDK computes it from m.heroes/members)
        const nameOnBob = bob.getRoom(dmId).name, nameOnAlice = alice.getRoom(dmId).name;
        check("a. DM room name shown in each client is the other user's display name",
            nameOnBob === "Alice" && nameOnAlice === "Bob", `bob sees "${nameOnBob}", alice sees "${nameOnAlice}"`);
    } catch (e) { fail("a. DM scenario", e); }

    // ---------------- d (part 1). presence online
    // The SDK learns presence only from m.presence events in /sync (User.presence defaults to "offline";
    // note: a first-ever m.presence of "offline" does not fire UserEvent.Presence, so raw events are tracked too).
    const rel = () => rawPresence.filter((p) => p.sender === B)
        .map((p) => `${p.presence}@${((p.t - bobJoinedAt) / 1000).toFixed(1)}s(last_active_ago=${p.last_active_ago})`).join(", ");
    const bobPresenceEvent = (state, after, ms, label) =>
        until(() => rawPresence.find((p) => p.sender === B && p.presence === state && p.t >= after), ms, label);
    // d1. bob has been syncing (=> online) since before the DM existed. Once alice shares a room with him her
    //     client should learn his current presence (Synapse sends it for newly shared users).
    try {
        await bobPresenceEvent("online", 0, Math.max(0, bobJoinedAt + 3_000 - Date.now()), "m.presence online for bob");
        check("d. alice's client learns bob is online once they share the DM (getUser(bob).presence)", alice.getUser(B)?.presence === "online");
    } catch (e) {
        check("d. alice's client learns bob is online once they share the DM (getUser(bob).presence)", false,
            `${e.message}; getUser(bob).presence=${alice.getUser(B)?.presence}; bob presence events so far: [${rel()}]`);
    }
    // d2. state change path: bob idles (idle_after = 4 s) -> unavailable, then bob types (activity) -> online.
    try {
        const t0 = Date.now();
        await bobPresenceEvent("unavailable", t0, 8_000, "m.presence unavailable for bob after idling");
        check("d. bob idles (no typing/receipts for > idle_after=4 s) -> alice's client sees bob 'unavailable'", alice.getUser(B)?.presence === "unavailable");
        const t1 = Date.now();
        const pOnline = waitFor(alice, UserEvent.Presence, (ev, u) => u.userId === B && u.presence === "online", 5_000, "UserEvent.Presence online for bob");
        await bob.sendTyping(dmId, true, 1_000);
        await pOnline;
        check(`d. bob becomes active (typing) -> alice's client fires UserEvent.Presence 'online' (${Date.now() - t1} ms)`,
            alice.getUser(B)?.presence === "online" && alice.getUser(B)?.currentlyActive === true);
        await bob.sendTyping(dmId, false, 0);
    } catch (e) { fail("d. idle -> unavailable -> active -> online seen by alice", new Error(`${e.message}; events [${rel()}]`)); }
    // d3. a user who keeps chatting (one message per second for 6 s > idle_after) should not be shown idle.
    try {
        const t2 = Date.now();
        for (let i = 1; i <= 6; i++) { await bob.sendTextMessage(dmId, `chatting ${i}`); await sleep(1_000); }
        await sleep(500);
        const idle = rawPresence.filter((p) => p.sender === B && p.t >= t2 && p.presence !== "online");
        check("d. bob sending a message every second for 6 s stays 'online' for alice (sending counts as activity)",
            idle.length === 0 && alice.getUser(B)?.presence === "online",
            `alice saw: ${idle.map((p) => `${p.presence} at +${((p.t - t2) / 1000).toFixed(1)}s (last_active_ago=${p.last_active_ago})`).join(", ")}; getUser(bob).presence=${alice.getUser(B)?.presence}`);
    } catch (e) { fail("d. chatting keeps bob online", e); }

    // ---------------- e. typing
    try {
        const dmA = alice.getRoom(dmId);
        let p = waitFor(alice, RoomMemberEvent.Typing, (ev, m) => m.roomId === dmId && m.userId === B && m.typing === true, 10_000, "bob typing=true");
        await bob.sendTyping(dmId, true, 20_000);
        await p;
        check("e. alice sees bob typing (RoomMember.typing, member.typing=true)", dmA.getMember(B)?.typing === true);
        p = waitFor(alice, RoomMemberEvent.Typing, (ev, m) => m.roomId === dmId && m.userId === B && m.typing === false, 10_000, "bob typing=false");
        await bob.sendTyping(dmId, false, 0);
        await p;
        check("e. alice sees bob stop typing (member.typing=false)", dmA.getMember(B)?.typing === false);
    } catch (e) { fail("e. typing", e); }

    // ---------------- f. read receipts
    try {
        const pB = waitTimelineBody(bob, dmId, "please read this", 10_000, "bob gets 'please read this'");
        const { event_id: readId } = await alice.sendTextMessage(dmId, "please read this");
        const [evOnBob] = await pB;
        const dmA = alice.getRoom(dmId);
        const pR = waitFor(alice, RoomEvent.Receipt, (ev, room) => room.roomId === dmId && room.getEventReadUpTo(B) === readId, 10_000, "alice gets bob's receipt");
        await bob.sendReadReceipt(evOnBob);
        await pR;
        const evOnAlice = dmA.findEventById(readId);
        const rs = dmA.getReceiptsForEvent(evOnAlice);
        check("f. alice sees bob's m.read receipt (RoomEvent.Receipt, getReceiptsForEvent)",
            rs.some((r) => r.userId === B && r.type === "m.read" && typeof r.data?.ts === "number"), safeJson(rs));
        check("f. room.getUsersReadUpTo(event) includes bob", dmA.getUsersReadUpTo(evOnAlice).includes(B));
    } catch (e) { fail("f. read receipts", e); }

    // ---------------- c. two devices for bob
    let bob2;
    try {
        const bob2Creds = await login(`bob_${RUN}`, "bob laptop");
        check("c. bob logs in on a second device (new device_id)", bob2Creds.device_id && bob2Creds.device_id !== bobCreds.device_id);
        bob2 = makeClient("bob#2", bob2Creds);
        await start(bob2);
        const dm2 = await roomOf(bob2, dmId);
        // initialSyncLimit 10: bob#2 gets the latest part of the history; it must match bob#1's view exactly
        const ids1 = timelineMsgs(bob.getRoom(dmId)).map((e) => e.getId());
        const ids2 = timelineMsgs(dm2).map((e) => e.getId());
        check("c. bob#2's initial sync has the DM as joined, its recent history identical to bob#1's",
            dm2.getMyMembership() === "join" && ids2.length > 0 && JSON.stringify(ids1.slice(-ids2.length)) === JSON.stringify(ids2)
            && bodyOf(timelineMsgs(dm2).at(-1)) === "please read this",
            `membership=${dm2.getMyMembership()} msgs=${safeJson(timelineMsgs(dm2).map(bodyOf))}`);

        const p1 = waitTimelineBody(bob, dmId, "to both devices", 10_000, "bob#1 gets it");
        const p2 = waitTimelineBody(bob2, dmId, "to both devices", 10_000, "bob#2 gets it");
        await alice.sendTextMessage(dmId, "to both devices");
        const r = await Promise.allSettled([p1, p2]);
        check("c. alice's message reaches bob#1", r[0].status === "fulfilled", r[0].reason?.message);
        check("c. alice's message reaches bob#2", r[1].status === "fulfilled", r[1].reason?.message);

        const p3 = waitTimelineBody(bob2, dmId, "sent from bob#1", 10_000, "bob#2 gets bob#1's message");
        const { event_id: fromB1 } = await bob.sendTextMessage(dmId, "sent from bob#1");
        const [evOn2] = await p3;
        check("c. message from bob#1 shows on bob#2", evOn2.getId() === fromB1 && evOn2.getSender() === B);
        check("c. bob#2 does not receive bob#1's transaction_id", evOn2.getUnsigned().transaction_id === undefined, safeJson(evOn2.getUnsigned()));
        // bob#1: local echo must be reconciled with the remote echo (no duplicate)
        await sleep(500);
        const onB1 = timelineMsgs(bob.getRoom(dmId)).filter((e) => bodyOf(e) === "sent from bob#1");
        check("c. bob#1 shows its own message exactly once (local echo reconciled)", onB1.length === 1 && onB1[0].getId() === fromB1 && !onB1[0].status,
            `count=${onB1.length} status=${onB1.map((e) => e.status)}`);

        // read markers: bob#1 sets the fully-read marker, bob#2 sees m.fully_read room account data
        const pFR = waitFor(bob2, RoomEvent.AccountData, (ev, room) => ev.getType() === "m.fully_read" && room.roomId === dmId && ev.getContent().event_id === fromB1, 10_000, "bob#2 m.fully_read");
        await bob.setRoomReadMarkers(dmId, fromB1);
        try { await pFR; check("c. read marker set on bob#1 (POST read_markers) reaches bob#2 as m.fully_read", true); }
        catch (e) { fail("c. read marker set on bob#1 (POST read_markers) reaches bob#2 as m.fully_read", e); }
    } catch (e) { fail("c. two devices", e); }

    // ---------------- b. 10-member group
    try {
        const others = [];
        for (let i = 3; i <= 10; i++) {
            const cr = await register(`m${i}_${RUN}`, `m${i} device`);
            const c = makeClient(`m${i}`, cr);
            others.push(c);
        }
        await Promise.all(others.map((c) => start(c)));
        const members = [alice, bob, ...others];
        const { room_id: gid } = await alice.createRoom({ preset: Preset.PrivateChat, name: "group", invite: [B, ...others.map((c) => c.getUserId())] });
        await Promise.all([bob, ...others].map((c) => acceptInvite(c, gid, 15_000)));
        const gA = await roomOf(alice, gid);
        await until(() => gA.getJoinedMemberCount() === 10, 10_000, "alice sees 10 joined members");
        check("b. all 10 members joined (alice's room.getJoinedMemberCount()==10)", gA.getJoinedMemberCount() === 10);

        const bodies = members.map((c) => `group message from ${c.who}`);
        await Promise.all(members.map((c, i) => c.sendTextMessage(gid, bodies[i])));
        // observer: m5, who was in the room before the messages were sent
        const obs = others[2];
        const gO = obs.getRoom(gid);
        try { await until(() => bodies.every((b) => timelineMsgs(gO).some((e) => bodyOf(e) === b)), 15_000, "observer has all 10"); } catch { /* asserted below */ }
        await scrollToStart(obs, gO);
        const seen = timelineMsgs(gO).map(bodyOf);
        const counts = bodies.map((b) => seen.filter((s) => s === b).length);
        check(`b. live member (${obs.who}) timeline holds all 10 messages exactly once`, counts.every((n) => n === 1), `counts=${counts} seen=${seen.length}`);

        // fresh device of m10 started after the fact: initial sync (limit 10) + scrollback must give each exactly once
        const m10b = makeClient("m10#2", await login(others[7].getUserId().slice(1).split(":")[0], "m10 second"));
        await start(m10b);
        const gF = await roomOf(m10b, gid);
        await scrollToStart(m10b, gF);
        const seenF = timelineMsgs(gF).map(bodyOf);
        const countsF = bodies.map((b) => seenF.filter((s) => s === b).length);
        const ids = gF.getLiveTimeline().getEvents().map((e) => e.getId());
        check("b. fresh device (initialSyncLimit 10 + scrollback) holds all 10 exactly once", countsF.every((n) => n === 1), `counts=${countsF}`);
        check("b. fresh device timeline has no duplicate event IDs and starts at m.room.create",
            new Set(ids).size === ids.length && gF.getLiveTimeline().getEvents()[0]?.getType() === "m.room.create",
            `events=${ids.length} unique=${new Set(ids).size} first=${gF.getLiveTimeline().getEvents()[0]?.getType()}`);
        for (const c of [...others, m10b]) c.stopClient();
    } catch (e) { fail("b. 10-member group", e); }

    // ---------------- g. scroll-back through 60 messages
    try {
        const { room_id: hid } = await alice.createRoom({ preset: Preset.PrivateChat, name: "history" });
        for (let i = 1; i <= 60; i++) await alice.sendTextMessage(hid, `history ${i}`);
        const a2 = makeClient("alice#2", await login(`alice_${RUN}`, "alice history device"), { timelineSupport: true });
        await start(a2);
        const h = await roomOf(a2, hid);
        const initial = timelineMsgs(h).length;
        const iters = await scrollToStart(a2, h, 20);
        const evs = h.getLiveTimeline().getEvents();
        const msgs = evs.filter((e) => e.getType() === "m.room.message").map(bodyOf);
        const want = Array.from({ length: 60 }, (_, i) => `history ${i + 1}`);
        check(`g. scrollback(room, 20) x${iters} reaches the start (paginationToken null) from ${initial} initial msgs`, h.oldState.paginationToken === null);
        check("g. all 60 messages exactly once, in order", JSON.stringify(msgs) === JSON.stringify(want),
            `got ${msgs.length}: ${safeJson(msgs.slice(0, 5))}..`);
        check("g. first timeline event is m.room.create", evs[0]?.getType() === "m.room.create", `first=${evs[0]?.getType()}`);
        const ids = evs.map((e) => e.getId());
        check("g. no duplicate events in the timeline", new Set(ids).size === ids.length);

        // jump-to-event (timelineSupport: /context) then paginate forwards to the live end
        const target = evs.find((e) => bodyOf(e) === "history 30");
        const ts = h.getUnfilteredTimelineSet();
        ts.resetLiveTimeline(); // drop the loaded history so getEventTimeline really uses /context
        const tl = await a2.getEventTimeline(ts, target.getId());
        let around = tl.getEvents().filter((e) => e.getType() === "m.room.message").map(bodyOf);
        check("g. getEventTimeline (GET /context) returns the event with its neighbours", around.includes("history 30") && around.includes("history 29") && around.includes("history 31"), safeJson(around));
        let n = 0;
        while (n++ < 20 && (await a2.paginateEventTimeline(tl, { backwards: false, limit: 20 }))) { /* page forward */ }
        const fwd = tl.getEvents().filter((e) => e.getType() === "m.room.message").map(bodyOf);
        const startIdx = fwd.indexOf("history 30");
        check("g. paginating forward from /context reaches history 60 with no gaps/duplicates",
            JSON.stringify(fwd.slice(startIdx)) === JSON.stringify(want.slice(29)), `fwd tail=${safeJson(fwd.slice(startIdx).slice(-3))} len=${fwd.length}`);
        a2.stopClient();
    } catch (e) { fail("g. scrollback", e); }

    // ---------------- d (part 4). offline after bob's clients stop (both devices)
    try {
        const before = Date.now();
        bob.stopClient();
        bob2?.stopClient();
        const ev = await bobPresenceEvent("offline", before, 20_000, "m.presence offline for bob");
        check(`d. alice's client sees bob 'offline' ${((ev.t - before) / 1000).toFixed(1)} s after his clients stopClient() (offline_after=2)`,
            alice.getUser(B)?.presence === "offline" && bobPresence.some((p) => p.presence === "offline" && p.t >= before));
    } catch (e) { fail("d. alice sees bob go offline after stopClient()", new Error(`${e.message}; getUser(bob).presence=${alice.getUser(B)?.presence}`)); }
    out(`# bob's m.presence events in alice's /sync (time after bob joined the DM): ${rel()}`);
    out(`# raw m.presence events in alice's /sync: ${rawPresence.map((p) => `${p.sender.split(":")[0]}=${p.presence}@${((p.t - bobJoinedAt) / 1000).toFixed(1)}s`).join(", ")}`);
}

// ---------------------------------------------------------------- run
run(main, {
    timeoutMs: OVERALL_TIMEOUT_MS,
    clients,
    expected: (h) => h.who.startsWith("register:") && h.status === 401,
    expectedNote: "the expected UIA 401 on /register",
});
