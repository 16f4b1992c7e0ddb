/**
 * `npm run demo`: the whole pipeline on this machine. Starts the service (`src/server.ts`, as
 * `npm start` does) with a simulated AssemblyAI upstream and a local webhook receiver that verifies
 * every signature, plays the bundled two-party sample call through it exactly as Twilio would, and
 * prints the events as they arrive and a few metrics.
 *
 * With ASSEMBLYAI_API_KEY set, the real AssemblyAI is used instead of the simulation (the call is then
 * played in real time, as AssemblyAI requires).
 *
 * It also prints a link to the live view with a supervisor token: open it to watch the call's words
 * appear as they are spoken (the default real-time pacing is there for that).
 *
 * Options: --speed N (default 1 = real time; the simulation accepts faster), --keep (keep the data dir),
 * --wait S (seconds between the link and the call, default 5 at real time, else 0).
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { loadLiveViewKey } from '../src/config.ts'
import { mintViewerToken } from '../src/core/live/viewer-token.ts'
import { startFakeAssemblyAi } from '../test/fakes/assemblyai-server.ts'
import { TwilioSimulator } from '../test/fakes/twilio-simulator.ts'
import { loadSampleCall } from '../test/helpers/harness.ts'
import { freePort, waitForOk } from '../test/helpers/net.ts'
import { startWebhookReceiver } from '../test/helpers/webhook-receiver.ts'
import type { ReceivedEvent } from '../test/helpers/webhook-receiver.ts'

const { values } = parseArgs({ options: { speed: { type: 'string', default: '1' }, keep: { type: 'boolean', default: false }, wait: { type: 'string' } } })
const realKey = process.env.ASSEMBLYAI_API_KEY
const speed = realKey === undefined ? Number(values.speed) : 1
const waitSeconds = Number(values.wait ?? (speed === 1 ? '5' : '0'))

function describe (event: ReceivedEvent): string {
  const data = event.data
  switch (event.type) {
    case 'call.started':
      return `call.started  call=${String(data.call_sid)} params=${JSON.stringify(data.custom_parameters)} model=${JSON.stringify(data.transcription)}`
    case 'transcript.turn':
      return `turn #${String(data.turn_index)}  ${String(data.role).padEnd(8)} speaker=${String(data.speaker)}  ${String(data.start_ms).padStart(6)}–${String(data.end_ms).padEnd(6)} ms  conf=${String(data.confidence)}  "${String(data.text)}"`
    case 'call.ended':
      return `call.ended    reason=${String(data.reason)} turns=${String(data.turn_count)} audio_ms=${String(data.audio_ms)} sessions=${JSON.stringify(data.upstream_sessions)}`
    default:
      return event.type
  }
}

async function main (): Promise<void> {
  const sample = loadSampleCall()
  const fake = realKey === undefined
    ? await startFakeAssemblyAi({ apiKeys: ['demo-key'], partialsPerTurn: 6, script: sample.turns.map((turn) => ({ text: turn.text, speaker: turn.track === 'outbound' ? 'A' : 'B' })) })
    : null
  const webhookSecret = `whsec_${randomBytes(24).toString('base64')}`
  let ended: () => void = () => {}
  const callEnded = new Promise<void>((resolve) => { ended = resolve })
  const receiver = await startWebhookReceiver({
    secrets: [webhookSecret],
    onEvent (event) {
      console.log(`  webhook ✔ signature  seq=${String(event.sequence).padStart(2)}  ${describe(event)}`)
      if (event.type === 'call.ended') ended()
    }
  })
  const port = await freePort()
  const metricsPort = await freePort()
  const dataDir = mkdtempSync(join(tmpdir(), 'medstream-demo-'))
  const authToken = randomBytes(16).toString('hex')
  const publicUrl = `http://127.0.0.1:${port}`
  const env = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    METRICS_PORT: String(metricsPort),
    PUBLIC_URL: publicUrl,
    TWILIO_AUTH_TOKEN: authToken,
    FORWARD_TO: '+15550002222',
    ASSEMBLYAI_API_KEY: realKey ?? 'demo-key',
    ASSEMBLYAI_URL: fake?.url ?? process.env.ASSEMBLYAI_URL ?? 'wss://streaming.assemblyai.com/v3/ws',
    ASSEMBLYAI_KEYTERMS: 'metoprolol,lisinopril',
    WEBHOOK_URL: receiver.url,
    WEBHOOK_SECRET: webhookSecret,
    DATA_DIR: dataDir,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn'
  }
  console.log(`medstream demo: upstream = ${fake === null ? 'real AssemblyAI' : 'simulated AssemblyAI (set ASSEMBLYAI_API_KEY for the real one)'}, speed ${speed}×`)
  const service = spawn(process.execPath, ['src/server.ts'], { env, stdio: ['ignore', 'inherit', 'inherit'] })
  const serviceExit = once(service, 'exit')
  try {
    await waitForOk(`${publicUrl}/healthz`, 10000, () => service.exitCode === null)
    // The same key the service derives from the same variables: the demo mints like an operator would.
    const viewerToken = mintViewerToken(loadLiveViewKey(env), '*', Date.now(), 3600)
    console.log(`service up on ${publicUrl} (metrics on :${metricsPort})`)
    console.log(`\nwatch the call live (supervisor token, valid 1 h; the part after # never reaches a server):\n  ${publicUrl}/live#token=${viewerToken}\n`)
    if (waitSeconds > 0) {
      console.log(`placing the call in ${waitSeconds} s: open the link now`)
      await new Promise((resolve) => setTimeout(resolve, waitSeconds * 1000))
    }
    console.log('placing a call to /twilio/voice?clinic=north')
    const simulator = new TwilioSimulator({ serviceUrl: publicUrl, publicUrl, authToken })
    const call = await simulator.placeCall({ path: '/twilio/voice?clinic=north&keyterms=Holter%20monitor' })
    console.log(`voice webhook → ${call.status}; TwiML streams to ${call.twiml?.stream?.url ?? '?'} and dials ${call.twiml?.dial?.number ?? call.twiml?.redirect ?? '?'}`)
    const stream = simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed, statusCallbacks: true })
    await stream.opened
    console.log(`media stream ${stream.streamSid} open; playing ${(sample.inbound.length / 8000).toFixed(1)} s of two-track audio`)
    const result = await stream.done
    console.log(`stream closed with ${result.code} after ${result.framesSent} media frames`)
    await Promise.race([callEnded, new Promise((resolve) => setTimeout(resolve, 30000))])
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
    console.log('\na few metrics:')
    for (const line of metrics.split('\n')) {
      if (/^medstream_(calls_total|turns_total|audio_received_seconds_total|upstream_audio_sent_seconds_total|webhook_deliveries_total)\{?/.test(line) && !/ 0$/.test(line)) console.log(`  ${line}`)
    }
  } finally {
    service.kill('SIGTERM')
    await serviceExit
    await receiver.close()
    await fake?.close()
    if (!values.keep) rmSync(dataDir, { recursive: true, force: true })
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
