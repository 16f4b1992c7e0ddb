import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import type { Socket } from 'node:net'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { chromium } from 'playwright-core'
import type { Browser, Page } from 'playwright-core'
import { mintViewerToken } from '../../src/core/live/viewer-token.ts'
import { loadSampleCall, startHarness } from '../helpers/harness.ts'
import type { Harness } from '../helpers/harness.ts'

/**
 * The live view page in real headless Chromium (Debian's package; never a downloaded browser) while
 * the sample call plays through the real service.
 */

const sample = loadSampleCall()
const script = sample.turns.map((turn) => ({ text: turn.text, speaker: turn.track === 'outbound' ? 'A' : 'B' }))
const roles = sample.turns.map((turn) => (turn.track === 'inbound' ? 'customer' : 'agent'))
const ARTIFACTS = new URL('../../test-results/', import.meta.url).pathname
/** Real time would take 35 s a call; a third of it still leaves every partial its moment on screen. */
const SPEED = 3

let browser: Browser | null = null

async function launch (t: TestContext): Promise<Page> {
  browser ??= await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] })
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } })
  t.after(() => context.close())
  return context.newPage()
}

test.after(async () => { await browser?.close() })

async function setup (t: TestContext): Promise<Harness> {
  const harness = await startHarness({ fake: { script } })
  t.after(() => harness.close())
  return harness
}

async function placeCall (harness: Harness, t: TestContext) {
  const call = await harness.simulator.placeCall({ path: '/twilio/voice?clinic=north' })
  const stream = harness.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed: SPEED })
  t.after(() => stream.abort())
  await stream.opened
  return { call, stream }
}

interface Snapshot { partial: { order: string | undefined, text: string } | null, finals: string[] }

// Browser-side functions: this project's TypeScript has no DOM library, so the little of the DOM they
// use is declared here. Playwright runs them through the DevTools protocol, which the page's CSP
// (no eval) allows, unlike predicates given as strings.
interface PageElement {
  textContent: string | null
  hidden: boolean
  dataset: Record<string, string | undefined>
  classList: { contains (name: string): boolean }
  querySelector (selector: string): PageElement | null
}
declare const document: { getElementById (id: string): PageElement | null, querySelectorAll (selector: string): Iterable<PageElement>, body: unknown }
declare const window: { snapshots: Snapshot[] }
declare class MutationObserver { constructor (callback: () => void); observe (target: unknown, options: Record<string, boolean>): void }

/** Records the transcript's state at every DOM change, to judge order and doubling afterwards. */
function recorder (): void {
  window.snapshots = []
  const take = (): void => {
    const partial = document.getElementById('partial') as PageElement
    window.snapshots.push({
      partial: partial.hidden ? null : { order: partial.dataset.turnOrder, text: partial.querySelector('.text')?.textContent ?? '' },
      finals: [...document.querySelectorAll('#turns li .text')].map((element) => element.textContent ?? '')
    })
  }
  take()
  new MutationObserver(take).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true })
}

function finalsInPage (): Array<{ text: string, role: string, id: string }> {
  return [...document.querySelectorAll('#turns li')].map((item) => ({ text: item.querySelector('.text')?.textContent ?? '', role: item.dataset.role ?? '', id: item.dataset.id ?? '' }))
}
const statusIs = (text: string): boolean => document.getElementById('status')?.textContent === text
const statusHas = (text: string): boolean => document.getElementById('status')?.textContent?.includes(text) === true
const statusIsError = (): boolean => document.getElementById('status')?.classList.contains('error') === true
const finalsAtLeast = (count: number): boolean => [...document.querySelectorAll('#turns li')].length >= count

async function finalsOnPage (page: Page): Promise<Array<{ text: string, role: string, id: string }>> {
  return page.evaluate(finalsInPage)
}

test('live view shows the 8 turns in order with their roles, each partial before its final and replaced by it', async (t) => {
  const harness = await setup(t)
  const page = await launch(t)
  const { call } = await placeCall(harness, t)
  const token = mintViewerToken(harness.config.liveViewKey, call.callSid, Date.now(), 600)
  const requests: string[] = []
  page.on('request', (request) => requests.push(request.url()))
  await page.goto(`${harness.serviceUrl}/live#token=${token}`)
  assert.equal(new URL(page.url()).hash, '', 'the token leaves the address bar at once')
  await page.waitForFunction(statusHas, 'Live: following')
  await page.evaluate(recorder)
  assert.equal(await page.isHidden('#token-form'), true, 'the token form is out of the way while following')
  const startFinals = (await finalsOnPage(page)).length
  await page.waitForFunction(finalsAtLeast, 4, { timeout: 30000 })
  mkdirSync(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: `${ARTIFACTS}live-view-mid-call.png`, fullPage: true })
  await page.waitForFunction(statusIs, 'The call has ended.', { timeout: 60000 })

  const finals = await finalsOnPage(page)
  assert.deepEqual(finals.map((turn) => turn.text), sample.turns.map((turn) => turn.text))
  assert.deepEqual(finals.map((turn) => turn.role), roles)
  assert.deepEqual(finals.map((turn) => turn.id), sample.turns.map((_, index) => `1-${index + 2}`))
  assert.equal(await page.isHidden('#partial'), true, 'no partial is left once the call ends')
  assert.equal(await page.getAttribute('#turns', 'aria-live'), 'polite')

  const snapshots = await page.evaluate(() => window.snapshots)
  for (const snapshot of snapshots) {
    assert.equal(new Set(snapshot.finals).size, snapshot.finals.length, 'no final is ever shown twice')
    if (snapshot.partial !== null) {
      assert.ok(Number(snapshot.partial.order) >= snapshot.finals.length, `a partial is never shown beside its own final (${snapshot.partial.order})`)
    }
  }
  // Turns whose speech began after the page was following the call: each had its partial first.
  let checked = 0
  for (let index = startFinals + 1; index < sample.turns.length; index++) {
    const shown = snapshots.findIndex((snapshot) => snapshot.partial?.order === String(index))
    const final = snapshots.findIndex((snapshot) => snapshot.finals.length > index)
    assert.ok(shown !== -1 && shown < final, `turn ${index + 1}: partial before the final`)
    const partialText = snapshots[shown]!.partial!.text
    assert.ok(sample.turns[index]!.text.startsWith(partialText.replace(/[.,?!]$/, '')), `the partial of turn ${index + 1} is its words so far`)
    checked++
  }
  assert.ok(checked >= 5, `${checked} turns were followed live`)
  assert.ok(requests.every((url) => !url.includes(token) && new URL(url).origin === harness.serviceUrl), 'the token is in no URL requested, and nothing outside the service is fetched')
})

test('live view lists calls for a supervisor, opens one from the keyboard, and resumes without loss or doubling after the server drops its stream', async (t) => {
  const harness = await setup(t)
  const page = await launch(t)
  const sockets = new Set<Socket>()
  harness.app.server.on('request', (request) => { if (request.url?.endsWith('/events') === true) sockets.add(request.socket) })
  await page.goto(`${harness.serviceUrl}/live`)
  await page.fill('#token-input', mintViewerToken(harness.config.liveViewKey, '*', Date.now(), 600))
  await page.press('#token-input', 'Enter')
  const { call } = await placeCall(harness, t)
  const button = page.locator(`button[data-call-sid="${call.callSid}"]`)
  await button.waitFor({ timeout: 15000 })
  await button.focus()
  await page.keyboard.press('Enter')
  await page.waitForFunction(finalsAtLeast, 2, { timeout: 30000 })
  for (const socket of sockets) socket.destroy()
  await page.waitForFunction(statusHas, 'reconnecting', { timeout: 10000 })
  await page.waitForFunction(statusIs, 'The call has ended.', { timeout: 60000 })
  const finals = await finalsOnPage(page)
  assert.deepEqual(finals.map((turn) => turn.text), sample.turns.map((turn) => turn.text), 'nothing missing, nothing twice')
  assert.deepEqual(finals.map((turn) => turn.role), roles)
  assert.ok(harness.logs.filter((line) => line.msg === 'live view opened' && line.resumed === true).length >= 1, 'the page came back with Last-Event-ID')
})

test('live view shows an error and no transcript text with an expired, a forged or a wrong-call token', async (t) => {
  const harness = await setup(t)
  const { call } = await placeCall(harness, t)
  const key = harness.config.liveViewKey
  await new Promise((resolve) => setTimeout(resolve, 4000))
  const cases: Array<[string, string, RegExp]> = [
    ['expired', `#token=${mintViewerToken(key, call.callSid, Date.now() - 7200_000, 60)}`, /expired/],
    ['forged', `#token=${mintViewerToken(Buffer.from('some other key, not this service\'s own'), call.callSid, Date.now(), 600)}`, /not valid/],
    ['wrong call', `#token=${mintViewerToken(key, 'CAanothercall', Date.now(), 600)}&call=${call.callSid}`, /does not cover/]
  ]
  for (const [name, fragment, message] of cases) {
    const page = await launch(t)
    await page.goto(`${harness.serviceUrl}/live${fragment}`)
    await page.waitForFunction(statusIsError, undefined, { timeout: 10000 })
    assert.match(await page.textContent('#status') ?? '', message, name)
    const text = await page.content()
    for (const turn of sample.turns) assert.ok(!text.includes(turn.text.slice(0, 20)), `${name}: no transcript text in the DOM`)
    assert.equal(await page.isVisible('#token-input'), true, `${name}: the page asks for another token`)
  }
})

test('live view says so when the token expires while it follows a call', async (t) => {
  const harness = await setup(t)
  const page = await launch(t)
  const { call } = await placeCall(harness, t)
  await page.goto(`${harness.serviceUrl}/live#token=${mintViewerToken(harness.config.liveViewKey, call.callSid, Date.now(), 4)}`)
  await page.waitForFunction(statusHas, 'Live: following')
  await page.waitForFunction(statusIsError, undefined, { timeout: 10000 })
  assert.match(await page.textContent('#status') ?? '', /expired/)
  assert.equal(await page.isVisible('#token-input'), true, 'the page asks for a new token')
})
