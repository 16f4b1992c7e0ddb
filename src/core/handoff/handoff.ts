import { setTimeout as sleep } from 'node:timers/promises'
import type { CallSession } from '../call/call-session.ts'
import type { CoreLogger } from '../log.ts'
import type { HandoffResult, Metrics } from '../metrics.ts'
import { mintHandoffParameters } from '../twilio/handoff-token.ts'
import type { HandoffClaim } from '../twilio/handoff-token.ts'
import { TwilioRestError, TwilioStreams } from '../twilio/rest.ts'
import { streamUrls } from '../twilio/twiml.ts'
import type { HandoffStore } from './store.ts'

/**
 * Stream handoff (docs/interface.md, "Stream handoff"): a draining replica moves each live call to a
 * ready one through Twilio's Stream resource, without losing or doubling a word.
 *
 * Old side (HandoffCoordinator, replica A): create a second stream of the call carrying a handoff
 * token; wait for the new replica's acceptance record; pick the cut (the next moment both tracks
 * have been quiet for QUIET_MS, or CUT_WINDOW_MS after confirmation); record it; stop the old stream
 * by SID; publish only the words that end at or before the cut and `call.ended` (`handed_off`).
 *
 * New side (HandoffAcceptor, replica B): the stream starts holding its events; once its first audio
 * is in, record acceptance; wait for the cut; publish `call.started` and only the words that start
 * at or after it.
 */

/** The old side waits this long for the new replica's acceptance record. */
export const CONFIRM_TIMEOUT_MS = 10_000
/** Both tracks quiet this long make a cut. */
export const QUIET_MS = 300
/** After confirmation, the cut comes at the first quiet moment within this window, else at its end. */
export const CUT_WINDOW_MS = 10_000
/**
 * Twilio's REST limits are per account and unpublished for the Stream resource; five creates a
 * second (each handoff costs two or three requests) stays far under the concurrency Twilio allows
 * an account, and still empties a replica of 200 calls in 40 s of creates plus one cut window.
 */
export const CREATES_PER_SECOND = 5
/** How often the old side looks for a quiet moment, ms (a media frame is 20 ms). */
const CUT_POLL_MS = 20
/** The new side waits for the cut at most this long after accepting; then it publishes from its own start. */
const CUT_WAIT_MS = CONFIRM_TIMEOUT_MS + CUT_WINDOW_MS + 10_000
/** The cut lies at least this far after the new stream's first audio, so its transcriber has context. */
const CUT_AFTER_FIRST_AUDIO_MS = 500

export interface HandoffSettings {
  /** PUBLIC_URL: the new stream's URL goes through the load balancer to a ready replica. */
  publicUrl: URL
  /** Key of the handoff token (the stream token's). */
  tokenSecret: Buffer
  /** TWILIO_API_URL. */
  apiUrl: URL
  /** TWILIO_API_KEY_SID/SECRET, or null for the call's AccountSid with `authToken`. */
  apiKey: { sid: string, secret: string } | null
  authToken: string | null
}

export interface CoordinatorOptions {
  settings: HandoffSettings
  store: HandoffStore
  metrics: Metrics
  logger: CoreLogger
  /** Tests shorten the confirmation wait, ms. */
  confirmTimeoutMs?: number
}

/** The old side: hands every live call of a draining replica to another one. */
export class HandoffCoordinator {
  readonly #options: CoordinatorOptions
  readonly #clients = new Map<string, TwilioStreams>()
  readonly #streamUrl: string
  readonly #statusCallbackUrl: string

  constructor (options: CoordinatorOptions) {
    this.#options = options
    const urls = streamUrls(options.settings.publicUrl)
    this.#streamUrl = urls.streamUrl
    this.#statusCallbackUrl = urls.statusCallbackUrl
  }

  /**
   * Hands off every session given, creates paced at CREATES_PER_SECOND; resolves when each attempt
   * has succeeded or failed (a failed call stays here and drains as before).
   */
  async handOffAll (sessions: Iterable<CallSession>): Promise<Record<HandoffResult, number>> {
    const counts: Record<HandoffResult, number> = { success: 0, create_failed: 0, track_limit: 0, rate_limited: 0, unconfirmed: 0, store_failed: 0 }
    const attempts: Array<Promise<void>> = []
    let first = true
    for (const session of sessions) {
      if (session.ended || session.holding) continue
      if (!first) await sleep(1000 / CREATES_PER_SECOND)
      first = false
      if (session.ended) continue
      attempts.push(this.handOff(session).then((result) => { counts[result]++ }))
    }
    await Promise.all(attempts)
    return counts
  }

  /** One call: create, confirm, cut, stop. Never throws; the result is counted. */
  async handOff (session: CallSession): Promise<HandoffResult> {
    const result = await this.#attempt(session).catch((error: unknown) => {
      this.#options.logger.error({ err: error, callSid: session.identity.callSid }, 'handoff failed unexpectedly')
      return 'create_failed' as const
    })
    this.#options.metrics.handoffs.inc({ result })
    return result
  }

  async #attempt (session: CallSession): Promise<HandoffResult> {
    const { identity } = session
    const { store, logger, settings } = this.#options
    const log = { callSid: identity.callSid, streamSid: identity.streamSid }
    const segment = session.segment.number + 1
    const claim: HandoffClaim = {
      callSid: identity.callSid,
      accountSid: identity.accountSid,
      previousStreamSid: identity.streamSid,
      segment,
      atMs: session.timelineNowMs,
      atEpochMs: Date.now()
    }
    const parameters: Record<string, string> = { ...identity.customParameters }
    if (identity.keyterms != null) parameters.keyterms = identity.keyterms
    Object.assign(parameters, mintHandoffParameters(settings.tokenSecret, claim, claim.atEpochMs))
    const rest = this.#client(identity.accountSid)

    let newStreamSid: string
    try {
      newStreamSid = await rest.create(identity.callSid, {
        url: this.#streamUrl,
        name: `medstream-${segment}`,
        track: 'both_tracks',
        statusCallback: this.#statusCallbackUrl,
        parameters
      })
    } catch (error) {
      const result = classify(error)
      logger.warn({ ...log, result, status: error instanceof TwilioRestError ? error.status : null, code: error instanceof TwilioRestError ? error.code : null }, 'handoff: stream create failed; the call stays and drains here')
      return result
    }
    logger.info({ ...log, segment, newStreamSid, atMs: claim.atMs }, 'handoff: second stream created')

    const accepted = await store.waitForAcceptance(identity.callSid, segment, newStreamSid, this.#options.confirmTimeoutMs ?? CONFIRM_TIMEOUT_MS)
    if (accepted === null || session.ended) {
      await this.#stopQuietly(rest, identity.callSid, newStreamSid, log)
      logger.warn({ ...log, newStreamSid }, 'handoff: no replica confirmed the new stream in time; the call stays and drains here')
      return 'unconfirmed'
    }

    const cutMs = await this.#pickCut(session, accepted.firstAudioMs + CUT_AFTER_FIRST_AUDIO_MS)
    let recorded = false
    try {
      recorded = await store.recordCut(identity.callSid, segment, newStreamSid, cutMs)
    } catch (error) {
      logger.warn({ ...log, err: error }, 'handoff: the cut could not be recorded')
    }
    if (!recorded) {
      await this.#stopQuietly(rest, identity.callSid, newStreamSid, log)
      return 'store_failed'
    }
    // The cut is durable: from here on the call belongs to the new stream, whatever Twilio answers.
    // Marked before the stop, so the `stop` it brings already ends the stream as handed_off.
    session.markHandOff(cutMs, newStreamSid)
    await this.#stopQuietly(rest, identity.callSid, identity.streamSid, log)
    logger.info({ ...log, segment, newStreamSid, cutMs }, 'handoff: cut recorded, old stream stopped')
    await session.end('handed_off')
    return 'success'
  }

  /** The next moment both tracks have been quiet for QUIET_MS, not before `notBeforeMs`; else the end of the window. */
  async #pickCut (session: CallSession, notBeforeMs: number): Promise<number> {
    const deadline = performance.now() + CUT_WINDOW_MS
    while (performance.now() < deadline && !session.ended) {
      const quiet = session.quietMomentMs(QUIET_MS)
      if (quiet !== null && quiet >= notBeforeMs) return quiet
      await sleep(CUT_POLL_MS)
    }
    return Math.max(session.timelineNowMs, notBeforeMs)
  }

  async #stopQuietly (rest: TwilioStreams, callSid: string, streamSid: string, log: object): Promise<void> {
    try {
      await rest.stop(callSid, streamSid)
    } catch (error) {
      this.#options.logger.warn({ ...log, stoppedStreamSid: streamSid, status: error instanceof TwilioRestError ? error.status : null }, 'handoff: stopping a stream failed')
    }
  }

  #client (accountSid: string): TwilioStreams {
    let client = this.#clients.get(accountSid)
    if (client === undefined) {
      const { apiKey, authToken, apiUrl } = this.#options.settings
      const credentials = apiKey !== null ? { username: apiKey.sid, password: apiKey.secret } : { username: accountSid, password: authToken ?? '' }
      client = new TwilioStreams(apiUrl, credentials, accountSid)
      this.#clients.set(accountSid, client)
    }
    return client
  }
}

/** 429 → rate_limited; a 400 on a create we formed ourselves is the four-track budget; else create_failed. */
function classify (error: unknown): HandoffResult {
  if (!(error instanceof TwilioRestError)) return 'create_failed'
  if (error.status === 429) return 'rate_limited'
  if (error.status === 400) return 'track_limit'
  return 'create_failed'
}

export interface AcceptorOptions {
  store: HandoffStore
  logger: CoreLogger
}

/** The new side: records acceptance of a handed-off stream and releases its events at the cut. */
export class HandoffAcceptor {
  readonly #options: AcceptorOptions

  constructor (options: AcceptorOptions) {
    this.#options = options
  }

  /**
   * `offset_ms` of a handed-off stream: the old side's call-timeline position when it asked for the
   * stream, plus the wall-clock time between that and this stream's `start`. Assumes the replicas'
   * clocks agree (NTP): their skew goes straight into the offset.
   */
  static offsetMs (claim: HandoffClaim, startWallMs: number): number {
    return Math.max(0, Math.round(claim.atMs + (startWallMs - claim.atEpochMs)))
  }

  /** Runs the new side for one session; never throws. */
  async adopt (session: CallSession, claim: HandoffClaim): Promise<void> {
    const { store, logger } = this.#options
    const { identity } = session
    const log = { callSid: identity.callSid, streamSid: identity.streamSid, segment: claim.segment }
    try {
      const firstAudioMs = await session.firstAudioMs
      if (firstAudioMs === null || session.ended) return
      const accepted = await store.accept({
        callSid: identity.callSid,
        segment: claim.segment,
        previousStreamSid: claim.previousStreamSid,
        streamSid: identity.streamSid,
        offsetMs: session.segment.offsetMs,
        firstAudioMs
      })
      if (!accepted) {
        logger.warn(log, 'handoff: another stream already holds this segment; ending this one unpublished')
        void session.end('stream_error')
        return
      }
      logger.info({ ...log, offsetMs: session.segment.offsetMs, firstAudioMs }, 'handoff: accepted')
      const cutMs = await store.waitForCut(identity.callSid, claim.segment, CUT_WAIT_MS)
      if (session.ended) return
      if (cutMs === null) {
        // The old replica vanished after confirming (a SIGKILL): nobody else publishes this call.
        logger.warn(log, 'handoff: no cut recorded in time; publishing from this stream\'s start')
        session.releaseFrom(session.segment.offsetMs)
        return
      }
      session.releaseFrom(cutMs)
    } catch (error) {
      logger.error({ ...log, err: error }, 'handoff: acceptance could not be recorded; ending this stream unpublished')
      void session.end('stream_error')
    }
  }
}
