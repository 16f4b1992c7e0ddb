import { endianness } from 'node:os'
import { copyInto } from './mixer.ts'
import type { MixOutput } from './mixer.ts'

// Chunks are filled through an Int16Array view, which writes the platform's byte order; AssemblyAI
// wants pcm_s16le. Every platform Node ships for is little-endian, but say so if that ever changes.
if (endianness() !== 'LE') throw new Error('medstream needs a little-endian platform (PCM16 chunks are written in native order)')

/** AssemblyAI's streaming API accepts binary audio messages of 50 to 1000 ms. */
const MIN_CHUNK_MS = 50
const MAX_CHUNK_MS = 1000

/**
 * Chunk buffers of one size handed back once nothing can read them any more, for the next chunker
 * that needs one. Every chunk is its own ArrayBuffer (see Chunker.push); allocated fresh, ~20 a
 * second per call, they live a few seconds in the replay and so die in the old generation, where
 * their memory waits for a full GC: tens of MiB of RSS at a few hundred calls, and GC time. Reused,
 * they are allocated once. Bounded: beyond `capacity` free buffers, released ones are left to the GC.
 */
export class ChunkPool {
  readonly bytes: number
  readonly capacity: number
  readonly #free: Buffer[] = []

  constructor (bytes: number, capacity = 4096) {
    if (!Number.isInteger(bytes) || bytes < 2 || bytes % 2 !== 0) throw new RangeError(`ChunkPool: bytes must be a positive even integer, got ${bytes}`)
    this.bytes = bytes
    this.capacity = capacity
  }

  /** Free buffers held. */
  get size (): number { return this.#free.length }

  /** A buffer of `bytes` bytes at offset 0 of its own ArrayBuffer; its contents are stale. */
  acquire (): Buffer {
    return this.#free.pop() ?? Buffer.allocUnsafeSlow(this.bytes)
  }

  /**
   * Hands back a whole chunk (not a flushed tail: a view of part of a buffer is ignored). The
   * caller promises that nothing will read it again: no socket queue, no replay.
   */
  release (chunk: Buffer): void {
    if (chunk.length !== this.bytes || chunk.byteOffset !== 0 || chunk.buffer.byteLength !== this.bytes || this.#free.length >= this.capacity) return
    this.#free.push(chunk)
  }
}

const pools = new Map<number, ChunkPool>()

/** The process's pool for chunks of `bytes` bytes (one AUDIO_CHUNK_MS in practice). */
export function sharedChunkPool (bytes: number): ChunkPool {
  let pool = pools.get(bytes)
  if (pool === undefined) {
    pool = new ChunkPool(bytes)
    pools.set(bytes, pool)
  }
  return pool
}

/**
 * Cuts a PCM16 stream into chunks of exactly `chunkMs` (AUDIO_CHUNK_MS), as little-endian bytes ready
 * to send. Each chunk is a Buffer of its own (fresh, or from `pool`) whose ownership passes to
 * `onChunk`, so the sender may queue it, and hand it back to the pool when done; at most one partial
 * chunk is held here.
 */
export class Chunker implements MixOutput {
  readonly chunkMs: number
  readonly sampleRate: number
  readonly #chunkSamples: number
  readonly #onChunk: (chunk: Buffer, startSample: number) => void
  #chunk: Buffer | null = null
  /** #chunk's bytes as samples: PCM16 little-endian is the platform's own layout (checked at load). */
  #view: Int16Array | null = null
  /** Samples written into #chunk. */
  #filled = 0
  #emitted = 0
  readonly #pool: ChunkPool | null

  /**
   * @param chunkMs length of every chunk but a flushed tail, in ms; an integer from 50 to 1000.
   * @param onChunk receives each chunk and its first sample's position in this chunker's output
   *   (0-based, counting padding); not the call timeline, to which the caller adds its own origin.
   * @param sampleRate samples per second; default 8000 (50 ms = 400 samples = 800 bytes).
   * @param pool where chunk buffers come from; null: each is allocated.
   */
  constructor (chunkMs: number, onChunk: (chunk: Buffer, startSample: number) => void, sampleRate = 8000, pool: ChunkPool | null = null) {
    if (!Number.isInteger(chunkMs) || chunkMs < MIN_CHUNK_MS || chunkMs > MAX_CHUNK_MS) {
      throw new RangeError(`Chunker: chunkMs must be an integer from ${MIN_CHUNK_MS} to ${MAX_CHUNK_MS} (AssemblyAI's limits; see AUDIO_CHUNK_MS), got ${chunkMs}`)
    }
    if (!Number.isInteger(sampleRate) || sampleRate % 1000 !== 0 || sampleRate < 8000 || sampleRate > 48000) {
      throw new RangeError(`Chunker: sampleRate must be a multiple of 1000 from 8000 to 48000, got ${sampleRate}`)
    }
    if (typeof onChunk !== 'function') throw new TypeError('Chunker: onChunk must be a function')
    this.chunkMs = chunkMs
    this.sampleRate = sampleRate
    this.#chunkSamples = chunkMs * sampleRate / 1000
    this.#onChunk = onChunk
    if (pool !== null && pool.bytes !== this.#chunkSamples * 2) throw new RangeError(`Chunker: the pool's buffers are ${pool.bytes} bytes, chunks ${this.#chunkSamples * 2}`)
    this.#pool = pool
  }

  /** Samples handed to onChunk so far, flushed tails and their padding included. */
  get emittedSamples (): number {
    return this.#emitted
  }

  /** Appends `samples[0..length)`; every chunk this completes goes to onChunk before push returns. */
  push (samples: Int16Array, length: number): void {
    if (!(length >= 0) || length > samples.length) {
      throw new RangeError(`Chunker.push: length ${length} is outside the ${samples.length}-sample array`)
    }
    copyInto(this, samples, length)
  }

  /**
   * The chunk being filled, as samples, for a writer that produces them in place (the aligner mixes
   * straight into it): write at `filled`, at most `room` samples, then `commit`. Takes a buffer
   * (fresh, or from the pool) when none is held.
   */
  target (): Int16Array {
    if (this.#view === null) {
      // Its own ArrayBuffer (not a slice of Node's 8 KiB pool): chunks kept for a replay then hold
      // only their own 800 bytes alive, and the Int16Array view needs the aligned offset 0.
      this.#chunk = this.#pool === null ? Buffer.allocUnsafeSlow(this.#chunkSamples * 2) : this.#pool.acquire()
      this.#view = new Int16Array(this.#chunk.buffer, 0, this.#chunkSamples)
    }
    return this.#view
  }

  /** Samples written into the chunk being filled. */
  get filled (): number {
    return this.#filled
  }

  /** Samples the chunk being filled still takes. */
  get room (): number {
    return this.#chunkSamples - this.#filled
  }

  /** `count` samples were written into `target()` at `filled`; a chunk this completes goes to onChunk now. */
  commit (count: number): void {
    if (this.#view === null || !(count >= 0) || count > this.#chunkSamples - this.#filled) {
      throw new RangeError(`Chunker.commit: ${count} samples do not fit the chunk (${this.#view === null ? 'none held' : `${this.#chunkSamples - this.#filled} samples of room`})`)
    }
    this.#filled += count
    if (this.#filled === this.#chunkSamples) this.#emit(this.#chunk as Buffer, this.#chunkSamples)
  }

  /**
   * Sends what is held as a last, shorter chunk, padded with silence to at least `minTailMs`
   * (0..chunkMs, default 50: AssemblyAI's shortest message); nothing when nothing is held.
   * The chunker stays usable afterwards.
   */
  flush (minTailMs = MIN_CHUNK_MS): void {
    if (!Number.isFinite(minTailMs) || minTailMs < 0 || minTailMs > this.chunkMs) {
      throw new RangeError(`Chunker.flush: minTailMs must be from 0 to chunkMs (${this.chunkMs}), got ${minTailMs}`)
    }
    const chunk = this.#chunk
    if (chunk === null || this.#filled === 0) return
    const samples = Math.max(this.#filled, Math.ceil(minTailMs * this.sampleRate / 1000))
    chunk.fill(0, this.#filled * 2, samples * 2)
    this.#emit(samples === this.#chunkSamples ? chunk : chunk.subarray(0, samples * 2), samples)
  }

  #emit (chunk: Buffer, samples: number): void {
    const start = this.#emitted
    this.#chunk = null
    this.#view = null
    this.#filled = 0
    this.#emitted += samples
    this.#onChunk(chunk, start)
  }
}
