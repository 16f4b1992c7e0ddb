import { execFile } from 'node:child_process'
import { createHash, randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import alawmulaw from 'alawmulaw'

/**
 * A messy two-party call, generated at test time from the bundled sample call's voices
 * (scripts/make-sample.sh): barge-ins, a backchannel, line echo on both tracks and a stretch where both
 * parties speak at once. Each word is spoken by espeak-ng on its own and placed on the timeline, so
 * every word's time is known exactly. Generated audio is cached in the OS temp directory.
 */

export type Track = 'inbound' | 'outbound'

export interface SpokenWord {
  text: string
  track: Track
  /** ms of track audio (the first Twilio frame is at 0). */
  startMs: number
  endMs: number
}

export interface SpokenTurn {
  track: Track
  text: string
  startMs: number
  endMs: number
  /** A short acknowledgement inside the other party's turn: it stays inline by design. */
  backchannel: boolean
}

export interface MessyCall {
  /** μ-law, 8 kHz, as Twilio streams each track. */
  inbound: Buffer
  outbound: Buffer
  words: SpokenWord[]
  turns: SpokenTurn[]
}

export interface MessyCallOptions {
  /** Echo of the other track on each track, dB (negative), or null for none. Default -20. */
  echoDb?: number | null
  /** How late the echo arrives, ms. Default 30. */
  echoDelayMs?: number
  /** Leave out the barge-ins, the backchannel and the cross-talk: the same words, one party at a time. */
  clean?: boolean
}

const RATE = 8000
const GENERATOR_VERSION = 1
const execFileAsync = promisify(execFile)

/**
 * The call, as (track, text, when) where `when` places the turn relative to the previous one's end:
 * a positive gap, or a negative overlap (a barge-in). Texts follow the sample call.
 */
const SCRIPT: Array<{ track: Track, text: string, after: number, backchannel?: boolean }> = [
  { track: 'outbound', text: 'Thank you for calling North Clinic, this is Dana. How can I help you?', after: 500 },
  // Barge-in: the caller starts 0.6 s before the agent finishes.
  { track: 'inbound', text: 'Hi, I need a refill of my metoprolol, fifty milligrams twice a day.', after: -600 },
  { track: 'outbound', text: 'Sure. Are you still taking lisinopril, ten milligrams?', after: 1300 },
  // Barge-in: 0.8 s before the agent finishes.
  { track: 'inbound', text: 'Yes, but I get dizzy when I stand up.', after: -800 },
  { track: 'outbound', text: 'I will have the nurse call you back today.', after: 1300 },
  // A backchannel in the agent's short pause; the agent goes on after it.
  { track: 'inbound', text: 'mm-hmm', after: 120, backchannel: true },
  { track: 'outbound', text: 'What is your number?', after: 120 },
  { track: 'inbound', text: 'Five five five, zero one four two. It is my mobile number.', after: 1300 },
  // Both speak at once for 1.2 s.
  { track: 'outbound', text: 'Thanks. Keep taking the metoprolol until she calls.', after: -1200 },
  { track: 'inbound', text: 'Okay, goodbye.', after: 1300 }
]
const TAIL_MS = 700
/** Pauses between words, ms: a word, a comma, a sentence end. */
const WORD_GAP_MS = 30
const COMMA_GAP_MS = 150
const SENTENCE_GAP_MS = 250

const ROOT = new URL('../../', import.meta.url).pathname

/** The two voices of scripts/make-sample.sh, read from it so that the two stay the same. */
function sampleVoices (): Record<Track, string[]> {
  const text = readFileSync(join(ROOT, 'scripts/make-sample.sh'), 'utf8')
  const voice = (name: string): string[] => {
    const match = new RegExp(`^readonly ${name}=\\(([^)]*)\\)`, 'm').exec(text)
    if (match === null) throw new Error(`messy-call: ${name} not found in scripts/make-sample.sh`)
    return match[1]!.trim().split(/\s+/)
  }
  return { outbound: voice('VOICE_OUTBOUND'), inbound: voice('VOICE_INBOUND') }
}

/** One word spoken by espeak-ng, its leading and trailing silence trimmed, PCM16 at 8 kHz. */
async function speakWord (dir: string, voice: string[], word: string): Promise<Int16Array> {
  const spoken = word.replace(/[.,?!]+$/, '')
  const file = join(dir, `word-${createHash('sha256').update(voice.join(' ') + '|' + spoken).digest('hex').slice(0, 16)}.raw`)
  if (!existsSync(file)) {
    const partial = `${file}.${process.pid}.${randomUUID()}.tmp`
    await execFileAsync('sh', ['-c', 'espeak-ng "$@" --stdout | sox -D -t wav - -t raw -r 8000 -c 1 -b 16 -e signed-integer -L "$OUT" silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse', 'speak', ...voice, spoken], { env: { ...process.env, OUT: partial } })
    renameSync(partial, file)
  }
  const bytes = readFileSync(file)
  return new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length))
}

/** True when espeak-ng and sox are installed (the generator needs both). */
export async function canGenerate (): Promise<boolean> {
  try {
    await execFileAsync('sh', ['-c', 'command -v espeak-ng && command -v sox'])
    return true
  } catch {
    return false
  }
}

export async function generateMessyCall (options: MessyCallOptions = {}): Promise<MessyCall> {
  const echoDb = options.echoDb === undefined ? -20 : options.echoDb
  const echoDelayMs = options.echoDelayMs ?? 30
  const clean = options.clean ?? false
  const voices = sampleVoices()
  const dir = join(tmpdir(), `medstream-messy-call-v${GENERATOR_VERSION}`)
  mkdirSync(dir, { recursive: true })

  // Every word's audio, spoken once per voice (the cache makes later runs instant).
  const script = clean ? SCRIPT.filter((turn) => turn.backchannel !== true) : SCRIPT
  // One word at a time: the machine's cores are shared with the tests running beside this one.
  const spoken: Int16Array[][] = []
  for (const turn of script) {
    const audio: Int16Array[] = []
    for (const word of turn.text.split(' ')) audio.push(await speakWord(dir, voices[turn.track], word))
    spoken.push(audio)
  }

  // Place the turns and their words on the timeline, in samples.
  const words: SpokenWord[] = []
  const turns: SpokenTurn[] = []
  const placed: Array<{ track: Track, positions: number[], audio: Int16Array[] }> = []
  let previousEnd = 0
  script.forEach((turn, t) => {
    const after = clean && turn.after < 0 ? 1300 : turn.after
    let at = Math.max(0, previousEnd + after * RATE / 1000)
    const start = at
    const texts = turn.text.split(' ')
    const audio = spoken[t]!
    const positions: number[] = []
    audio.forEach((samples, w) => {
      const text = texts[w]!
      positions.push(at)
      words.push({ text, track: turn.track, startMs: at / 8, endMs: (at + samples.length) / 8 })
      at += samples.length
      if (w < audio.length - 1) at += (/[.?!]$/.test(text) ? SENTENCE_GAP_MS : /,$/.test(text) ? COMMA_GAP_MS : WORD_GAP_MS) * RATE / 1000
    })
    placed.push({ track: turn.track, positions, audio })
    turns.push({ track: turn.track, text: turn.text, startMs: start / 8, endMs: at / 8, backchannel: turn.backchannel === true })
    previousEnd = at
  })
  const length = previousEnd + TAIL_MS * RATE / 1000

  // Each track's own speech, every turn normalised to -3 dBFS peak as in scripts/make-sample.sh.
  const own: Record<Track, Float64Array> = { inbound: new Float64Array(length), outbound: new Float64Array(length) }
  for (const turn of placed) {
    const peak = turn.audio.reduce((max, samples) => samples.reduce((m, s) => Math.max(m, Math.abs(s)), max), 1)
    const gain = 32767 * 10 ** (-3 / 20) / peak
    turn.audio.forEach((samples, w) => {
      const at = turn.positions[w]!
      const track = own[turn.track]
      for (let i = 0; i < samples.length; i++) track[at + i]! += samples[i]! * gain
    })
  }
  const echoGain = echoDb === null ? 0 : 10 ** (echoDb / 20)
  const delay = Math.round(echoDelayMs * RATE / 1000)
  const encode = (track: Track, other: Track): Buffer => {
    const out = Buffer.alloc(length)
    for (let i = 0; i < length; i++) {
      const echo = i >= delay ? own[other][i - delay]! * echoGain : 0
      const sample = Math.max(-32768, Math.min(32767, Math.round(own[track][i]! + echo)))
      out[i] = alawmulaw.mulaw.encodeSample(sample)
    }
    return out
  }
  return { inbound: encode('inbound', 'outbound'), outbound: encode('outbound', 'inbound'), words, turns }
}
