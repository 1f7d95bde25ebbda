// The interop scenarios of tests/interop/scenarios.txt with MQTT.js (npm package `mqtt`).
//
//   node scenarios.mjs --list
//   node scenarios.mjs <scenario> <protocol version: 4 | 5> <host> <port> [tls | ws PATH | wss PATH]
//
// With `ws PATH` every client connects over WebSocket (`ws://host:port/PATH`, MQTT.js's
// subprotocol `mqtt`) instead of plain TCP; `tls` is `mqtts://`, `wss PATH` is WebSocket over
// TLS, both checking the server's certificate against the CA in the file INTEROP_CA.
//
// Client ids come in INTEROP_IDS (JSON: pub, sub, spare on their cores; m0, m1 for the share
// group), chosen by the pytest wrapper (test_mqttjs.py) so that publisher and subscriber are
// owned by different cores, as in the Python scenarios. Exits 0 when every check held; a
// failed check throws, and the process exits 1 with the reason.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt from 'mqtt'

const TIMEOUT_MS = 10_000
const EXPIRY_SECS = 1 // the wrapper starts the broker with --max-session-expiry 1 for `expiry`

const [scenario, versionArg, host, port, transport = 'tcp', wsPath = ''] = process.argv.slice(2)
const SCHEMES = { tcp: 'mqtt', tls: 'mqtts', ws: 'ws', wss: 'wss' }
assert.ok(SCHEMES[transport], `transport ${transport}: tcp, tls, ws or wss`)
const url = `${SCHEMES[transport]}://${host}:${port}${wsPath}`
// tls and wss verify the server against the test CA (a PEM file named by INTEROP_CA).
const tlsOptions = process.env.INTEROP_CA ? { ca: readFileSync(process.env.INTEROP_CA), rejectUnauthorized: true } : {}
const version = Number(versionArg)
const ids = JSON.parse(process.env.INTEROP_IDS || '{}')
const tag = `mqttjs-v${version}-${scenario}`

function withTimeout (promise, what) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${TIMEOUT_MS} ms`)), TIMEOUT_MS)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Connects; resolves to the client, with `sessionPresent` from CONNACK and an inbox. */
async function open (clientId, { subs = [], clean = true, expiry, will } = {}) {
  const options = {
    ...tlsOptions,
    clientId,
    protocolVersion: version,
    clean,
    reconnectPeriod: 0, // a reconnecting client would fight the takeover scenario
    connectTimeout: TIMEOUT_MS
  }
  if (version === 5 && expiry !== undefined) options.properties = { sessionExpiryInterval: expiry }
  if (will) options.will = { topic: will.topic, payload: Buffer.from(will.payload), qos: 1, retain: false }
  const client = mqtt.connect(url, options)
  client.inbox = []
  client.waiters = []
  client.on('message', (topic, payload, packet) => {
    client.inbox.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain })
    for (const wake of client.waiters.splice(0)) wake()
  })
  client.on('error', (e) => { client.failure = e })
  const [connack] = await withTimeout(once(client, 'connect'), `${clientId}: CONNACK`)
  assert.equal(connack.returnCode ?? connack.reasonCode ?? 0, 0, `${clientId}: CONNACK code`)
  client.sessionPresent = connack.sessionPresent
  if (subs.length > 0) {
    const granted = await withTimeout(client.subscribeAsync(Object.fromEntries(subs.map(([topic, qos]) => [topic, { qos }]))), 'SUBACK')
    assert.deepEqual(granted.map((g) => g.qos), subs.map(([, qos]) => qos), `${clientId}: granted QoS`)
  }
  return client
}

/** Connects, subscribes, and disconnects normally at once; returns Session Present. */
async function visit (clientId, options) {
  const client = await open(clientId, options)
  await client.endAsync()
  return client.sessionPresent
}

/** Connects, publishes each payload and waits for its complete acknowledgement, disconnects. */
async function publish (clientId, topic, payloads, qos, retain = false) {
  const client = await open(clientId)
  for (const payload of payloads) {
    // Resolves on PUBACK (QoS 1) or PUBCOMP (QoS 2); rejects on an error reason code.
    await withTimeout(client.publishAsync(topic, payload, { qos, retain }), `publish to ${topic}`)
  }
  await client.endAsync()
}

/** Exactly the next `n` messages of `client`, in arrival order. */
async function expect (client, n) {
  const deadline = Date.now() + TIMEOUT_MS
  while (client.inbox.length < n) {
    assert.ok(Date.now() < deadline, `${client.options.clientId}: ${client.inbox.length} of ${n} messages arrived: ${JSON.stringify(client.inbox)}`)
    await Promise.race([new Promise((resolve) => client.waiters.push(resolve)), sleep(100)])
  }
  assert.equal(client.inbox.length, n, `more messages than expected: ${JSON.stringify(client.inbox)}`)
  return client.inbox.splice(0)
}

const msg = (topic, payload, qos, retain = false) => ({ topic, payload, qos, retain })

/** Every message once, and in order within each QoS (MQTT.js hands QoS 2 over at PUBREL). */
function assertInOrder (got, expected) {
  const key = (m) => JSON.stringify(m)
  assert.deepEqual(got.map(key).sort(), expected.map(key).sort())
  for (const qos of [0, 1, 2]) {
    assert.deepEqual(got.filter((m) => m.qos === qos), expected.filter((m) => m.qos === qos), `QoS ${qos} order`)
  }
}

const scenarios = {
  async connect () {
    assert.equal(await visit(ids.sub, { clean: true }), false)
    assert.equal(await visit(ids.sub, { clean: false, expiry: 300 }), false)
    assert.equal(await visit(ids.sub, { clean: false, expiry: 300 }), true)
    assert.equal(await visit(ids.sub, { clean: true }), false)
  },

  async qos0 () { await qosRoundTrip(0) },
  async qos1 () { await qosRoundTrip(1) },
  async qos2 () { await qosRoundTrip(2) },

  async retained () {
    const topic = `interop/${tag}/retained`
    const marker = `interop/${tag}/marker`
    await publish(ids.pub, topic, ['kept'], 1, true)
    const s = await open(ids.sub, { subs: [[topic, 1]] })
    assert.deepEqual(await expect(s, 1), [msg(topic, 'kept', 1, true)])
    await publish(ids.pub, topic, [''], 1, true)
    assert.deepEqual(await expect(s, 1), [msg(topic, '', 1, false)])
    await s.endAsync()
    const late = await open(ids.spare, { subs: [[topic, 1], [marker, 1]] })
    await publish(ids.pub, marker, ['after'], 1)
    assert.deepEqual(await expect(late, 1), [msg(marker, 'after', 1)], 'a cleared retained message was sent')
    await late.endAsync()
  },

  async will () {
    const topic = `interop/${tag}/will`
    const watcher = await open(ids.sub, { subs: [[topic, 1]] })
    const dying = await open(ids.pub, { will: { topic, payload: 'gone' } })
    dying.stream.destroy() // the connection ends without DISCONNECT
    assert.deepEqual(await expect(watcher, 1), [msg(topic, 'gone', 1)])
    await visit(ids.spare, { will: { topic, payload: 'must not appear' } })
    await publish(ids.pub, topic, ['marker'], 1)
    assert.deepEqual(await expect(watcher, 1), [msg(topic, 'marker', 1)], 'the will followed a normal DISCONNECT')
    await watcher.endAsync()
  },

  async resume () {
    const topic = `interop/${tag}/queued`
    await visit(ids.sub, { subs: [[topic, 2]], clean: false, expiry: 300 })
    const sent = [0, 1, 2, 3, 4, 5].map((i) => msg(topic, `q${i}`, 1 + (i % 2)))
    for (const m of sent) await publish(ids.pub, topic, [m.payload], m.qos)
    const back = await open(ids.sub, { clean: false, expiry: 300 })
    assert.equal(back.sessionPresent, true, 'Session Present')
    assertInOrder(await expect(back, sent.length), sent)
    await back.endAsync()
  },

  async expiry () {
    const topic = `interop/${tag}/expiring`
    const marker = `interop/${tag}/marker`
    await visit(ids.sub, { subs: [[topic, 1]], clean: false, expiry: EXPIRY_SECS })
    await publish(ids.pub, topic, ['queued'], 1)
    await sleep((EXPIRY_SECS + 1.5) * 1000) // the expiry must really pass
    const back = await open(ids.sub, { subs: [[marker, 1]], clean: false, expiry: EXPIRY_SECS })
    assert.equal(back.sessionPresent, false, 'Session Present after expiry')
    await publish(ids.pub, marker, ['marker'], 1)
    assert.deepEqual(await expect(back, 1), [msg(marker, 'marker', 1)], 'a message of the expired session came')
    await back.endAsync()
  },

  async takeover () {
    const topic = `interop/${tag}/taken`
    const first = await open(ids.sub, { subs: [[topic, 1]], clean: false, expiry: 300 })
    const reason = new Promise((resolve) => {
      first.on('disconnect', (packet) => resolve(packet.reasonCode))
      first.on('close', () => resolve(null))
    })
    const second = await open(ids.sub, { clean: false, expiry: 300 })
    assert.equal(second.sessionPresent, true, 'Session Present on takeover')
    assert.equal(await withTimeout(reason, 'the first connection closing'), version === 5 ? 0x8e : null)
    await publish(ids.pub, topic, ['to the new connection'], 1)
    assert.deepEqual(await expect(second, 1), [msg(topic, 'to the new connection', 1)])
    await second.endAsync()
  },

  async shared () {
    const topic = `interop/${tag}/work`
    const members = [await open(ids.m0, { subs: [[`$share/g/${topic}`, 1]] }),
      await open(ids.m1, { subs: [[`$share/g/${topic}`, 1]] })]
    const payloads = Array.from({ length: 20 }, (_, i) => `job${i}`)
    await publish(ids.pub, topic, payloads, 1)
    const deadline = Date.now() + TIMEOUT_MS
    const total = () => members.reduce((n, m) => n + m.inbox.length, 0)
    while (total() < payloads.length && Date.now() < deadline) await sleep(20)
    await sleep(200) // room for a duplicate to show up
    const got = members.flatMap((m) => m.inbox.splice(0))
    assert.deepEqual(got.map((m) => m.payload).sort(), [...payloads].sort(), 'each job exactly once')
    assert.ok(got.every((m) => m.topic === topic && m.qos === 1), JSON.stringify(got))
    for (const m of members) await m.endAsync()
  }
}

async function qosRoundTrip (qos) {
  const topic = `interop/${tag}/qos${qos}`
  const s = await open(ids.sub, { subs: [[topic, qos]] })
  const payloads = ['m0', 'm1', 'm2']
  await publish(ids.pub, topic, payloads, qos)
  assert.deepEqual(await expect(s, 3), payloads.map((p) => msg(topic, p, qos)))
  await s.endAsync()
}

if (scenario === '--list') {
  console.log(Object.keys(scenarios).join('\n'))
} else {
  assert.ok(scenarios[scenario], `no scenario ${scenario}`)
  assert.ok(version === 4 || version === 5, 'protocol version 4 or 5')
  try {
    await scenarios[scenario]()
    console.log(`ok: ${tag}`)
    process.exit(0)
  } catch (e) {
    console.error(`FAILED: ${tag}: ${e.stack || e}`)
    process.exit(1)
  }
}
