import twilio from 'twilio'

/**
 * Twilio's REST API as the handoff needs it: the Stream resource of a live call, through the
 * official helper. The helper always builds `https://api.twilio.com/...` URLs; BaseUrlRequestClient
 * sends them to TWILIO_API_URL instead (the simulator in tests, a regional or proxy host in
 * production), keeping the path, the Basic auth and the form body exactly as the helper made them.
 */

/** What the helper hands its httpClient (twilio's RequestClient.RequestOptions, the parts used here). */
interface HelperRequest {
  method: string
  uri: string
  username?: string
  password?: string
  headers?: Record<string, string>
  params?: Record<string, unknown>
  data?: Record<string, unknown>
  timeout?: number
}

/** Per request, connect to answer, ms. Twilio's helper waits 30 s; a drain cannot. */
const REQUEST_TIMEOUT_MS = 10_000

export class BaseUrlRequestClient {
  readonly #base: URL
  readonly #timeoutMs: number

  /** @param baseUrl TWILIO_API_URL, e.g. `https://api.twilio.com` (origin and an optional path prefix) */
  constructor (baseUrl: URL, timeoutMs: number = REQUEST_TIMEOUT_MS) {
    this.#base = baseUrl
    this.#timeoutMs = timeoutMs
  }

  /** The helper's contract: resolve `{ statusCode, body, headers }` for any HTTP answer; reject only when none came. */
  async request (options: HelperRequest): Promise<{ statusCode: number, body: string, headers: Record<string, string> }> {
    const original = new URL(options.uri)
    const target = new URL(this.#base.href.replace(/\/$/, '') + original.pathname)
    target.search = original.search
    for (const [key, value] of Object.entries(options.params ?? {})) {
      if (value !== undefined) target.searchParams.append(key, String(value))
    }
    const headers: Record<string, string> = { ...options.headers }
    if (options.username !== undefined && options.password !== undefined) {
      headers.Authorization = `Basic ${Buffer.from(`${options.username}:${options.password}`).toString('base64')}`
    }
    let body: string | undefined
    if (options.data !== undefined && options.method.toLowerCase() !== 'get') {
      const form = new URLSearchParams()
      for (const [key, value] of Object.entries(options.data)) {
        if (value === undefined) continue
        for (const item of Array.isArray(value) ? value : [value]) form.append(key, String(item))
      }
      body = form.toString()
      headers['Content-Type'] ??= 'application/x-www-form-urlencoded'
    }
    const response = await fetch(target, {
      method: options.method.toUpperCase(),
      headers,
      ...(body === undefined ? {} : { body }),
      redirect: 'manual',
      signal: AbortSignal.timeout(options.timeout ?? this.#timeoutMs)
    })
    return { statusCode: response.status, body: await response.text(), headers: Object.fromEntries(response.headers) }
  }
}

export interface RestCredentials {
  /** API key SID (`SK…`) or the AccountSid. */
  username: string
  /** API key secret or the auth token. */
  password: string
}

export interface CreateStreamParams {
  url: string
  name: string
  track: 'inbound_track' | 'outbound_track' | 'both_tracks'
  statusCallback?: string | undefined
  /** Become `Parameter1.Name`/`.Value` …, at most 99. */
  parameters: Record<string, string>
}

/** A REST failure, with Twilio's answer: `status` (HTTP; 0 when none came) and Twilio's error `code`. */
export class TwilioRestError extends Error {
  readonly status: number
  readonly code: number | null
  constructor (message: string, status: number, code: number | null, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'TwilioRestError'
    this.status = status
    this.code = code
  }

  /** 429 and 5xx, and no answer at all, may succeed later; a 4xx will not. */
  get retryable (): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500
  }
}

const MAX_STREAM_PARAMETERS = 99

type HelperHttpClient = NonNullable<NonNullable<Parameters<typeof twilio>[2]>['httpClient']>

/** The Stream resource of live calls, for one set of credentials. */
export class TwilioStreams {
  readonly #client: ReturnType<typeof twilio>

  constructor (baseUrl: URL, credentials: RestCredentials, accountSid: string, timeoutMs?: number) {
    this.#client = twilio(credentials.username, credentials.password, {
      accountSid,
      httpClient: new BaseUrlRequestClient(baseUrl, timeoutMs) as unknown as HelperHttpClient
    })
  }

  /** Starts a stream on a live call; resolves its StreamSid. */
  async create (callSid: string, params: CreateStreamParams): Promise<string> {
    const entries = Object.entries(params.parameters)
    if (entries.length > MAX_STREAM_PARAMETERS) throw new RangeError(`a stream takes at most ${MAX_STREAM_PARAMETERS} parameters, got ${entries.length}`)
    const options: Record<string, string> = { url: params.url, name: params.name, track: params.track }
    if (params.statusCallback !== undefined) options.statusCallback = params.statusCallback
    entries.forEach(([name, value], i) => {
      options[`parameter${i + 1}.name`] = name
      options[`parameter${i + 1}.value`] = value
    })
    try {
      const stream = await this.#client.calls(callSid).streams.create(options as unknown as Parameters<ReturnType<ReturnType<typeof twilio>['calls']>['streams']['create']>[0])
      return stream.sid
    } catch (error) {
      throw asRestError(error, 'stream create failed')
    }
  }

  /** Stops a stream by its SID (never by name: names may repeat across a call's segments elsewhere). */
  async stop (callSid: string, streamSid: string): Promise<void> {
    try {
      await this.#client.calls(callSid).streams(streamSid).update({ status: 'stopped' })
    } catch (error) {
      throw asRestError(error, 'stream stop failed')
    }
  }
}

function asRestError (error: unknown, what: string): TwilioRestError {
  const status = typeof (error as { status?: unknown }).status === 'number' ? (error as { status: number }).status : 0
  const code = typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : null
  return new TwilioRestError(`${what}: ${status === 0 ? 'no answer from Twilio' : `HTTP ${status}`}${code === null ? '' : ` (Twilio error ${code})`}`, status, code, error)
}
