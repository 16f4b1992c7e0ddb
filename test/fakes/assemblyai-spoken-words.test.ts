import assert from 'node:assert/strict'
import { test } from 'node:test'
import WebSocket from 'ws'
import { pcmFrames, pcmSilence, pcmTone, startFakeAssemblyAi } from './assemblyai-server.ts'

// The word-role tests trust the fake's `spokenWords` mode to behave like a VAD-driven ASR on a mixed
// track: overlapping speakers in one turn, each word at the time it was spoken. Checked here with a
// bare `ws` client.

const KEY = 'fake-key'
const QUERY = 'speech_model=u3-rt-pro&sample_rate=8000&encoding=pcm_s16le&speaker_labels=true&min_turn_silence=400&max_turn_silence=1200'

test('fake merges overlapping speakers into one turn and gives each word its spoken time and speaker in spokenWords mode', async (t) => {
  const spokenWords = [
    { text: 'Hello', startMs: 0, endMs: 400, speaker: 'A' },
    { text: 'there.', startMs: 450, endMs: 900, speaker: 'A' },
    // B barges in at 800 ms, while A is still speaking.
    { text: 'Hi,', startMs: 800, endMs: 1200, speaker: 'B' },
    { text: 'how', startMs: 1250, endMs: 1500, speaker: 'B' },
    { text: 'are', startMs: 1550, endMs: 1700, speaker: 'B' },
    { text: 'you?', startMs: 1750, endMs: 2000, speaker: 'B' },
    // Spoken into silence the fake never hears as speech: lost, as below a real VAD's threshold.
    { text: 'lost', startMs: 2500, endMs: 2600, speaker: 'B' },
    { text: 'Fine.', startMs: 3500, endMs: 4000, speaker: 'A' }
  ]
  const server = await startFakeAssemblyAi({ apiKeys: [KEY], spokenWords })
  t.after(() => server.close())
  const ws = new WebSocket(`${server.url}?${QUERY}`, { headers: { Authorization: KEY } })
  t.after(() => { ws.terminate() })
  const messages: Array<Record<string, unknown>> = []
  ws.on('message', (data) => { messages.push(JSON.parse(String(data)) as Record<string, unknown>) })
  const closed = new Promise<void>((resolve) => { ws.on('close', () => { resolve() }) })
  await new Promise<void>((resolve, reject) => { ws.once('open', () => { resolve() }); ws.once('error', reject) })

  // Speech 0–2000 ms (both speakers on the mix), silence, speech 3500–4000 ms.
  const audio = Buffer.concat([pcmTone(2000), pcmSilence(1500), pcmTone(500), pcmSilence(1000)])
  for (const frame of pcmFrames(audio, 50)) ws.send(frame)
  ws.send(JSON.stringify({ type: 'Terminate' }))
  await closed

  const finals = messages.filter((message) => message.type === 'Turn' && message.end_of_turn === true)
  assert.equal(finals.length, 2, 'the overlap is one turn, the later speech another')
  const [first, second] = finals as Array<{ transcript: string, speaker_label: string, words: Array<{ text: string, start: number, end: number, speaker: string }> }>
  assert.equal(first!.transcript, 'Hello there. Hi, how are you?')
  assert.deepEqual(first!.words.map((word) => [word.text, word.start, word.end, word.speaker]), spokenWords.slice(0, 6).map((word) => [word.text, word.startMs, word.endMs, word.speaker]))
  assert.equal(first!.speaker_label, 'B', 'the turn\'s label is the speaker holding most of its words\' duration')
  assert.equal(second!.transcript, 'Fine.')
  assert.equal(second!.speaker_label, 'A')
  const partials = messages.filter((message) => message.type === 'Turn' && message.end_of_turn === false) as Array<{ words: Array<{ text: string, speaker?: string }> }>
  assert.ok(partials.length > 0)
  assert.ok(partials.every((partial) => partial.words.every((word) => word.speaker === undefined)), 'partials carry no speaker labels')
})
