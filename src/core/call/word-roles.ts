import type { TrackEnergy } from '../audio/energy.ts'
import { roleFromEnergy } from '../audio/energy.ts'
import type { Role } from './types.ts'

export interface WordRoleOptions {
  /** How much louder one track must be over a word's window to give the word its role, dB; 0..40, default 6. */
  marginDb?: number
  /**
   * Shortest window a word is measured over, ms, centred on the word; 0..2000, default 120. A short
   * word ("I", "mm") holds too few samples to compare; the window reaches into its neighbours instead.
   */
  minWindowMs?: number
  /**
   * Share of a word's span, around its centre, measured first; 0.1..1, default 0.5. Only when that
   * core gives no role is the whole word measured.
   */
  coreShare?: number
  /** A role run of at most this many words… (0..10, default 2) */
  inlineMaxWords?: number
  /** …that lasts less than this, ms from its first word's start to its last word's end (0..5000, default 700), stays inside the surrounding part. */
  inlineMaxMs?: number
  /** Share of a part's word duration (of words with a role) one role must hold to be the part's role, else `unknown`; above 0.5 up to 1, default 0.8. */
  majority?: number
}

export const WORD_ROLE_DEFAULTS = { marginDb: 6, minWindowMs: 120, coreShare: 0.5, inlineMaxWords: 2, inlineMaxMs: 700, majority: 0.8 } as const

/** What this module needs of a word: its span on the call timeline, ms. */
export interface TimedWord {
  start_ms: number
  end_ms: number
}

/** One part of an upstream turn: words `[from, to)` of the turn, and the part's role. */
export interface RolePart {
  from: number
  to: number
  role: Role
}

function checkRange (name: string, value: number, min: number, max: number, integer = false): number {
  if (!Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    throw new RangeError(`WordRoles: ${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got ${value}`)
  }
  return value
}

/**
 * Who said each word of a final turn, and where the turn splits into parts with one role each.
 *
 * A word's role comes from the two tracks' energy over the word's own span (see roleOf; at least
 * `minWindowMs`, centred on it), with the same 6 dB rule as a whole turn used to have: over one word,
 * a barge-in or a backchannel is no longer averaged away by the other party's speech around it.
 *
 * Echo: a track that carries only the other party's echo is quieter than the speaking track by about
 * the line's echo loss over any window that holds the speech, so it cannot be 6 dB louder. Measured
 * on the sample call's voices with each track's echo on the other, 30 ms late
 * (test/core/call/word-roles.test.ts): at −20 dB echo the speaking track leads by at least 17.9 dB
 * over every word, at −12 dB by at least 9.9 dB (3.9 dB more than the rule needs); with word times
 * off by up to 60 ms the echo still stays 4.4 dB below the speech at −12 dB. Echo within 6 dB of the
 * speech makes words `unknown`; only echo louder than the speech itself could give its role.
 *
 * Pure and timer-free: the call runs it once per final turn, never per audio frame.
 */
export class WordRoles {
  readonly #energy: { inbound: TrackEnergy, outbound: TrackEnergy }
  readonly #marginDb: number
  readonly #minWindowMs: number
  readonly #coreShare: number
  readonly #inlineMaxWords: number
  readonly #inlineMaxMs: number
  readonly #majority: number

  constructor (energy: { inbound: TrackEnergy, outbound: TrackEnergy }, options: WordRoleOptions = {}) {
    if (energy?.inbound === undefined || energy.outbound === undefined) {
      throw new TypeError('WordRoles: energy must hold an inbound and an outbound TrackEnergy (the aligner\'s `energy`)')
    }
    this.#energy = energy
    this.#marginDb = checkRange('marginDb', options.marginDb ?? WORD_ROLE_DEFAULTS.marginDb, 0, 40)
    this.#minWindowMs = checkRange('minWindowMs', options.minWindowMs ?? WORD_ROLE_DEFAULTS.minWindowMs, 0, 2000)
    this.#coreShare = checkRange('coreShare', options.coreShare ?? WORD_ROLE_DEFAULTS.coreShare, 0.1, 1)
    this.#inlineMaxWords = checkRange('inlineMaxWords', options.inlineMaxWords ?? WORD_ROLE_DEFAULTS.inlineMaxWords, 0, 10, true)
    this.#inlineMaxMs = checkRange('inlineMaxMs', options.inlineMaxMs ?? WORD_ROLE_DEFAULTS.inlineMaxMs, 0, 5000)
    const majority = options.majority ?? WORD_ROLE_DEFAULTS.majority
    // Above one half, so that two roles can never both hold it.
    if (!(majority > 0.5 && majority <= 1)) throw new RangeError(`WordRoles: majority must be above 0.5 and at most 1, got ${majority}`)
    this.#majority = majority
  }

  /**
   * The windows a word is measured over, ms on the call timeline: its core (`coreShare` of its span
   * around its centre), then its whole span; each widened to `minWindowMs` around the centre.
   */
  windowsOf (word: TimedWord): [[number, number], [number, number]] {
    const centre = (word.start_ms + word.end_ms) / 2
    const length = Math.max(0, word.end_ms - word.start_ms)
    const core = Math.max(this.#minWindowMs, length * this.#coreShare) / 2
    const whole = Math.max(this.#minWindowMs, length) / 2
    return [[centre - core, centre + core], [centre - whole, centre + whole]]
  }

  /**
   * The role of one word, from the two tracks' energy over its core, or over the whole word when the
   * core gives none. The core comes first because a word's edges are where the other party's speech
   * overlaps it in a barge-in, and where an upstream's word times are least exact; the whole word
   * second because a word at a turn's edge may be reported with silence around it.
   */
  roleOf (word: TimedWord): Role {
    const [core, whole] = this.windowsOf(word)
    const { inbound, outbound } = this.#energy
    const role = roleFromEnergy(inbound.meanSquareWithin(core[0], core[1]), outbound.meanSquareWithin(core[0], core[1]), this.#marginDb)
    if (role !== 'unknown' || whole[0] === core[0]) return role
    return roleFromEnergy(inbound.meanSquareWithin(whole[0], whole[1]), outbound.meanSquareWithin(whole[0], whole[1]), this.#marginDb)
  }

  /**
   * Splits a turn's words into parts where the role changes:
   * - consecutive words with the same role form a run (`unknown` words too);
   * - a run of at most `inlineMaxWords` words lasting under `inlineMaxMs` (a backchannel, a word or
   *   two lost in cross-talk) starts no part: it stays in the part before it, or at the start of the
   *   turn in the part after it, and its words keep their own roles;
   * - neighbouring parts whose runs have the same role are one part;
   * - a part's role is the role holding at least `majority` of the duration of its words that have a
   *   role (`unknown` words count for neither side), else `unknown`.
   * A turn without words is one part of role `unknown`.
   */
  split (words: readonly TimedWord[], roles: readonly Role[]): RolePart[] {
    if (roles.length !== words.length) throw new RangeError(`WordRoles.split: ${roles.length} roles for ${words.length} words`)
    if (words.length === 0) return [{ from: 0, to: 0, role: 'unknown' }]
    // Runs of one role, then the runs long enough to anchor a part of their own.
    const parts: RolePart[] = []
    let from = 0
    for (let i = 1; i <= words.length; i++) {
      if (i < words.length && roles[i] === roles[from]) continue
      const long = i - from > this.#inlineMaxWords || words[i - 1]!.end_ms - words[from]!.start_ms >= this.#inlineMaxMs
      if (long) {
        const role = roles[from]!
        const previous = parts[parts.length - 1]
        if (previous === undefined) {
          // Short runs before the first long one belong to it.
          parts.push({ from: 0, to: i, role })
        } else if (previous.role === role) {
          previous.to = i
        } else {
          previous.to = from
          parts.push({ from, to: i, role })
        }
      }
      from = i
    }
    if (parts.length === 0) return [{ from: 0, to: words.length, role: this.#majorityRole(words, roles, 0, words.length) }]
    // Short runs after the last long one belong to it.
    parts[parts.length - 1]!.to = words.length
    // A part's role is its words' majority, which may differ from its run's role: join neighbours that
    // end up with the same one (two parts that hold a majority hold it together, two short of one stay
    // short of it).
    const result: RolePart[] = []
    for (const part of parts) {
      const role = this.#majorityRole(words, roles, part.from, part.to)
      const previous = result[result.length - 1]
      if (previous !== undefined && previous.role === role) previous.to = part.to
      else result.push({ from: part.from, to: part.to, role })
    }
    return result
  }

  #majorityRole (words: readonly TimedWord[], roles: readonly Role[], from: number, to: number): Role {
    let customer = 0
    let agent = 0
    for (let i = from; i < to; i++) {
      const word = words[i]!
      // A word reported with no length still counts, as one millisecond.
      const ms = Math.max(1, word.end_ms - word.start_ms)
      if (roles[i] === 'customer') customer += ms
      else if (roles[i] === 'agent') agent += ms
    }
    // Words of role unknown (cross-talk, silence) speak for no one: they count for neither side.
    const total = customer + agent
    if (total === 0) return 'unknown'
    if (customer >= total * this.#majority) return 'customer'
    if (agent >= total * this.#majority) return 'agent'
    return 'unknown'
  }
}
