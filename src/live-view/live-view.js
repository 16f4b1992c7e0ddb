/* global document, location, history, sessionStorage, fetch, TextDecoder, AbortController, URLSearchParams */
// The live view page. Plain browser JavaScript, no build step and no third-party code: the service
// serves this file as is under a CSP of 'self'. The viewer token is read from the fragment (#token=…),
// which browsers never send to a server, or pasted; it travels only in an Authorization header, which
// is why the event stream is read with fetch rather than EventSource (EventSource cannot set headers).

const TOKEN_KEY = 'medstream.viewerToken'
const LIST_REFRESH_MS = 3000
const MAX_BACKOFF_MS = 10000

const $ = (id) => document.getElementById(id)
const ui = {
  status: $('status'),
  form: $('token-form'),
  input: $('token-input'),
  callsSection: $('calls-section'),
  calls: $('calls'),
  callsEmpty: $('calls-empty'),
  callSection: $('call-section'),
  callHeading: $('call-heading'),
  back: $('back'),
  transcript: $('transcript'),
  turns: $('turns'),
  partial: $('partial')
}

const state = {
  token: null,
  scope: null,
  expiryTimer: null,
  listTimer: null,
  /** The call being watched and its stream's state; replaced as a whole when another call opens. */
  view: null
}

function setStatus (text, kind = '') {
  ui.status.textContent = text
  ui.status.className = kind
}

function formatTime (ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000))
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`
}

function readToken (text) {
  const parts = text.trim().split('.')
  if (parts.length !== 4 || parts[0] !== 'lv1' || !/^\d+$/.test(parts[2])) return null
  return { token: parts.join('.'), scope: parts[1], expiry: Number(parts[2]) }
}

function stop () {
  if (state.listTimer !== null) clearInterval(state.listTimer)
  state.listTimer = null
  if (state.view !== null) {
    state.view.closed = true
    state.view.abort?.abort()
  }
  state.view = null
}

function signOut (message) {
  stop()
  if (state.expiryTimer !== null) clearTimeout(state.expiryTimer)
  state.expiryTimer = null
  state.token = null
  sessionStorage.removeItem(TOKEN_KEY)
  ui.form.hidden = false
  ui.callsSection.hidden = true
  ui.partial.hidden = true
  setStatus(message, 'error')
  ui.input.focus()
}

function start (text, callSid = null) {
  const parsed = readToken(text)
  if (parsed === null) {
    signOut('This is not a viewer token (lv1.…). Check that it was copied whole.')
    return
  }
  if (parsed.expiry * 1000 <= Date.now()) {
    signOut('The viewer token has expired. Ask for a new one.')
    return
  }
  stop()
  state.token = parsed.token
  state.scope = parsed.scope
  sessionStorage.setItem(TOKEN_KEY, parsed.token)
  watchExpiry(parsed.expiry)
  ui.form.hidden = true
  if (callSid !== null) openCall(callSid, parsed.scope === '*')
  else if (parsed.scope === '*') showCalls()
  else openCall(parsed.scope, false)
}

/** Says so when the token expires (the server would refuse the next request anyway). */
function watchExpiry (expiry) {
  if (state.expiryTimer !== null) clearTimeout(state.expiryTimer)
  const left = expiry * 1000 - Date.now()
  if (left <= 0) {
    signOut('The viewer token has expired. Paste a new one to continue.')
    return
  }
  // setTimeout holds at most ~24.8 days; a longer wait is taken in steps.
  state.expiryTimer = setTimeout(() => watchExpiry(expiry), Math.min(left, 2 ** 31 - 1))
}

function authHeaders () {
  return { Authorization: `Bearer ${state.token}` }
}

async function refusal (response) {
  if (response.status === 401) {
    let message = 'The viewer token is not valid.'
    try {
      const body = await response.json()
      if (/expired/.test(body.message ?? '')) message = 'The viewer token has expired. Ask for a new one.'
    } catch {
      // no JSON body: keep the general message
    }
    signOut(message)
    return true
  }
  if (response.status === 403) {
    signOut('This viewer token does not cover this call.')
    return true
  }
  return false
}

// --- supervisor: the list of live calls ---------------------------------------------------------

function showCalls () {
  stop()
  ui.callSection.hidden = true
  ui.callsSection.hidden = false
  setStatus('Live calls on this service.')
  void refreshCalls()
  state.listTimer = setInterval(() => { void refreshCalls() }, LIST_REFRESH_MS)
}

async function refreshCalls () {
  let response
  try {
    response = await fetch('/live/calls', { headers: authHeaders(), cache: 'no-store' })
  } catch {
    setStatus('The service cannot be reached; retrying…', 'error')
    return
  }
  if (await refusal(response)) return
  if (!response.ok) return
  const { calls } = await response.json()
  if (ui.callsSection.hidden) return
  ui.callsEmpty.hidden = calls.length > 0
  ui.calls.replaceChildren(...calls.map((call) => {
    const item = document.createElement('li')
    const button = document.createElement('button')
    button.type = 'button'
    button.className = 'link'
    button.dataset.callSid = call.call_sid
    button.textContent = `${call.call_sid} · ${formatTime(call.duration_ms)} · ${call.turn_count} turn${call.turn_count === 1 ? '' : 's'}${call.last_role === null ? '' : ` · last: ${call.last_role}`}`
    button.addEventListener('click', () => openCall(call.call_sid, true))
    item.append(button)
    return item
  }))
}

// --- one call ------------------------------------------------------------------------------------

function openCall (callSid, fromList) {
  stop()
  ui.callsSection.hidden = true
  ui.callSection.hidden = false
  ui.back.hidden = !fromList
  ui.callHeading.textContent = `Call ${callSid}`
  ui.turns.replaceChildren()
  ui.partial.hidden = true
  const view = { callSid, lastEventId: null, seen: new Set(), ended: false, closed: false, abort: null, partialKey: null }
  state.view = view
  void follow(view)
}

function sleep (ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

async function follow (view) {
  let backoff = 1000
  let waitingShown = false
  while (!view.closed && !view.ended) {
    const controller = new AbortController()
    view.abort = controller
    const headers = { ...authHeaders(), Accept: 'text/event-stream' }
    if (view.lastEventId !== null) headers['Last-Event-ID'] = view.lastEventId
    try {
      const response = await fetch(`/live/calls/${encodeURIComponent(view.callSid)}/events`, { headers, cache: 'no-store', signal: controller.signal })
      if (view.closed) return
      if (await refusal(response)) return
      if (response.status === 404) {
        await response.body?.cancel()
        if (view.lastEventId !== null) {
          endView(view)
          return
        }
        if (!waitingShown) setStatus('Waiting for the call to start…')
        waitingShown = true
        await sleep(1000)
        continue
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`)
      setStatus('Live: following the call.')
      backoff = 1000
      await readEvents(response.body, (message) => onMessage(view, message))
    } catch {
      if (view.closed) return
    }
    if (view.closed || view.ended) return
    setStatus('Connection lost; reconnecting…', 'error')
    await sleep(backoff)
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS)
  }
}

async function readEvents (body, onEvent) {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  let message = { id: null, event: 'message', data: [] }
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += decoder.decode(value, { stream: true })
    let newline
    while ((newline = buffer.indexOf('\n')) !== -1) {
      const line = buffer.slice(0, newline).replace(/\r$/, '')
      buffer = buffer.slice(newline + 1)
      if (line === '') {
        if (message.data.length > 0) onEvent({ id: message.id, event: message.event, data: message.data.join('\n') })
        message = { id: null, event: 'message', data: [] }
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':')
        const field = colon === -1 ? line : line.slice(0, colon)
        const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
        if (field === 'id') message.id = value
        else if (field === 'event') message.event = value
        else if (field === 'data') message.data.push(value)
      }
    }
  }
}

function onMessage (view, message) {
  if (view.closed) return
  let data
  try {
    data = JSON.parse(message.data)
  } catch {
    return
  }
  if (message.id !== null) view.lastEventId = message.id
  switch (message.event) {
    case 'turn.partial':
      showPartial(view, data)
      return
    case 'transcript.turn':
      if (message.id !== null) {
        if (view.seen.has(message.id)) return
        view.seen.add(message.id)
      }
      addFinal(view, message.id, data)
      return
    case 'call.ended':
      if (data.reason === 'handed_off') return
      endView(view)
  }
}

function endView (view) {
  view.ended = true
  ui.partial.hidden = true
  setStatus('The call has ended.', 'ended')
  view.abort?.abort()
}

function fillTurn (element, data) {
  element.className = `turn ${['agent', 'customer'].includes(data.role) ? data.role : 'unknown'}${element === ui.partial ? ' partial' : ''}`
  element.dataset.role = data.role
  const meta = document.createElement('div')
  meta.className = 'meta'
  const role = document.createElement('span')
  role.className = 'role'
  role.textContent = data.role
  const speaker = document.createElement('span')
  speaker.className = 'speaker'
  speaker.textContent = data.speaker === null || data.speaker === undefined ? 'speaker ?' : `speaker ${data.speaker}`
  const time = document.createElement('span')
  time.className = 'time'
  time.textContent = formatTime(data.start_ms)
  meta.append(role, speaker, time)
  const text = document.createElement('p')
  text.className = 'text'
  text.textContent = data.text
  element.replaceChildren(meta, text)
}

/** Keeps up with the conversation unless the reader has scrolled back. */
function withScroll (change) {
  const box = ui.transcript
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 48
  change()
  if (atBottom) box.scrollTop = box.scrollHeight
}

function showPartial (view, data) {
  const key = `${data.segment}:${data.upstream?.turn_order}`
  // A partial is the whole turn so far: it replaces the previous one in place.
  withScroll(() => {
    fillTurn(ui.partial, data)
    ui.partial.dataset.turnOrder = String(data.upstream?.turn_order)
    ui.partial.hidden = false
  })
  view.partialKey = key
}

function addFinal (view, id, data) {
  withScroll(() => {
    const item = document.createElement('li')
    fillTurn(item, data)
    if (id !== null) item.dataset.id = id
    ui.turns.append(item)
    if (view.partialKey === `${segmentOf(id)}:${data.upstream?.turn_order}`) {
      ui.partial.hidden = true
      ui.partial.replaceChildren()
      view.partialKey = null
    }
  })
}

function segmentOf (id) {
  return id === null ? 1 : Number(id.split('-')[0])
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault()
  const value = ui.input.value
  ui.input.value = ''
  start(value)
})
ui.back.addEventListener('click', () => showCalls())

const fragment = new URLSearchParams(location.hash.slice(1))
const fromFragment = fragment.get('token')
if (fromFragment !== null) {
  // Out of the address bar (and its history) at once; the tab keeps it in sessionStorage.
  history.replaceState(null, '', location.pathname + location.search)
  // `#token=…&call=CA…` opens one call directly (a supervisor's link to a call).
  start(fromFragment, fragment.get('call'))
} else {
  const kept = sessionStorage.getItem(TOKEN_KEY)
  if (kept !== null) start(kept)
  else ui.input.focus()
}
