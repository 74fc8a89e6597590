import { KumoError, toKumoError } from '../core/errors.js'
import { batchBytesMax, batchOpsMax, keyBytesMax, valueBytesMax } from '../core/limits.js'
import { LoadWindow } from '../core/load-window.js'
import { withRetry } from './retry.js'

type Bytes = string | Uint8Array

/** One record of a bulk load. */
export interface LoadRecord {
  key: Bytes
  value: Bytes
  /** Expire the record this many ms after it is written (0 or absent: never). */
  ttlMs?: number
}

/** Where a bulk load stands. */
export interface LoadProgress {
  /** Records acknowledged so far (by the consistency level asked for). */
  records: number
  /** Their keys' and values' bytes. */
  bytes: number
  /** Batches sent again after a retryable error. */
  retried: number
  /** Batches allowed in flight now: `concurrency`, halved by a retry (once a stall: see LoadWindow), one more per that many batches acknowledged since. */
  inFlightLimit: number
  /** Since the load began. */
  seconds: number
}

export interface LoadOptions {
  /** Records per batch at most (default 500; at most 1,000). A batch also ends past ~3 MiB (so the next record cannot take it over the 4 MiB limit). */
  batchSize?: number
  /** Batches in flight at once at most (default 16); fewer for a while after a retry (LoadProgress.inFlightLimit). */
  concurrency?: number
  /** How long one batch is retried after retryable errors before the load fails (default 60 s). */
  retryTimeoutMs?: number
  /** Told after every batch acknowledged. */
  onProgress?: (progress: LoadProgress) => void
  /** Told of every retryable error a batch is retried after, with where the load stands then (its window already halved). */
  onRetry?: (error: KumoError, progress: LoadProgress) => void
}

/** What a batch of a load is sent as (Kumo.batch with the load's options). */
export type LoadBatch = (ops: { type: 'put'; key: Bytes; value: Bytes; ttlMs?: number }[]) => Promise<void>

/** Thrown into a batch's retries once the load has failed: not retryable, so they end at once. */
const loadStopped = new KumoError('INTERNAL', 'the load stopped: another batch failed')

const byteLength = (b: Bytes): number => (typeof b === 'string' ? Buffer.byteLength(b) : b.byteLength)

/**
 * Loads records from an iterable (or async iterable: a file read line by line, say) as batches
 * of many records, up to `concurrency` batches in flight, each retried on what the cluster could not
 * do at that moment (UNAVAILABLE, OVERLOADED, NOT_SERVING, TIMEOUT) for up to retryTimeoutMs,
 * so that a load of millions of records rides out a slow moment rather than abort. A retry also
 * halves the batches allowed in flight (once a stall: retries of batches sent before the last
 * halving do not halve it again), which grow back one at a time as batches are acknowledged
 * (LoadWindow): a cluster that fell behind gets room to catch up instead of a queue it cannot
 * drain. Records are taken from the source only as batches are sent, so memory holds at most
 * `concurrency` batches.
 *
 * A batch that fails for good (bad input, or retries past their time) stops the load: batches
 * in flight finish their attempt and are not retried, no new one is sent, and the error says
 * which records the batch held (counted from 0 in the source's order). Records of other batches may be loaded. Batches in flight
 * are not ordered with each other: a key given twice in a load may end up with either value.
 */
export async function bulkLoad(
  sendBatch: LoadBatch,
  source: Iterable<LoadRecord> | AsyncIterable<LoadRecord>,
  options: LoadOptions = {},
): Promise<LoadProgress> {
  const batchSize = options.batchSize ?? 500
  const concurrency = options.concurrency ?? 16
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > batchOpsMax) throw new KumoError('INVALID_ARGUMENT', `load batchSize must be a whole number from 1 to ${batchOpsMax}`)
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) throw new KumoError('INVALID_ARGUMENT', 'load concurrency must be a whole number from 1 to 256')
  if (source === null || typeof source !== 'object' || (!(Symbol.iterator in source) && !(Symbol.asyncIterator in source))) {
    throw new KumoError('INVALID_ARGUMENT', 'load takes an iterable or async iterable of { key, value } records')
  }
  const iterator: Iterator<LoadRecord> | AsyncIterator<LoadRecord> = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]()
  const started = performance.now()
  const progress: LoadProgress = { records: 0, bytes: 0, retried: 0, inFlightLimit: concurrency, seconds: 0 }
  const window = new LoadWindow(concurrency)
  // Batches taken and not yet acknowledged or failed, and the workers waiting for the window
  // to have room for one more.
  let inFlight = 0
  let waitingForRoom: (() => void)[] = []
  const roomChanged = (): void => {
    const waiting = waitingForRoom
    waitingForRoom = []
    for (const wake of waiting) wake()
  }
  // A batch ends before the next record could take it past the batch limit (the largest
  // record is a largest key and value).
  const bytesRoom = batchBytesMax - keyBytesMax - valueBytesMax
  let taken = 0
  let exhausted = false
  let failure: unknown
  // One reader of the source at a time: workers take their batches in turn.
  let reading: Promise<unknown> = Promise.resolve()
  const takeBatch = (): Promise<{ first: number; ops: Parameters<LoadBatch>[0]; bytes: number } | undefined> => {
    const next = reading.then(async () => {
      if (exhausted || failure !== undefined) return undefined
      const ops: Parameters<LoadBatch>[0] = []
      let bytes = 0
      const first = taken
      while (ops.length < batchSize) {
        const step = await iterator.next()
        if (step.done === true) {
          exhausted = true
          break
        }
        const record = step.value
        if (record === null || typeof record !== 'object') throw new KumoError('INVALID_ARGUMENT', `load record ${taken} is not a { key, value } object`)
        const size = byteLength(record.key) + byteLength(record.value)
        ops.push({ type: 'put', key: record.key, value: record.value, ...(record.ttlMs ? { ttlMs: record.ttlMs } : {}) })
        taken++
        bytes += size
        if (bytes > bytesRoom) break
      }
      return ops.length === 0 ? undefined : { first, ops, bytes }
    })
    // A source that fails stops the load at once: no batch is taken after it.
    reading = next.catch((err: unknown) => {
      failure ??= err
    })
    return next
  }
  const worker = async (): Promise<void> => {
    for (;;) {
      while (inFlight >= window.limit && failure === undefined) await new Promise<void>((resolve) => waitingForRoom.push(resolve))
      inFlight++
      try {
        const batch = await takeBatch()
        // Nothing is sent once a batch has failed, even one taken before it failed.
        if (batch === undefined || failure !== undefined) return
        let attempt = -1
        try {
          await withRetry(
            () => {
              // A batch waiting to be retried when another failed for good is not sent again.
              if (failure !== undefined) return Promise.reject(loadStopped)
              attempt = window.sent()
              return sendBatch(batch.ops)
            },
            {
              timeoutMs: options.retryTimeoutMs ?? 60_000,
              onRetry: (error) => {
                progress.retried++
                window.retried(attempt)
                progress.inFlightLimit = window.limit
                progress.seconds = (performance.now() - started) / 1000
                options.onRetry?.(error, { ...progress })
              },
            },
          )
        } catch (err) {
          const error = toKumoError(err)
          failure ??= new KumoError(error.code, `load: the batch of records ${batch.first} to ${batch.first + batch.ops.length - 1} failed: ${error.message}`, { cause: err })
          return
        }
        window.acknowledged()
        progress.inFlightLimit = window.limit
        progress.records += batch.ops.length
        progress.bytes += batch.bytes
        progress.seconds = (performance.now() - started) / 1000
        options.onProgress?.({ ...progress })
      } finally {
        // The batch is done (or none was taken): its room goes to a waiting worker, which sees
        // the window as the acknowledgement left it.
        inFlight--
        roomChanged()
      }
    }
  }
  const workers = Array.from({ length: concurrency }, () =>
    worker().catch((err: unknown) => {
      failure ??= err
    }),
  )
  await Promise.all(workers)
  if (failure !== undefined) {
    try {
      await (iterator as AsyncIterator<LoadRecord>).return?.()
    } catch {
      // The source's own cleanup failed: the load's error is the one to report.
    }
    throw toKumoError(failure)
  }
  progress.seconds = (performance.now() - started) / 1000
  return progress
}
