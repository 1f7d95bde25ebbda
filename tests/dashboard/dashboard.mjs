// Drives berth's dashboard in headless Chromium (Debian's /usr/bin/chromium, through
// playwright-core; never a browser that Playwright downloads). Started by test_dashboard.py,
// which makes the sessions with real MQTT clients and checks the broker afterwards.
//
//   node dashboard.mjs '{"url": "http://127.0.0.1:PORT", "mode": "full" | "auth", ...}'
//
// mode "full": the overview shows the figures and a rate; the offline session `target`
// appears in the sessions table with queue length `queued`; its detail page shows it; a
// dismissed confirmation keeps it; the Clear button (confirmation accepted) removes it; the
// bulk clear with the client-id filter `bulk` removes the offline sessions it matches and
// keeps the connected `online` one; pages of 10 go forward and back (`fleet` sessions more).
// mode "auth": with `credentials` (HTTP Basic) the page loads and lists `online`.
// Where the settings route exists, a number setting is changed and read back.
// Screenshots go to `shots` (a directory) when given. Prints one JSON line of what it saw.
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const TIMEOUT = 10_000;
const seen = { dialogs: [], errors: [] };

function check(condition, what) {
  if (!condition) throw new Error(`dashboard check failed: ${what}`);
}

const rowOf = (page, id) => page.locator(`#session-table tbody tr[data-clientid="${id}"]`);

async function shot(page, name) {
  if (spec.shots) await page.screenshot({ path: `${spec.shots}/${name}`, fullPage: true });
}

// Answers the next confirmation dialog (accept or dismiss) and records its text.
function nextDialog(page, accept) {
  return new Promise((resolve) => {
    page.once('dialog', async (dialog) => {
      seen.dialogs.push({ type: dialog.type(), message: dialog.message(), accepted: accept });
      if (accept) await dialog.accept();
      else await dialog.dismiss();
      resolve();
    });
  });
}

async function overview(page) {
  await page.goto(`${spec.url}/`);
  const offline = page.locator('#figures div', { hasText: 'Sessions offline' }).locator('dd');
  await offline.waitFor({ timeout: TIMEOUT });
  seen.offline = Number((await offline.textContent()).replace(/,/g, ''));
  check(seen.offline >= 1, `offline sessions shown: ${seen.offline}`);
  // The rates need two readings of /stats.
  await page.locator('#rate-in', { hasText: '/s' }).waitFor({ timeout: TIMEOUT });
  seen.rateIn = await page.locator('#rate-in').textContent();
  await shot(page, 'dashboard-overview.png');
}

async function sessions(page) {
  await page.getByRole('link', { name: 'Sessions' }).click();
  const row = rowOf(page, spec.target);
  await row.waitFor({ timeout: TIMEOUT });
  seen.targetState = await row.locator('td').nth(1).textContent();
  seen.targetQueue = await row.locator('[data-field="mqueue_len"]').textContent();
  check(seen.targetState === 'disconnected', `state of ${spec.target}: ${seen.targetState}`);
  check(seen.targetQueue.startsWith(`${spec.queued} /`), `queue of ${spec.target}: ${seen.targetQueue}`);
  await rowOf(page, spec.online).waitFor({ timeout: TIMEOUT });
  await shot(page, 'dashboard-sessions.png');

  // The state filter: only offline sessions.
  await page.getByLabel('State').selectOption('disconnected');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await rowOf(page, spec.online).waitFor({ state: 'detached', timeout: TIMEOUT });
  await row.waitFor({ timeout: TIMEOUT });
  await page.getByLabel('State').selectOption('');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await rowOf(page, spec.online).waitFor({ timeout: TIMEOUT });
}

const listedIds = (page) =>
  page.locator('#session-table tbody tr[data-clientid]').evaluateAll((rows) => rows.map((r) => r.dataset.clientid));

// Pages of 10 over every session: Next and Previous (the page's stack of cursors).
async function paging(page) {
  const info = page.locator('#page-info');
  await page.getByLabel('Per page').selectOption('10');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await info.filter({ hasText: 'Sessions 1–10, page 1' }).waitFor({ timeout: TIMEOUT });
  const first = await listedIds(page);
  await page.getByRole('button', { name: 'Next page' }).click();
  await info.filter({ hasText: 'page 2' }).waitFor({ timeout: TIMEOUT });
  const second = await listedIds(page);
  seen.nextDisabled = await page.getByRole('button', { name: 'Next page' }).isDisabled();
  await page.getByRole('button', { name: 'Previous page' }).click();
  await info.filter({ hasText: 'page 1' }).waitFor({ timeout: TIMEOUT });
  const again = await listedIds(page);
  seen.pages = [first, second];
  check(JSON.stringify(again) === JSON.stringify(first), `previous page: ${again} vs ${first}`);
  check(await page.getByRole('button', { name: 'Previous page' }).isDisabled(), 'Previous on page 1');
  await page.getByLabel('Per page').selectOption('50');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await info.filter({ hasText: 'page 1' }).waitFor({ timeout: TIMEOUT });
}

async function detail(page) {
  await rowOf(page, spec.target).getByRole('link', { name: spec.target }).click();
  const queue = page.locator('#detail-fields div', { hasText: 'Queue length' }).locator('dd');
  await queue.waitFor({ timeout: TIMEOUT });
  seen.detailQueue = await queue.textContent();
  check(seen.detailQueue === String(spec.queued), `detail queue length: ${seen.detailQueue}`);
  // Subscriptions: a table where the route exists, "not available" where it does not.
  const subscriptions = page.locator('#detail-subscriptions > *').first();
  await subscriptions.waitFor({ timeout: TIMEOUT });
  seen.subscriptions = await subscriptions.textContent();
  check(!/error|HTTP 5/i.test(seen.subscriptions), `subscriptions section: ${seen.subscriptions}`);
  await shot(page, 'dashboard-session.png');
  await page.getByRole('link', { name: 'Back to the sessions' }).click();
}

async function clear(page) {
  const button = page.getByRole('button', { name: `Clear session ${spec.target}` });
  // Dismissed: nothing happens.
  let answered = nextDialog(page, false);
  await button.click();
  await answered;
  await page.getByRole('button', { name: 'Refresh', exact: true }).click();
  await rowOf(page, spec.target).waitFor({ timeout: TIMEOUT });
  // Accepted: the session is gone from the table.
  answered = nextDialog(page, true);
  await button.click();
  await answered;
  await rowOf(page, spec.target).waitFor({ state: 'detached', timeout: TIMEOUT });
  seen.status = await page.locator('#status').textContent();
  check(seen.status.includes(`Cleared the session of ${spec.target}`), `status: ${seen.status}`);
}

async function bulkClear(page) {
  await page.getByLabel('Client id contains').fill(spec.bulk);
  await page.getByRole('button', { name: 'Apply filters' }).click();
  // The rows of the unfiltered table are there until the filtered page replaces them: wait
  // for a table whose every row matches the filter, not merely for a first row.
  await page.waitForFunction((like) => {
    const rows = [...document.querySelectorAll('#session-table tbody tr[data-clientid]')];
    return rows.length > 0 && rows.every((row) => row.dataset.clientid.includes(like));
  }, spec.bulk, { timeout: TIMEOUT });
  seen.bulkListed = await page.locator('#session-table tbody tr[data-clientid]').count();
  const answered = nextDialog(page, true);
  await page.getByRole('button', { name: /Clear the disconnected sessions/ }).click();
  await answered;
  await page.locator('#session-table tbody td.empty').waitFor({ timeout: TIMEOUT });
  seen.bulkStatus = await page.locator('#status').textContent();
  await page.getByLabel('Client id contains').fill('');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await rowOf(page, spec.online).waitFor({ timeout: TIMEOUT });
  seen.remaining = await listedIds(page);
}

async function settings(page) {
  await page.getByRole('link', { name: 'Settings' }).click();
  const answer = page.locator('#settings-form > *').first();
  await answer.waitFor({ timeout: TIMEOUT });
  seen.settings = await answer.textContent();
  // Where this berth has settings: change a number (the queue bound if there is one), save,
  // and read it back.
  const queueBound = page.locator('#settings-form input[name="max_queued_messages"]');
  const input = (await queueBound.count()) > 0 ? queueBound : page.locator('#settings-form input[type="number"]').first();
  if ((await input.count()) > 0) {
    const name = await input.getAttribute('name');
    const value = Number(await input.inputValue()) + 1;
    await input.fill(String(value));
    await page.getByRole('button', { name: 'Save settings' }).click();
    await page.locator('#status', { hasText: `Saved: ${name}` }).waitFor({ timeout: TIMEOUT });
    await page.locator(`#settings-form input[name="${name}"][value="${value}"]`).waitFor({ timeout: TIMEOUT });
    seen.settingSaved = { name, value };
  }
  await shot(page, 'dashboard-settings.png');
}

async function authOnly(page) {
  await page.goto(`${spec.url}/dashboard`);
  await page.getByRole('link', { name: 'Sessions' }).click();
  await rowOf(page, spec.online).waitFor({ timeout: TIMEOUT });
  seen.listed = await page.locator('#session-table tbody tr[data-clientid]').count();
}

const browser = await chromium.launch({
  executablePath: process.env.BERTH_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let failed = null;
try {
  const context = await browser.newContext({
    viewport: { width: 1600, height: 900 },
    httpCredentials: spec.credentials || undefined,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (error) => seen.errors.push(String(error)));
  page.on('console', (message) => {
    // A 404 from a route this berth lacks is logged by Chromium; the page shows it itself.
    if (message.type() === 'error' && !/Failed to load resource/.test(message.text())) {
      seen.errors.push(message.text());
    }
  });
  if (spec.mode === 'auth') {
    await authOnly(page);
  } else {
    await overview(page);
    await sessions(page);
    await paging(page);
    await detail(page);
    await clear(page);
    await bulkClear(page);
    await settings(page);
  }
  check(seen.errors.length === 0, `errors in the page: ${seen.errors.join('; ')}`);
} catch (error) {
  failed = error;
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
if (failed) {
  console.error(failed.stack || String(failed));
  process.exit(1);
}
