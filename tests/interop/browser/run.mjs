// MQTT.js in a real browser: headless Chromium (the system's, `CHROMIUM` or /usr/bin/chromium;
// playwright-core never downloads one) loads page.html from a file URL and, in the page, for
// each WebSocket URL given:
//   1. two clients (ids on different cores) subscribe and publish at QoS 1 across each other;
//   2. a persistent session (3.1.1, clean false, a fixed id) subscribes and disconnects;
//      this script prints `away KIND` and waits for the line `published KIND` on stdin (the
//      pytest wrapper, test_browser.py, publishes two QoS 1 messages from Python meanwhile);
//      the page reconnects: Session Present 1 and both messages, in order.
//
//   node run.mjs KIND=URL... (KIND is ws or wss)
//
// Client ids come in BROWSER_IDS (JSON: KIND -> {pub, sub, resume}). wss needs the test CA's
// certificate trusted: the browser context is opened with playwright's `ignoreHTTPSErrors`,
// which makes Chromium accept the test server's certificate for the page's WebSockets too.
// Prints `ok KIND` per URL and exits 0 when every check held; else exits 1 with the reason.
import assert from 'node:assert/strict'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { chromium } from 'playwright-core'

const TIMEOUT_MS = 10_000
const PAGE = pathToFileURL(fileURLToPath(new URL('page.html', import.meta.url))).href
const ids = JSON.parse(process.env.BROWSER_IDS || '{}')
const targets = process.argv.slice(2).map((arg) => arg.split(/=(.*)/s).slice(0, 2))

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()

async function until (what, check) {
  const deadline = Date.now() + TIMEOUT_MS
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`${what}: not within ${TIMEOUT_MS} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

async function pubsub (page, kind, url) {
  const { pub, sub } = ids[kind]
  const topic = `browser/${kind}/pubsub`
  await page.evaluate(([u, id]) => connectClient('sub', u, { clientId: id, protocolVersion: 5 }), [url, sub])
  assert.deepEqual(await page.evaluate(([t]) => subscribe('sub', t, 1), [topic]), [1], 'granted QoS')
  await page.evaluate(([u, id]) => connectClient('pub', u, { clientId: id, protocolVersion: 4 }), [url, pub])
  for (const n of [1, 2]) await page.evaluate(([t, p]) => publish('pub', t, p, 1), [topic, `m${n}`])
  const got = await until(`${kind}: two messages`, () =>
    page.evaluate(() => inbox('sub')).then((m) => m.length >= 2 && m))
  assert.deepEqual(got, [1, 2].map((n) => ({ topic, payload: `m${n}`, qos: 1 })))
  await page.evaluate(() => Promise.all([end('pub'), end('sub')]))
}

async function resume (page, kind, url) {
  const options = { clientId: ids[kind].resume, protocolVersion: 4, clean: false }
  const topic = `browser/${kind}/resume`
  // A session left by an earlier run would make the first Session Present 1.
  assert.equal(await page.evaluate(([u, o]) => connectClient('r', u, o), [url, options]), false)
  assert.deepEqual(await page.evaluate(([t]) => subscribe('r', t, 1), [topic]), [1])
  await page.evaluate(() => end('r'))
  console.log(`away ${kind}`)
  const { value } = await stdinLines.next()
  assert.equal(value, `published ${kind}`, 'the line from the wrapper')
  assert.equal(await page.evaluate(([u, o]) => connectClient('r', u, o), [url, options]), true,
    `${kind}: Session Present 1 on reconnect`)
  const got = await until(`${kind}: the two queued messages`, () =>
    page.evaluate(() => inbox('r')).then((m) => m.length >= 2 && m))
  assert.deepEqual(got, [1, 2].map((n) => ({ topic, payload: `offline ${n}`, qos: 1 })))
  await page.evaluate(() => end('r'))
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu'],
  timeout: 60_000
})
let failed = false
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true })
  const page = await context.newPage()
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`))
  await page.goto(PAGE)
  assert.equal(await page.evaluate(() => typeof mqtt.connect), 'function', 'MQTT.js bundle loaded')
  for (const [kind, url] of targets) {
    await pubsub(page, kind, url)
    await resume(page, kind, url)
    console.log(`ok ${kind}`)
  }
} catch (e) {
  console.error(e.stack || String(e))
  failed = true
} finally {
  await browser.close()
}
process.exit(failed ? 1 : 0)
