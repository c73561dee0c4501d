#!/usr/bin/env python3
"""End-to-end test of a Matrix homeserver using matrix-nio as a real client.

Usage: nio_e2e.py [HOMESERVER_URL]   (default http://127.0.0.1:18118)

Prints one line per check ("ok - ..." / "not ok - ...") and finishes with
"N passed, M failed".  Exit status 0 only if every check passed.
"""

import asyncio
import importlib.metadata
import logging
import secrets
import sys
import time
import traceback
from collections import defaultdict

import nio
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinResponse,
    LoginResponse,
    MessageDirection,
    PresenceGetResponse,
    PresenceSetResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateEvent,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomReadMarkersResponse,
    RoomSendResponse,
    RoomTypingResponse,
    SyncResponse,
    TypingNoticeEvent,
    UpdateReceiptMarkerResponse,
)
from nio.api import ReceiptType

HS = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:18118"
RUN = secrets.token_hex(4)
PASSWORD = "pw-" + secrets.token_hex(8)
OVERALL_TIMEOUT = 120

results = []  # (ok, description)
PEERS = []  # every Peer created, closed at the end


class _ValidationLog(logging.Handler):
    """Collects nio's schema-validation complaints about server payloads."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        msg = record.getMessage()
        if "validat" in msg.lower():
            self.records.append(msg)


VALIDATION_LOG = _ValidationLog()
logging.getLogger("nio").addHandler(VALIDATION_LOG)
logging.getLogger("nio").propagate = False


def check(ok, desc, detail=""):
    ok = bool(ok)
    results.append((ok, desc))
    line = ("ok - " if ok else "not ok - ") + desc
    if not ok and detail:
        line += "  [" + str(detail).replace("\n", " ")[:900] + "]"
    print(line, flush=True)
    return ok


class Peer:
    """A nio AsyncClient plus what this client has observed via /sync."""

    def __init__(self, name, user_id=None):
        self.name = name
        self.client = AsyncClient(
            HS,
            user_id or "",
            config=AsyncClientConfig(
                max_timeouts=2, max_limit_exceeded=3, request_timeout=30
            ),
        )
        # room_id -> timeline events in the order this client received them
        self.timeline = defaultdict(list)
        self.seen_ids = defaultdict(set)
        self.duplicates = defaultdict(list)
        self.limited = defaultdict(list)  # room_id -> [(prev_batch, first_event_id)]
        self.invites = {}  # room_id -> InviteInfo
        self.ephemeral = defaultdict(list)  # room_id -> [EphemeralEvent]
        self.presence = {}  # user_id -> latest PresenceEvent
        self.presence_log = []
        self.last_error = None

    @property
    def user_id(self):
        return self.client.user_id

    async def sync_once(self, timeout_ms=1000, sync_filter=None, set_presence=None):
        resp = await self.client.sync(
            timeout=timeout_ms, sync_filter=sync_filter, set_presence=set_presence
        )
        if not isinstance(resp, SyncResponse):
            self.last_error = resp
            return None
        for room_id, info in resp.rooms.invite.items():
            self.invites[room_id] = info
        for room_id, info in resp.rooms.join.items():
            tl = info.timeline
            if tl.limited:
                self.limited[room_id].append(
                    (tl.prev_batch, tl.events[0].event_id if tl.events else None)
                )
                await self._fill_gap(room_id, tl)
            for ev in tl.events:
                self._record(room_id, ev)
            self.ephemeral[room_id].extend(info.ephemeral)
        for ev in resp.presence_events:
            self.presence_log.append(ev)
            if isinstance(ev, nio.PresenceEvent):
                self.presence[ev.user_id] = ev
        return resp

    def _record(self, room_id, ev):
        eid = getattr(ev, "event_id", None)
        if eid in self.seen_ids[room_id]:
            self.duplicates[room_id].append(eid)
            return
        self.seen_ids[room_id].add(eid)
        self.timeline[room_id].append(ev)

    async def _fill_gap(self, room_id, tl):
        """Like a real client: on a limited timeline, paginate backwards from
        prev_batch until we reach an event we already know (or the start)."""
        if not self.timeline[room_id] or not tl.prev_batch:
            return  # first time we see this room: nothing to stitch to
        known = self.seen_ids[room_id]
        token = tl.prev_batch
        missing = []
        for _ in range(50):
            r = await self.client.room_messages(
                room_id, start=token, direction=MessageDirection.back, limit=20
            )
            if not isinstance(r, RoomMessagesResponse):
                self.last_error = r
                return
            hit = False
            for ev in r.chunk:
                if ev.event_id in known:
                    hit = True
                    break
                missing.append(ev)
            if hit or not r.chunk or not r.end:
                break
            token = r.end
        for ev in reversed(missing):
            self._record(room_id, ev)

    async def sync_until(self, pred, deadline_s=15, timeout_ms=1000, **kw):
        """Sync repeatedly (long-poll with timeout) until pred() is true."""
        end = time.monotonic() + deadline_s
        while True:
            if pred():
                return True
            if time.monotonic() > end:
                return False
            await self.sync_once(timeout_ms=timeout_ms, **kw)

    def messages(self, room_id):
        return [e for e in self.timeline[room_id] if isinstance(e, RoomMessageText)]

    def bodies(self, room_id):
        return [e.body for e in self.messages(room_id)]

    async def close(self):
        try:
            await self.client.close()
        except Exception:
            pass


async def register(name):
    p = Peer(name)
    PEERS.append(p)  # so it is closed even if registration fails
    uname = f"{name}_{RUN}"
    r = await p.client.register(uname, PASSWORD, device_name=f"{name}-laptop")
    if not isinstance(r, RegisterResponse):
        raise RuntimeError(f"register {uname} failed: {r}")
    return p


async def join_room(peer, room_id):
    """Join exactly as an app does, with nio's AsyncClient.join()."""
    return await peer.client.join(room_id)


async def send_text(peer, room_id, body, tx_id=None):
    r = await peer.client.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": body},
        tx_id=tx_id,
    )
    if not isinstance(r, RoomSendResponse):
        raise RuntimeError(f"{peer.name} room_send failed: {r}")
    return r.event_id


async def main():
    print(f"# matrix-nio {importlib.metadata.version('matrix-nio')} against {HS}, run {RUN}")
    # ---------------------------------------------------------------- setup
    names = ["alice", "bob"] + [f"m{i}" for i in range(3, 11)]
    peers = []
    try:
        for n in names:
            peers.append(await register(n))
        ok = all(p.client.access_token and p.client.device_id for p in peers)
        check(ok, f"register {len(peers)} users (m.login.dummy) via nio.register")
    except Exception as e:
        check(False, "register users via nio.register", e)
        return
    alice, bob = peers[0], peers[1]
    others = peers[2:]
    for p in peers:
        await p.sync_once(timeout_ms=1)  # initial sync, establishes next_batch

    # ---------------------------------------------------------------- a. DM
    dm = None
    r = await alice.client.room_create(
        is_direct=True, invite=[bob.user_id], preset=RoomPreset.trusted_private_chat
    )
    if check(isinstance(r, RoomCreateResponse), "a: alice creates DM room (is_direct, invite bob)", r):
        dm = r.room_id
    if dm:
        got = await bob.sync_until(lambda: dm in bob.invites, 10)
        inv_member = None
        if got:
            for ev in bob.invites[dm].invite_state:
                if isinstance(ev, InviteMemberEvent) and ev.state_key == bob.user_id:
                    inv_member = ev
        check(
            got
            and inv_member is not None
            and inv_member.membership == "invite"
            and inv_member.sender == alice.user_id,
            "a: bob's sync shows the invite in rooms.invite with his m.room.member invite from alice",
            f"got={got} invite_state={bob.invites.get(dm)}",
        )
        check(
            inv_member is not None and inv_member.content.get("is_direct") is True,
            "a: invite member event carries is_direct=true",
            inv_member and inv_member.content,
        )
        check(dm in bob.client.invited_rooms, "a: nio client.invited_rooms contains the DM")
        r = await bob.client.join(dm)  # plain nio call, exactly as an app would
        check(isinstance(r, JoinResponse) and r.room_id == dm, "a: bob joins the DM with AsyncClient.join()", r)
        await bob.sync_until(lambda: dm in bob.client.rooms, 10)
        cb_seen = []

        async def on_text(room, event):  # a bot-style callback
            cb_seen.append((room.room_id, event.sender, event.body))

        bob.client.add_event_callback(on_text, RoomMessageText)
        body = f"hello bob {secrets.token_hex(3)}"
        eid = await send_text(alice, dm, body)
        got = await bob.sync_until(lambda: eid in bob.seen_ids[dm], 10)
        ev = next((e for e in bob.timeline[dm] if e.event_id == eid), None)
        check(
            got and isinstance(ev, RoomMessageText) and ev.body == body and ev.sender == alice.user_id,
            "a: bob receives alice's DM message via sync with correct body and sender",
            ev,
        )
        check((dm, alice.user_id, body) in cb_seen,
              "a: bob's add_event_callback(RoomMessageText) fired for it", cb_seen)
        reply = f"hi alice {secrets.token_hex(3)}"
        eid2 = await send_text(bob, dm, reply)
        got = await alice.sync_until(lambda: eid2 in alice.seen_ids[dm], 10)
        ev = next((e for e in alice.timeline[dm] if e.event_id == eid2), None)
        check(
            got and isinstance(ev, RoomMessageText) and ev.body == reply and ev.sender == bob.user_id,
            "a: alice receives bob's reply via sync",
            ev,
        )
        room = bob.client.rooms.get(dm)
        check(
            room is not None and alice.user_id in room.users and bob.user_id in room.users,
            "a: nio room state for bob lists both members",
            room and list(room.users),
        )

    # ---------------------------------------------------------------- b. group of 10
    members = [alice, bob] + others
    r = await alice.client.room_create(
        name=f"group {RUN}",
        preset=RoomPreset.private_chat,
        invite=[p.user_id for p in members[1:]],
    )
    grp = r.room_id if isinstance(r, RoomCreateResponse) else None
    check(grp, "b: alice creates private room inviting 9 users", r)
    if grp:
        async def accept(p):
            if not await p.sync_until(lambda: grp in p.invites, 10):
                return f"{p.name}: no invite"
            jr = await join_room(p, grp)
            return None if isinstance(jr, JoinResponse) else f"{p.name}: {jr}"

        errs = [e for e in await asyncio.gather(*(accept(p) for p in members[1:])) if e]
        check(not errs, "b: all 9 invitees see the invite in sync and join", errs)
        jm = await alice.client.joined_members(grp)
        n_joined = len(jm.members) if isinstance(jm, nio.JoinedMembersResponse) else jm
        check(n_joined == 10, "b: joined_members reports 10 members", n_joined)

        # bob follows the room incrementally; m5 stays away until everything is sent
        observer_inc, observer_late = bob, peers[4]
        await observer_inc.sync_until(lambda: grp in observer_inc.client.rooms, 10)
        await observer_late.sync_until(lambda: grp in observer_late.client.rooms, 10)
        tag = secrets.token_hex(3)

        async def say(p):
            await send_text(p, grp, f"group {tag} from {p.name}")

        # everybody talks at the same time (concurrently), bob keeps syncing
        sender_task = asyncio.gather(*(say(p) for p in members))
        while not sender_task.done():
            await observer_inc.sync_once(timeout_ms=300)
        await sender_task
        want = {f"group {tag} from {p.name}" for p in members}

        def has_all(p):
            return want <= set(p.bodies(grp))

        ok_inc = await observer_inc.sync_until(lambda: has_all(observer_inc), 15)
        small = {"room": {"timeline": {"limit": 4}}}
        ok_late = await observer_late.sync_until(lambda: has_all(observer_late), 15, sync_filter=small)
        seq_inc = [b for b in observer_inc.bodies(grp) if b in want]
        seq_late = [b for b in observer_late.bodies(grp) if b in want]
        check(
            ok_late and len(seq_late) == 10 and set(seq_late) == want
            and not observer_late.duplicates[grp],
            f"b: {observer_late.name}'s sync timeline (+gap paging) has all 10 messages exactly once",
            f"got {len(seq_late)}: {seq_late} dups={observer_late.duplicates[grp]} limited={observer_late.limited[grp]}",
        )
        check(
            ok_inc and len(seq_inc) == 10 and set(seq_inc) == want
            and not observer_inc.duplicates[grp],
            "b: bob (syncing throughout) has all 10 messages exactly once",
            f"got {len(seq_inc)}: {seq_inc} dups={observer_inc.duplicates[grp]}",
        )
        check(observer_late.limited[grp],
              f"b: {observer_late.name}'s sync (timeline limit 4) was limited with prev_batch",
              observer_late.limited[grp])
        check(
            seq_inc == seq_late,
            "b: both members see the 10 messages in the same order",
            f"{seq_inc} vs {seq_late}",
        )
        # and the server's own history agrees: page back from the live end
        # (room_messages without a start token, allowed since spec v1.3)
        hist, tok = [], None
        for _ in range(10):
            r = await alice.client.room_messages(grp, start=tok, direction=MessageDirection.back, limit=20)
            if not isinstance(r, RoomMessagesResponse):
                hist = [f"error: {r}"]
                break
            hist = [e.body for e in reversed(r.chunk) if isinstance(e, RoomMessageText)] + hist
            if not r.chunk or not r.end:
                break
            tok = r.end
        seq_hist = [b for b in hist if b in want]
        check(seq_hist == seq_inc, "b: /messages history order matches what members saw via sync",
              f"{seq_hist} vs {seq_inc}")

    # ---------------------------------------------------------------- c. two devices
    bob2 = Peer("bob2", bob.user_id)
    PEERS.append(bob2)
    r = await bob2.client.login(PASSWORD, device_name="bob-phone")
    check(
        isinstance(r, LoginResponse) and r.device_id and r.device_id != bob.client.device_id,
        "c: bob logs in on a second device (new device_id)",
        r,
    )
    if isinstance(r, LoginResponse) and dm:
        await bob2.sync_once(timeout_ms=1)
        check(dm in bob2.client.rooms, "c: device 2's initial sync includes the DM room")
        body = f"to both devices {secrets.token_hex(3)}"
        eid = await send_text(alice, dm, body)
        g1, g2 = await asyncio.gather(
            bob.sync_until(lambda: eid in bob.seen_ids[dm], 10),
            bob2.sync_until(lambda: eid in bob2.seen_ids[dm], 10),
        )
        check(g1 and g2, "c: alice's message reaches both of bob's devices", f"dev1={g1} dev2={g2}")
        body = f"from bob dev1 {secrets.token_hex(3)}"
        txn = "txn-" + secrets.token_hex(6)
        eid = await send_text(bob, dm, body, tx_id=txn)
        g2 = await bob2.sync_until(lambda: eid in bob2.seen_ids[dm], 10)
        ev2 = next((e for e in bob2.timeline[dm] if e.event_id == eid), None)
        check(
            g2 and isinstance(ev2, RoomMessageText) and ev2.body == body and ev2.sender == bob.user_id,
            "c: message sent from device 1 appears in device 2's sync",
            ev2,
        )
        g1 = await bob.sync_until(lambda: eid in bob.seen_ids[dm], 10)
        ev1 = next((e for e in bob.timeline[dm] if e.event_id == eid), None)
        check(
            g1 and ev1 is not None and ev1.transaction_id == txn
            and ev2 is not None and ev2.transaction_id is None,
            "c: transaction_id is echoed to the sending device only",
            f"dev1={ev1 and ev1.transaction_id} dev2={ev2 and ev2.transaction_id}",
        )

    if isinstance(r, LoginResponse) and dm:
        # a typical bot loop on device 2: sync_forever + callback, bounded by wait_for
        fut = asyncio.get_running_loop().create_future()
        body = f"seen by sync_forever {secrets.token_hex(3)}"

        async def on_text2(room, event):
            if event.body == body and not fut.done():
                fut.set_result((room.room_id, event.sender))

        bob2.client.add_event_callback(on_text2, RoomMessageText)
        task = asyncio.create_task(bob2.client.sync_forever(timeout=1000))
        await asyncio.sleep(0.3)
        await send_text(alice, dm, body)
        try:
            got = await asyncio.wait_for(fut, 10)
        except asyncio.TimeoutError:
            got = None
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        check(got == (dm, alice.user_id), "c: device 2 running sync_forever gets alice's message via callback", got)

    # ---------------------------------------------------------------- d. presence
    if dm:
        await bob.sync_once(timeout_ms=1, set_presence="online")
        got = await alice.sync_until(
            lambda: getattr(alice.presence.get(bob.user_id), "presence", None) == "online", 10
        )
        check(got, "d: alice's sync shows bob online (PresenceEvent)",
              alice.presence.get(bob.user_id))
        r = await alice.client.get_presence(bob.user_id)
        check(isinstance(r, PresenceGetResponse) and r.presence == "online",
              "d: alice get_presence(bob) == online", r)
        # bob (both devices) stops syncing; offline_after=2
        t0 = time.monotonic()
        got = await alice.sync_until(
            lambda: getattr(alice.presence.get(bob.user_id), "presence", None) == "offline",
            15, timeout_ms=2000,
        )
        dt = time.monotonic() - t0
        check(got and dt > 1.0,
              f"d: after bob stops syncing, alice's sync shows bob offline ({dt:.1f}s)",
              f"latest={alice.presence.get(bob.user_id)} log={[ (e.user_id, e.presence) for e in alice.presence_log if e.user_id == bob.user_id][-5:]}")
        r = await alice.client.get_presence(bob.user_id)
        check(isinstance(r, PresenceGetResponse) and r.presence == "offline",
              "d: alice get_presence(bob) == offline", r)
        status = f"busy writing tests {secrets.token_hex(2)}"
        r = await bob.client.set_presence("online", status_msg=status)
        check(isinstance(r, PresenceSetResponse), "d: bob set_presence(online, status_msg)", r)
        got = await alice.sync_until(
            lambda: any(e.user_id == bob.user_id and e.status_msg == status
                        and e.presence == "online" for e in alice.presence_log), 10)
        check(got, "d: alice's sync shows bob's status message with presence online",
              [(e.presence, e.status_msg) for e in alice.presence_log if e.user_id == bob.user_id][-3:])
        r = await alice.client.get_presence(bob.user_id)
        check(isinstance(r, PresenceGetResponse) and r.status_msg == status,
              "d: alice get_presence(bob) returns the status message", r)

    # ---------------------------------------------------------------- e. typing
    if dm:
        await bob.sync_once(timeout_ms=1)
        r = await alice.client.room_typing(dm, True, timeout=20000)
        check(isinstance(r, RoomTypingResponse), "e: alice room_typing(True)", r)

        def typing_now():
            evs = [e for e in bob.ephemeral[dm] if isinstance(e, TypingNoticeEvent)]
            return evs[-1].users if evs else None

        got = await bob.sync_until(lambda: alice.user_id in (typing_now() or []), 10)
        check(got and alice.user_id in bob.client.rooms[dm].typing_users,
              "e: bob's sync shows alice typing (TypingNoticeEvent / room.typing_users)",
              typing_now())
        r = await alice.client.room_typing(dm, False)
        check(isinstance(r, RoomTypingResponse), "e: alice room_typing(False)", r)
        got = await bob.sync_until(lambda: typing_now() == [], 10)
        check(got and bob.client.rooms[dm].typing_users == [],
              "e: bob's sync then shows an empty typing list", typing_now())

    # ---------------------------------------------------------------- f. receipts
    if dm:
        e_priv = await send_text(alice, dm, f"private-receipt target {secrets.token_hex(2)}")
        e_pub = await send_text(alice, dm, f"please read me {secrets.token_hex(2)}")
        await bob.sync_until(lambda: e_pub in bob.seen_ids[dm], 10)
        r = await bob.client.update_receipt_marker(dm, e_priv, ReceiptType.read_private)
        check(isinstance(r, UpdateReceiptMarkerResponse), "f: bob sends m.read.private receipt", r)
        r = await bob.client.room_read_markers(dm, fully_read_event=e_pub, read_event=e_pub)
        check(isinstance(r, RoomReadMarkersResponse), "f: bob room_read_markers(fully_read+read)", r)

        def receipts(p):
            return [rc for e in p.ephemeral[dm] if isinstance(e, ReceiptEvent) for rc in e.receipts]

        got = await alice.sync_until(
            lambda: any(rc.event_id == e_pub and rc.user_id == bob.user_id
                        and rc.receipt_type == "m.read" for rc in receipts(alice)), 10)
        rc = alice.client.rooms[dm].read_receipts.get(bob.user_id)
        check(got and rc is not None and rc.event_id == e_pub,
              "f: alice's sync shows ReceiptEvent with bob's m.read on her message",
              [(x.event_id, x.receipt_type, x.user_id) for x in receipts(alice)])
        check(not any(x.receipt_type == "m.read.private" or x.event_id == e_priv
                      for x in receipts(alice) if x.user_id == bob.user_id),
              "f: bob's private receipt is not visible to alice",
              [(x.event_id, x.receipt_type) for x in receipts(alice)])
        got = await bob2.sync_until(
            lambda: any(x.user_id == bob.user_id and x.event_id == e_priv
                        and x.receipt_type == "m.read.private" for x in receipts(bob2)), 10)
        check(got, "f: bob's other device sees his own m.read.private receipt",
              [(x.event_id, x.receipt_type) for x in receipts(bob2)])

    # ---------------------------------------------------------------- g. scroll-back
    r = await alice.client.room_create(name=f"history {RUN}", preset=RoomPreset.public_chat)
    hist = r.room_id if isinstance(r, RoomCreateResponse) else None
    check(hist, "g: alice creates a public room", r)
    if hist:
        tag = secrets.token_hex(3)
        want = [f"hist {tag} #{i:02d}" for i in range(60)]
        for b in want:
            await send_text(alice, hist, b)
        carol = peers[5]  # joins only now
        r = await join_room(carol, hist)
        check(isinstance(r, JoinResponse), f"g: {carol.name} joins after 60 messages", r)
        flt = {"room": {"timeline": {"limit": 10}}}
        await carol.sync_until(lambda: carol.timeline[hist], 10, sync_filter=flt)
        # the sync in which the room first appeared must be limited (10 of ~68 events)
        first = carol.limited[hist][0] if carol.limited[hist] else (None, None)
        prev_batch = first[0]
        check(prev_batch, "g: first sync after join has limited timeline with prev_batch",
              f"limited={carol.limited[hist]} n={len(carol.timeline[hist])}")
        events = list(carol.timeline[hist])  # chronological tail from sync
        token, pages, back = prev_batch, 0, []
        page_ok = True
        saw_create = False
        while token and pages < 20:
            r = await carol.client.room_messages(hist, start=token, direction=MessageDirection.back, limit=20)
            pages += 1
            if not isinstance(r, RoomMessagesResponse):
                page_ok = False
                break
            if len(r.chunk) > 20:
                page_ok = False
            back.extend(r.chunk)
            if any(isinstance(e, RoomCreateEvent) for e in r.chunk):
                saw_create = True
            if not r.chunk or not r.end or r.end == token:
                break
            token = r.end
        check(page_ok, f"g: room_messages(back, limit=20) pages OK ({pages} pages)", r)
        full = list(reversed(back)) + events
        ids = [e.event_id for e in full]
        seq = [e.body for e in full if isinstance(e, RoomMessageText) and e.body in set(want)]
        check(len(ids) == len(set(ids)), "g: no event returned twice across sync + pagination",
              [i for i in ids if ids.count(i) > 1][:5])
        check(seq == want, "g: all 60 messages seen exactly once and in order",
              f"n={len(seq)} first={seq[:2]} last={seq[-2:]}")
        check(saw_create and isinstance(full[0], RoomCreateEvent),
              "g: back-pagination reaches the m.room.create event",
              f"first={type(full[0]).__name__ if full else None}")

    bad = [
        (p.name, e)
        for p in PEERS
        for evs in list(p.timeline.values()) + [i.invite_state for i in p.invites.values()]
        for e in evs
        if isinstance(e, (nio.BadEvent, nio.UnknownBadEvent))
    ]
    check(not bad and not VALIDATION_LOG.records,
          "every server payload passed nio's schema validation (no BadEvent / validation errors)",
          f"bad={bad[:3]} log={VALIDATION_LOG.records[:3]}")


async def runner():
    try:
        await asyncio.wait_for(main(), OVERALL_TIMEOUT)
    except asyncio.TimeoutError:
        check(False, f"overall run finished within {OVERALL_TIMEOUT}s")
    except Exception as e:
        traceback.print_exc()
        check(False, f"script ran without exception ({type(e).__name__}: {e})")
    finally:
        for p in PEERS:
            await p.close()


if __name__ == "__main__":
    asyncio.run(runner())
    passed = sum(1 for ok, _ in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 and passed > 0 else 1)
