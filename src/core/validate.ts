import { KumoError } from './errors.js'
import { batchBytesMax, batchOpsMax, getManyKeysMax, keyBytesMax, valueBytesMax } from './limits.js'
import { RecordFlags } from './record.js'
import { hlcBytes, nodeIdBytesMax } from './version.js'

export type Bytes = string | Uint8Array

/** A key or value as a Buffer sharing memory with the input where possible. */
export function toBuffer(value: Bytes, what: string): Buffer {
  if (typeof value === 'string') return Buffer.from(value, 'utf8')
  if (Buffer.isBuffer(value)) return value
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  throw new KumoError('INVALID_ARGUMENT', `${what} must be a string or Uint8Array, got ${typeof value}`)
}

export function checkKey(key: Uint8Array): void {
  if (key.length === 0) throw new KumoError('INVALID_ARGUMENT', 'key must not be empty')
  if (key.length > keyBytesMax) {
    throw new KumoError('INVALID_ARGUMENT', `key is ${key.length} bytes; the limit is ${keyBytesMax}`)
  }
}

export function checkValue(value: Uint8Array): void {
  if (value.length > valueBytesMax) {
    throw new KumoError('INVALID_ARGUMENT', `value is ${value.length} bytes; the limit is ${valueBytesMax} (1 MiB)`)
  }
}

export function checkTtl(ttlMs: number): void {
  if (!Number.isInteger(ttlMs) || ttlMs < 0 || ttlMs > 2 ** 32 - 1) {
    throw new KumoError('INVALID_ARGUMENT', `ttlMs must be a whole number of milliseconds, got ${ttlMs}`)
  }
}

export interface BatchOpSize {
  key: Uint8Array
  value?: Uint8Array | undefined
}

export function checkBatch(ops: readonly BatchOpSize[]): void {
  if (ops.length > batchOpsMax) {
    throw new KumoError('INVALID_ARGUMENT', `batch has ${ops.length} operations; the limit is ${batchOpsMax}`)
  }
  let bytes = 0
  for (const op of ops) {
    checkKey(op.key)
    if (op.value !== undefined) checkValue(op.value)
    bytes += op.key.length + (op.value?.length ?? 0)
  }
  if (bytes > batchBytesMax) {
    throw new KumoError('INVALID_ARGUMENT', `batch is ${bytes} bytes; the limit is ${batchBytesMax} (4 MiB)`)
  }
}

export function checkGetMany(count: number): void {
  if (count > getManyKeysMax) {
    throw new KumoError('INVALID_ARGUMENT', `getMany has ${count} keys; the limit is ${getManyKeysMax}`)
  }
}

export function checkTimeout(timeoutMs: number): void {
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > 3_600_000) {
    throw new KumoError('INVALID_ARGUMENT', `timeoutMs must be between 1 and 3600000, got ${timeoutMs}`)
  }
}

/**
 * How far ahead of the cluster's clock (as the receiving node measures it) a stored version may
 * be, whoever stamped it: a version further ahead would sort above every correct write to its
 * key until the clocks caught up. The HLC's drift bound is the same, so no write pulls a
 * correct node's clock further forward than this.
 */
export const versionAheadMsMax = 60_000

/**
 * A record's version is at most versionAheadMsMax ahead of `nowMs`; `writer` names who stamped
 * it, for the error (`index`: its place in the request). Read in place: this runs for every
 * stored record.
 */
export function checkVersionAhead(record: Buffer, index: number, nowMs: number, writer: string): void {
  if (record.length < 1 + hlcBytes) throw new KumoError('INVALID_ARGUMENT', `record ${index}: malformed header`)
  const aheadMs = record.readUIntBE(1, 6) - nowMs
  if (aheadMs > versionAheadMsMax) {
    throw new KumoError(
      'INVALID_ARGUMENT',
      `record ${index}: its version is ${(aheadMs / 1000).toFixed(1)} s ahead of the cluster's clock (limit ${versionAheadMsMax / 1000} s); check ${writer}'s system time`,
    )
  }
}

/**
 * Versioned records sent by a client that coordinates its own writes: well-formed, within the
 * batch limits, and stamped no further ahead of `nowMs` (the cluster's clock) than
 * versionAheadMsMax. Returns the
 * newest version among them (for the node's clock to observe).
 */
export function checkRecords(keys: readonly Uint8Array[], records: readonly Buffer[], nowMs: number): Buffer | undefined {
  if (keys.length !== records.length) {
    throw new KumoError('INVALID_ARGUMENT', `${keys.length} keys but ${records.length} records`)
  }
  if (keys.length > batchOpsMax) {
    throw new KumoError('INVALID_ARGUMENT', `request has ${keys.length} records; the limit is ${batchOpsMax}`)
  }
  let bytes = 0
  let newest: Buffer | undefined
  let newestEnd = 0
  for (let i = 0; i < keys.length; i++) {
    checkKey(keys[i]!)
    const record = records[i]!
    // The header is read in place (this runs for every record a client sends).
    const versionBytes = record.length > 0 ? record[0]! : 0
    if (versionBytes <= hlcBytes || versionBytes > hlcBytes + nodeIdBytesMax || record.length < 2 + versionBytes) {
      throw new KumoError('INVALID_ARGUMENT', `record ${i}: malformed header (version of ${versionBytes} bytes in a record of ${record.length})`)
    }
    const flags = record[1 + versionBytes]!
    const valueAt = 2 + versionBytes + (flags & RecordFlags.EXPIRES ? 6 : 0)
    if ((flags & ~(RecordFlags.TOMBSTONE | RecordFlags.EXPIRES)) !== 0 || valueAt > record.length) {
      throw new KumoError('INVALID_ARGUMENT', `record ${i}: malformed flags or expiry`)
    }
    if (flags & RecordFlags.TOMBSTONE && valueAt !== record.length) {
      throw new KumoError('INVALID_ARGUMENT', `record ${i}: a tombstone carries no value`)
    }
    if (record.length - valueAt > valueBytesMax) {
      throw new KumoError('INVALID_ARGUMENT', `record ${i}: value is ${record.length - valueAt} bytes; the limit is ${valueBytesMax} (1 MiB)`)
    }
    checkVersionAhead(record, i, nowMs, 'the client')
    if (newest === undefined || record.compare(newest, 1, newestEnd, 1, 1 + versionBytes) > 0) {
      newest = record
      newestEnd = 1 + versionBytes
    }
    bytes += keys[i]!.length + record.length
  }
  if (bytes > batchBytesMax + batchOpsMax * 96) {
    throw new KumoError('INVALID_ARGUMENT', `request is ${bytes} bytes; the limit is ${batchBytesMax} (4 MiB) plus record headers`)
  }
  return newest?.subarray(1, newestEnd)
}
