/**
 * The call timeline's units. Twilio's μ-law is 8 kHz mono, and the whole pipeline (aligner, chunker,
 * upstream, turn times) counts 8 kHz samples; these are the one place that turns them into ms,
 * seconds or PCM16 bytes.
 */
export const TWILIO_SAMPLE_RATE = 8000

const SAMPLES_PER_MS = TWILIO_SAMPLE_RATE / 1000

/** Samples of 8 kHz audio → ms (fractional; round where a whole number is reported). */
export function samplesToMs (samples: number): number {
  return samples / SAMPLES_PER_MS
}

/** ms → samples of 8 kHz audio. */
export function msToSamples (ms: number): number {
  return ms * SAMPLES_PER_MS
}

/** Samples of 8 kHz audio → seconds, for the `_seconds` metrics and summaries. */
export function samplesToSeconds (samples: number): number {
  return samples / TWILIO_SAMPLE_RATE
}

/** Bytes of PCM16 (two per sample) → samples. */
export function pcm16BytesToSamples (bytes: number): number {
  return bytes / 2
}
