// matrix-js-sdk with Rust crypto against a running trioserver.
//
//   node scenario.mjs BASE_URL [DIR_WITH_NODE_MODULES]
//
// 1. Two users register and log in over real HTTP; each gets a matrix-js-sdk client with
//    Element's options (`timelineSupport`), `initRustCrypto()` and
//    `startClient({lazyLoadMembers: true})`; both reach PREPARED then SYNCING and hold the
//    server's default push rules.
// 2. A creates an encrypted room (m.megolm.v1.aes-sha2) and invites B, B joins, and a message
//    each way is received and decrypted.
// 3. A sets up recovery as Element does: cross-signing keys (UIA with the password), secret
//    storage and a new key backup holding her room keys. A second login of A's cross-signs
//    itself from secret storage and restores the room keys from the backup (and decrypts the
//    history); B sees that device signed; a new message from B reaches both of A's devices.
// 4. B makes, once each, the calls Element makes at start-up and in a room.
//
// Every HTTP request the SDK made that got a 4xx/5xx is listed under "http_errors" (the gap
// list). Prints one JSON object on stdout; exits non-zero if any step failed. SDK and crypto
// logs go to stderr. No sleeps: every wait is on an SDK event, with a timeout.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [baseUrl, sdkDirArg] = process.argv.slice(2);
if (!baseUrl) {
    console.error("usage: node scenario.mjs BASE_URL [DIR_WITH_NODE_MODULES]");
    process.exit(2);
}
// The SDK comes from DIR/node_modules (default: this script's directory), so one scenario runs
// against each pinned SDK release (tests/js and tests/js/latest).
const sdkRoot = join(sdkDirArg ?? dirname(fileURLToPath(import.meta.url)), "node_modules", "matrix-js-sdk");
const sdk = await import(pathToFileURL(join(sdkRoot, "lib", "index.js")).href);
const { logger } = await import(pathToFileURL(join(sdkRoot, "lib", "logger.js")).href);
// Generous: the test machine can be loaded (2 cores shared by many processes).
const STEP_TIMEOUT_MS = Number(process.env.JSSDK_STEP_TIMEOUT_MS ?? 45000);
// JSSDK_TRACE=1 logs every request and its status to stderr; JSSDK_TRACE=body adds the bodies.
const TRACE = process.env.JSSDK_TRACE ?? "";

// Everything logs to stderr so stdout stays one JSON document.
logger.setLevel(process.env.JSSDK_LOG_LEVEL ?? "warn");
for (const method of ["log", "info", "warn", "debug", "trace"]) {
    console[method] = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
}

const result = {
    ok: false,
    sdk_version: null,
    node_version: null,
    steps: [],
    http_errors: [],
    sync_errors: [],
    element_calls: null,
    error: null,
};
const stdoutWrite = process.stdout.write.bind(process.stdout);

function step(name, detail) {
    result.steps.push(detail === undefined ? name : { [name]: detail });
    process.stderr.write(`step: ${name}\n`);
}

// Resolves when `check()` returns a truthy value, re-checking whenever `emitter` fires one of
// `events`; rejects with `describe()` after STEP_TIMEOUT_MS. No polling sleeps.
function waitFor(what, emitter, events, check, describe = () => "") {
    return new Promise((resolve, reject) => {
        const listener = () => {
            let value;
            try {
                value = check();
            } catch (err) {
                finish();
                reject(err);
                return;
            }
            if (value) {
                finish();
                resolve(value);
            }
        };
        const timer = setTimeout(() => {
            finish();
            reject(new Error(`timed out waiting for ${what}${describe() ? ": " + describe() : ""}`));
        }, STEP_TIMEOUT_MS);
        const finish = () => {
            clearTimeout(timer);
            for (const event of events) emitter.off(event, listener);
        };
        for (const event of events) emitter.on(event, listener);
        listener();
    });
}

// A fetch that records every 4xx/5xx answer, with its body, before handing it to the SDK.
function recordingFetch(who) {
    return async (input, init = {}) => {
        const url = new URL(input instanceof Request ? input.url : String(input));
        const method = (init.method ?? "GET").toUpperCase();
        const sent = TRACE === "body" && typeof init.body === "string" ? ` ${init.body}` : "";
        if (TRACE) process.stderr.write(`http: ${who} ${method} ${url.pathname}${url.search}${sent}\n`);
        const response = await fetch(input, init);
        const got = TRACE === "body" ? ` ${await response.clone().text()}` : "";
        if (TRACE) process.stderr.write(`http: ${who} ${method} ${url.pathname} -> ${response.status}${got}\n`);
        if (response.status >= 400) {
            let body = await response.clone().text();
            try {
                body = JSON.parse(body);
            } catch {
                // not JSON: keep the text
            }
            result.http_errors.push({
                who,
                method,
                path: url.pathname,
                query: url.search,
                status: response.status,
                body,
            });
        }
        return response;
    };
}

async function callJson(method, path, body, accessToken) {
    const headers = { "Content-Type": "application/json" };
    if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
    const response = await fetch(new URL(path, baseUrl), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json();
    return { status: response.status, data };
}

// Registers over the client-server API (m.login.dummy), then logs in with the SDK's own
// login call, so the clients run on a device made by a password login.
async function register(localpart, password) {
    const register = { username: localpart, password, inhibit_login: true };
    let answer = await callJson("POST", "/_matrix/client/v3/register", register);
    if (answer.status === 401) {
        register.auth = { type: "m.login.dummy", session: answer.data.session };
        answer = await callJson("POST", "/_matrix/client/v3/register", register);
    }
    if (answer.status !== 200) {
        throw new Error(`register ${localpart}: ${answer.status} ${JSON.stringify(answer.data)}`);
    }
    return login(localpart, password);
}

// A password login: one new device.
async function login(localpart, password) {
    const loginClient = sdk.createClient({ baseUrl, fetchFn: recordingFetch(localpart) });
    const login = await loginClient.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: localpart },
        password,
        initial_device_display_name: `jssdk ${localpart}`,
    });
    return {
        localpart,
        password,
        userId: login.user_id,
        accessToken: login.access_token,
        deviceId: login.device_id,
    };
}

// Secret storage keys a user "knows" (what they would type in as their recovery key), shared
// by all of that user's clients through the SDK's crypto callbacks.
function secretStorageCallbacks(known) {
    return {
        getSecretStorageKey: async ({ keys }) => {
            for (const keyId of Object.keys(keys)) {
                if (known.has(keyId)) return [keyId, known.get(keyId)];
            }
            return null;
        },
        cacheSecretStorageKey: (keyId, _info, key) => known.set(keyId, key),
    };
}

async function startClient(who, session, secretKeys = new Map()) {
    const client = sdk.createClient({
        baseUrl,
        userId: session.userId,
        accessToken: session.accessToken,
        deviceId: session.deviceId,
        fetchFn: recordingFetch(who),
        cryptoCallbacks: secretStorageCallbacks(secretKeys),
        timelineSupport: true,
    });
    // Rust crypto (matrix-sdk-crypto-wasm) with an in-memory store: no IndexedDB under Node.
    await client.initRustCrypto({ useIndexedDB: false });
    let lastState = null;
    let lastError = null;
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        lastState = state;
        if (data?.nextSyncToken) {
            client.firstSyncToken ??= data.nextSyncToken;
            client.lastSyncToken = data.nextSyncToken;
        }
        if (data?.error) lastError = String(data.error?.message ?? data.error);
        // Any sync failure once running is a gap too (a 5xx, or a response the SDK rejects).
        if (state === "ERROR") result.sync_errors.push({ who, error: lastError });
    });
    const describe = () => `last state ${lastState}, last error ${lastError}`;
    const prepared = waitFor(
        `${who} PREPARED`,
        client,
        [sdk.ClientEvent.Sync],
        () => {
            if (lastState === "ERROR" && lastError) throw new Error(`${who} sync ERROR: ${lastError}`);
            return lastState === "PREPARED" || lastState === "SYNCING";
        },
        describe,
    );
    await client.startClient({ lazyLoadMembers: true, initialSyncLimit: 20, threadSupport: true });
    await prepared;
    step(`${who} prepared`);
    await waitFor(`${who} SYNCING`, client, [sdk.ClientEvent.Sync], () => lastState === "SYNCING", describe);
    step(`${who} syncing`);
    return client;
}

function checkPushRules(who, client) {
    const rules = client.pushRules;
    if (!rules?.global) throw new Error(`${who}: client.pushRules is ${JSON.stringify(rules)}`);
    const ids = new Set();
    for (const kind of ["override", "content", "room", "sender", "underride"]) {
        for (const rule of rules.global[kind] ?? []) ids.add(rule.rule_id);
    }
    const wanted = [".m.rule.master", ".m.rule.is_user_mention", ".m.rule.message", ".m.rule.encrypted"];
    const missing = wanted.filter((id) => !ids.has(id));
    if (missing.length) throw new Error(`${who}: default push rules missing ${missing.join(", ")}`);
    step(`${who} push rules`, ids.size);
}

// The first decrypted m.room.message with `body` that `receiver` sees in `roomId`.
function waitForDecrypted(who, receiver, roomId, body) {
    let lastSeen = "nothing";
    const find = () => {
        const room = receiver.getRoom(roomId);
        if (!room) return null;
        for (const event of room.getLiveTimeline().getEvents()) {
            if (!event.isEncrypted()) continue;
            if (event.isDecryptionFailure()) {
                lastSeen = `decryption failure ${event.decryptionFailureReason}: ${JSON.stringify(event.getContent())}`;
                continue;
            }
            if (event.getClearContent()?.body === body) return event;
        }
        return null;
    };
    return waitFor(
        `${who} to decrypt "${body}"`,
        receiver,
        [sdk.RoomEvent.Timeline, sdk.MatrixEventEvent.Decrypted],
        find,
        () => lastSeen,
    );
}

async function run() {
    result.sdk_version = JSON.parse(readFileSync(join(sdkRoot, "package.json"), "utf8")).version;
    result.node_version = process.version;
    const suffix = Math.random().toString(36).slice(2, 8);
    const aliceSession = await register(`jsalice${suffix}`, "alice-password");
    const bobSession = await register(`jsbob${suffix}`, "bob-password");
    step("registered");

    const aliceKeys = new Map();
    const alice = await startClient("alice", aliceSession, aliceKeys);
    const bob = await startClient("bob", bobSession);
    const clients = [alice, bob];
    try {
        checkPushRules("alice", alice);
        checkPushRules("bob", bob);

        const { room_id: roomId } = await alice.createRoom({
            name: "jssdk e2ee",
            invite: [bob.getUserId()],
            initial_state: [
                {
                    type: "m.room.encryption",
                    state_key: "",
                    content: { algorithm: "m.megolm.v1.aes-sha2" },
                },
            ],
        });
        step("room created");
        await waitFor(`bob's invite`, bob, [sdk.ClientEvent.Room, sdk.RoomEvent.MyMembership], () => {
            return bob.getRoom(roomId)?.getMyMembership() === "invite";
        });
        step("bob invited");
        await bob.joinRoom(roomId);
        await waitFor(`alice to see bob join`, alice, [sdk.RoomStateEvent.Members, sdk.RoomEvent.Timeline], () => {
            return alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join";
        });
        step("bob joined");
        const aliceRoom = alice.getRoom(roomId);
        if (!(await alice.getCrypto().isEncryptionEnabledInRoom(roomId))) {
            throw new Error("alice's crypto does not see the room as encrypted");
        }
        step("room encrypted", aliceRoom.currentState.getStateEvents("m.room.encryption", "")?.getContent());

        await alice.sendMessage(roomId, { msgtype: "m.text", body: "hello from alice" });
        const fromAlice = await waitForDecrypted("bob", bob, roomId, "hello from alice");
        step("bob decrypted", { sender: fromAlice.getSender(), type: fromAlice.getWireType() });

        await bob.sendMessage(roomId, { msgtype: "m.text", body: "hello from bob" });
        const fromBob = await waitForDecrypted("alice", alice, roomId, "hello from bob");
        step("alice decrypted", { sender: fromBob.getSender(), type: fromBob.getWireType() });

        await setUpRecovery("alice", alice, aliceSession);
        const alice2 = await startClient("alice2", await login(aliceSession.localpart, aliceSession.password), aliceKeys);
        clients.push(alice2);
        await recoverNewDevice("alice2", alice2, roomId);
        await waitForDecrypted("alice2", alice2, roomId, "hello from bob");
        step("alice2 decrypted history from backup");
        await waitForDeviceSignedByOwner("bob", bob, alice.getUserId(), alice2.getDeviceId());
        step("bob sees alice2 cross-signed");
        await bob.sendMessage(roomId, { msgtype: "m.text", body: "hello to both alices" });
        await waitForDecrypted("alice2", alice2, roomId, "hello to both alices");
        await waitForDecrypted("alice", alice, roomId, "hello to both alices");
        step("both alice devices decrypted");
        await elementCalls(bob, roomId);
        result.ok = true;
    } finally {
        for (const client of clients) client.stopClient();
    }
}

// Element's "set up recovery": cross-signing keys (behind UIA with the password), a secret
// storage key (the recovery key) and a new key backup version holding this device's room keys.
async function setUpRecovery(who, client, session) {
    const crypto = client.getCrypto();
    let remaining = null;
    let backupEnabled = false;
    client.on("crypto.keyBackupSessionsRemaining", (count) => {
        remaining = count;
    });
    client.on("crypto.keyBackupStatus", (enabled) => {
        backupEnabled = enabled;
    });
    await crypto.bootstrapCrossSigning({
        authUploadDeviceSigningKeys: async (makeRequest) => {
            try {
                await makeRequest(null);
            } catch (err) {
                const session_id = err?.data?.session;
                if (err?.httpStatus !== 401 || !session_id) throw err;
                await makeRequest({
                    type: "m.login.password",
                    identifier: { type: "m.id.user", user: session.localpart },
                    password: session.password,
                    session: session_id,
                });
            }
        },
    });
    if (!(await crypto.isCrossSigningReady())) throw new Error(`${who}: cross-signing not ready`);
    step(`${who} cross-signing ready`);
    await crypto.bootstrapSecretStorage({
        createSecretStorageKey: () => crypto.createRecoveryKeyFromPassphrase(),
        setupNewKeyBackup: true,
    });
    if (!(await crypto.isSecretStorageReady())) throw new Error(`${who}: secret storage not ready`);
    // Older SDKs enable the new backup a moment after bootstrapSecretStorage returns.
    await waitFor(`${who}'s key backup enabled`, client, ["crypto.keyBackupStatus"], () => backupEnabled || null);
    const version = await crypto.getActiveSessionBackupVersion();
    if (!version) throw new Error(`${who}: no active key backup after bootstrapSecretStorage`);
    step(`${who} secret storage and key backup`, { version });
    // The SDK uploads keys after a random delay of up to 10 s (to spread load), then says 0.
    await waitFor(`${who}'s room keys in the backup`, client, ["crypto.keyBackupSessionsRemaining"], () => remaining === 0, () => `remaining ${remaining}`);
    // Asked of the server itself: the SDK's getKeyBackupInfo() may answer from its cache.
    const info = await callJson("GET", `/_matrix/client/v3/room_keys/version/${version}`, undefined, session.accessToken);
    if (!(info.data.count >= 2)) throw new Error(`${who}: key backup holds ${JSON.stringify(info.data)}`);
    step(`${who} keys backed up`, info.data.count);
}

// A new login that the user "verifies with their recovery key", as Element does: the
// cross-signing keys come out of secret storage and sign this device, and the backup key
// comes out too and the room keys are restored from the server-side backup.
async function recoverNewDevice(who, client, roomId) {
    const crypto = client.getCrypto();
    // As Element does before offering "verify with recovery key": fetch the user's public
    // cross-signing keys (a /keys/query), without which the private ones cannot be imported.
    if (!(await crypto.userHasCrossSigningKeys(client.getUserId(), true))) {
        throw new Error(`${who}: the server has no cross-signing keys for ${client.getUserId()}`);
    }
    await crypto.bootstrapCrossSigning({});
    if (!(await crypto.isCrossSigningReady())) throw new Error(`${who}: cross-signing not ready`);
    // The signature upload comes back to this device as a device list change of its own user.
    await waitForDeviceSignedByOwner(who, client, client.getUserId(), client.getDeviceId());
    step(`${who} cross-signed itself`);
    await crypto.loadSessionBackupPrivateKeyFromSecretStorage();
    const check = await crypto.checkKeyBackupAndEnable();
    if (!check?.backupInfo) throw new Error(`${who}: no key backup found`);
    const restored = await crypto.restoreKeyBackup();
    if (!(restored.imported >= 2)) throw new Error(`${who}: restored ${JSON.stringify(restored)}`);
    step(`${who} restored keys`, restored.imported);
    if (!client.getRoom(roomId)) throw new Error(`${who}: does not know the room`);
}

async function waitForDeviceSignedByOwner(who, client, userId, deviceId) {
    const crypto = client.getCrypto();
    let last = null;
    // Device list changes reach the client as "device_lists.changed" in /sync, then a
    // /keys/query; the SDK emits "crypto.devicesUpdated" when it has the new list.
    const check = async () => {
        const devices = await crypto.getUserDeviceInfo([userId], true);
        if (!devices.get(userId)?.has(deviceId)) return false;
        last = await crypto.getDeviceVerificationStatus(userId, deviceId);
        return Boolean(last?.signedByOwner);
    };
    if (await check()) return;
    await new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            client.off("crypto.devicesUpdated", listener);
            reject(new Error(`timed out waiting for ${who} to see ${userId} ${deviceId} signed: ${JSON.stringify(last)}`));
        }, STEP_TIMEOUT_MS);
        const listener = () => {
            check().then((ok) => {
                if (ok) {
                    clearTimeout(timer);
                    client.off("crypto.devicesUpdated", listener);
                    resolve();
                }
            }, reject);
        };
        client.on("crypto.devicesUpdated", listener);
    });
}

const overall = setTimeout(() => {
    result.error = "scenario timed out";
    finish(1);
}, STEP_TIMEOUT_MS * 8);

function finish(code) {
    clearTimeout(overall);
    stdoutWrite(JSON.stringify(result, null, 2) + "\n");
    process.exit(code);
}

run().then(
    () => finish(result.ok ? 0 : 1),
    (err) => {
        result.error = String(err?.stack ?? err);
        finish(1);
    },
);

// Calls Element Web makes at start-up, when opening a room and on common actions, each made
// once through the SDK. Their 4xx/5xx answers land in http_errors; other failures (an SDK
// exception) are listed under element_calls.
async function elementCalls(client, roomId) {
    const room = client.getRoom(roomId);
    const last = room.getLiveTimeline().getEvents().at(-1);
    const lastId = last.getId();
    const path = (suffix) => `/rooms/${encodeURIComponent(roomId)}${suffix}`;
    const calls = {
        whoami: () => client.whoami(),
        login_flows: () => client.loginFlows(),
        auth_issuer: () => client.getAuthIssuer?.(),
        auth_metadata: () => client.getAuthMetadata?.(),
        capabilities: () => client.getCapabilities(),
        devices: () => client.getDevices(),
        dehydration: () => client.getCrypto().isDehydrationSupported(),
        key_changes: () => client.getKeyChanges(client.firstSyncToken, client.lastSyncToken),
        profile: () => client.getProfileInfo(client.getUserId()),
        set_displayname: () => client.setDisplayName("Bob B"),
        presence: () => client.setPresence({ presence: "online" }),
        get_presence: () => client.getPresence(client.getUserId()),
        identity_server: () => client.getAccountDataFromServer("m.identity_server"),
        turn_server: () => client.turnServer(),
        thirdparty_protocols: () => client.getThirdpartyProtocols(),
        pushers: () => client.getPushers(),
        notifications: () => client.http.authedRequest("GET", "/notifications", { limit: "20" }),
        user_directory: () => client.searchUserDirectory({ term: "js" }),
        public_rooms: () => client.publicRooms({ limit: 20 }),
        members: () => client.members(roomId),
        scrollback: () => client.scrollback(room, 30),
        context: () => client.getEventTimeline(room.getUnfilteredTimelineSet(), lastId),
        fetch_event: () => client.fetchRoomEvent(roomId, lastId),
        read_receipt: () => client.sendReadReceipt(last),
        read_markers: () => client.setRoomReadMarkers(roomId, lastId),
        typing: () => client.sendTyping(roomId, true, 5000),
        tag: () => client.setRoomTag(roomId, "m.favourite", { order: 0.5 }),
        reaction: () =>
            client.sendEvent(roomId, "m.reaction", {
                "m.relates_to": { rel_type: "m.annotation", event_id: lastId, key: "👍" },
            }),
        relations: () => client.relations(roomId, lastId, "m.annotation"),
        threads: () => client.http.authedRequest("GET", path("/threads"), undefined, undefined, { prefix: "/_matrix/client/v1" }),
        redaction: async () => {
            const { event_id } = await client.sendMessage(roomId, { msgtype: "m.text", body: "oops" });
            await client.redactEvent(roomId, event_id);
        },
        search: () => client.searchRoomEvents({ term: "oops" }),
        hierarchy: () => client.getRoomHierarchy(roomId),
        room_summary: () => client.getRoomSummary?.(roomId),
    };
    const outcome = {};
    for (const [name, call] of Object.entries(calls)) {
        try {
            await call();
            outcome[name] = "ok";
        } catch (err) {
            outcome[name] = String(err?.message ?? err).slice(0, 300);
        }
    }
    result.element_calls = outcome;
    step("element calls", Object.keys(calls).length);
}
