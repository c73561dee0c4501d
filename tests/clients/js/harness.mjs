// What the matrix-js-sdk tests (e2e.mjs, e2ee.mjs) share: TAP-like output, SDK log capture, a
// fetch that records every answer, waiting helpers, registration and login as an app does them,
// and the final report with the process exit code.
import fs from "node:fs";
import { createClient } from "matrix-js-sdk";

export const BASE = process.env.AXON_URL || "http://127.0.0.1:18228";
export const PASSWORD = "correct horse battery staple";
export const RUN = Date.now().toString(36).slice(-5); // unique localparts per run

// ---------------------------------------------------------------- output / bookkeeping
export const out = (s) => process.stdout.write(s + "\n");
let passed = 0, failed = 0;
export function check(name, cond, detail = "") {
    if (cond) { passed++; out(`ok - ${name}`); }
    else { failed++; out(`not ok - ${name}${detail ? "  # " + detail : ""}`); }
    return !!cond;
}
export function fail(name, err) { check(name, false, err?.message ?? String(err)); }

// Capture SDK logging: debug/info/log go to a file, warn/error are collected and summarised.
const sdkLog = fs.createWriteStream(process.env.SDK_LOG || "/dev/null");
const sdkWarnings = [];
const fmt = (args) => args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === "object" ? safeJson(a) : String(a))).join(" ");
export function safeJson(o) { try { return JSON.stringify(o).slice(0, 300); } catch { return String(o); } }
for (const m of ["debug", "info", "log", "trace"]) console[m] = (...a) => sdkLog.write(`[${m}] ${fmt(a)}\n`);
for (const m of ["warn", "error"]) console[m] = (...a) => { const s = fmt(a); sdkLog.write(`[${m}] ${s}\n`); sdkWarnings.push(`[${m}] ${s}`); };

// Record every HTTP request the SDK makes (per client) so non-2xx answers can be reported.
export const httpLog = []; // {who, method, path, status, body?}
export function makeFetch(who) {
    return async (url, init = {}) => {
        const u = new URL(String(url));
        const method = (init.method || "GET").toUpperCase();
        const res = await fetch(url, init);
        const entry = { who, method, path: u.pathname, status: res.status };
        httpLog.push(entry);
        if (res.status >= 400) {
            entry.body = await res.clone().text().catch(() => "");
        }
        return res;
    };
}

// ---------------------------------------------------------------- helpers
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export async function until(cond, ms, label) {
    const end = Date.now() + ms;
    for (;;) {
        let v; try { v = await cond(); } catch { v = false; }
        if (v) return v;
        if (Date.now() > end) throw new Error(`timeout after ${ms} ms waiting for ${label}`);
        await sleep(50);
    }
}
/** Resolve with the event args the first time `pred(...args)` is true. Register BEFORE acting. */
export function waitFor(emitter, event, pred, ms, label) {
    let cleanup;
    const p = new Promise((resolve, reject) => {
        const h = (...args) => { let ok = false; try { ok = pred(...args); } catch { /* ignore */ } if (ok) { cleanup(); resolve(args); } };
        const t = setTimeout(() => { cleanup(); reject(new Error(`timeout after ${ms} ms waiting for ${label}`)); }, ms);
        cleanup = () => { clearTimeout(t); emitter.off(event, h); };
        emitter.on(event, h);
    });
    p.catch(() => {}); // avoid unhandled rejection if the caller never awaits
    return p;
}

/** Register with the UIA dance an app does: first request -> 401 with session + flows, then m.login.dummy. */
export async function register(localpart, deviceName) {
    const c = createClient({ baseUrl: BASE, fetchFn: makeFetch(`register:${localpart}`) });
    const req = { username: localpart, password: PASSWORD, initial_device_display_name: deviceName };
    let session;
    try {
        await c.registerRequest(req);
        throw new Error("expected 401 UIA challenge from /register");
    } catch (e) {
        if (e.httpStatus !== 401) throw e;
        session = e.data?.session;
        const flows = (e.data?.flows || []).map((f) => f.stages.join(","));
        if (!flows.includes("m.login.dummy")) throw new Error(`no m.login.dummy flow: ${JSON.stringify(e.data)}`);
    }
    return c.registerRequest({ ...req, auth: { type: "m.login.dummy", session } });
}
export async function login(localpart, deviceName) {
    const c = createClient({ baseUrl: BASE, fetchFn: makeFetch(`login:${localpart}`) });
    return c.login("m.login.password", {
        identifier: { type: "m.id.user", user: localpart }, password: PASSWORD, initial_device_display_name: deviceName,
    });
}

/** Stops the clients, prints the non-2xx answers that `expected` does not excuse, the SDK's
 * warnings and the tally, and exits non-zero on any failure or after `timeoutMs`. */
export function run(main, { timeoutMs, clients, expected, expectedNote }) {
    const hard = setTimeout(() => { fail("overall timeout", new Error(`${timeoutMs} ms exceeded`)); finish(); }, timeoutMs);
    let finished = false;
    function finish() {
        if (finished) return; finished = true;
        clearTimeout(hard);
        for (const c of clients) { try { c.stopClient(); } catch { /* ignore */ } }
        report(expected, expectedNote);
        sdkLog.end(() => process.exit(failed === 0 && passed > 0 ? 0 : 1));
    }
    main().catch((e) => fail("unexpected error", e)).finally(finish);
}

function report(expected, expectedNote) {
    const bad = httpLog.filter((h) => h.status >= 400 && !expected(h));
    const byEp = new Map();
    for (const h of bad) {
        const ep = `${h.method} ${h.path.replace(/@[^/]+|![^/]+|\$[^/]+/g, "{id}")} -> ${h.status}`;
        const cur = byEp.get(ep) || { n: 0, body: h.body };
        cur.n++; byEp.set(ep, cur);
    }
    out(`# HTTP requests answered >= 400 (excluding ${expectedNote}):`);
    for (const [ep, { n, body }] of byEp) out(`#   ${n}x ${ep}  ${body?.slice(0, 160)}`);
    const uniq = new Map();
    for (const w of sdkWarnings) { const k = w.replace(/\d{4,}/g, "N").slice(0, 160); uniq.set(k, (uniq.get(k) || 0) + 1); }
    out(`# SDK warnings/errors (${sdkWarnings.length} total, ${uniq.size} distinct):`);
    for (const [k, n] of uniq) out(`#   ${n}x ${k}`);
    out(`${passed} passed, ${failed} failed`);
}
