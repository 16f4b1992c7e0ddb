import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Histogram, Registry } from 'prom-client'
import { HotHistogram, createMetrics } from '../../src/core/metrics.ts'
import { prng } from '../helpers/prng.ts'

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]

/** prom-client's Histogram and a HotHistogram with the same name and buckets, each on its own registry. */
function pair (): { reference: Histogram, hot: HotHistogram, text: () => Promise<[string, string]> } {
  const referenceRegistry = new Registry()
  const hotRegistry = new Registry()
  const config = { name: 'medstream_test_latency_seconds', help: 'A test histogram.', buckets: BUCKETS }
  const reference = new Histogram({ ...config, registers: [referenceRegistry] })
  const hot = new HotHistogram({ ...config, registers: [hotRegistry] })
  return { reference, hot, text: async () => [await hotRegistry.metrics(), await referenceRegistry.metrics()] }
}

test('HotHistogram exposes the same text as prom-client\'s Histogram when given the same observations', async () => {
  const { reference, hot, text } = pair()
  const [emptyHot, emptyReference] = await text()
  assert.equal(emptyHot, emptyReference, 'before any observation: every series at 0')
  assert.match(emptyHot, /medstream_test_latency_seconds_bucket\{le="\+Inf"\} 0/)

  const random = prng(7)
  // Exact bounds (le is inclusive), zero, negatives, values far beyond the last bound, and a spread.
  const values = [...BUCKETS, 0, -0.5, 7, 1e9, ...Array.from({ length: 5000 }, () => random() * random() * 0.2)]
  for (const value of values) {
    reference.observe(value)
    hot.observe(value)
  }
  const [hotText, referenceText] = await text()
  assert.equal(hotText, referenceText)
  assert.match(hotText, new RegExp(`medstream_test_latency_seconds_count ${values.length}\\n`))
  assert.match(hotText, /medstream_test_latency_seconds_bucket\{le="0.001"\} \d+/)

  reference.reset()
  hot.reset()
  const [resetHot, resetReference] = await text()
  assert.equal(resetHot, resetReference, 'after reset: no series until the next observation')
  reference.observe(0.004)
  hot.observe(0.004)
  const [againHot, againReference] = await text()
  assert.equal(againHot, againReference)
  assert.match(againHot, /medstream_test_latency_seconds_count 1\n/)
})

test('HotHistogram refuses a value that is not a finite number with a TypeError and counts nothing', async () => {
  const { hot, text } = pair()
  const [before] = await text()
  for (const value of [Number.NaN, Infinity, -Infinity]) {
    assert.throws(() => hot.observe(value), { name: 'TypeError', message: /not a valid number/ })
  }
  assert.equal((await text())[0], before)
  assert.throws(() => new HotHistogram({ name: 'x', help: 'x', buckets: [] }), RangeError)
  assert.throws(() => new HotHistogram({ name: 'x', help: 'x', buckets: [1, 1] }), RangeError)
})

test('createMetrics registers the bridge latency histogram with its contract buckets when the registry is scraped', async () => {
  const registry = new Registry()
  const metrics = createMetrics(registry, 'test')
  metrics.bridgeLatency.observe(0.003)
  const text = await registry.metrics()
  assert.match(text, /# TYPE medstream_bridge_latency_seconds histogram/)
  const buckets = [...text.matchAll(/medstream_bridge_latency_seconds_bucket\{le="([^"]+)"\} (\d+)/g)].map((m) => [m[1], Number(m[2])])
  assert.deepEqual(buckets, [['0.001', 0], ['0.0025', 0], ['0.005', 1], ['0.01', 1], ['0.025', 1], ['0.05', 1], ['0.1', 1], ['+Inf', 1]])
  assert.throws(() => new HotHistogram({ name: 'medstream_bridge_latency_seconds', help: 'again', buckets: BUCKETS, registers: [registry] }), /already been registered/)
})
