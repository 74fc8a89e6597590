import { KumoError } from './errors.js'
import { batchBytesMax, batchOpsMax, getManyKeysMax, keyBytesMax, valueBytesMax } from './limits.js'
import { decodeRecord, type DecodedRecord } from './record.js'
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

/** How far ahead of a node's clock a client-stamped version may be (the HLC's drift bound). */
export const clientVersionAheadMsMax = 60_000

/**
 * Versioned records sent by a client that coordinates its own writes: well-formed, within the
 * batch limits, and stamped no further ahead of `nowMs` than a clock may drift. Returns the
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
  for (let i = 0; i < keys.length; i++) {
    checkKey(keys[i]!)
    let decoded: DecodedRecord
    try {
      decoded = decodeRecord(records[i]!)
    } catch (err) {
      throw new KumoError('INVALID_ARGUMENT', `record ${i}: ${(err as Error).message}`)
    }
    checkValue(decoded.value)
    if (decoded.version.length <= hlcBytes || decoded.version.length > hlcBytes + nodeIdBytesMax) {
      throw new KumoError('INVALID_ARGUMENT', `record ${i}: version is ${decoded.version.length} bytes`)
    }
    const aheadMs = decoded.version.readUIntBE(0, 6) - nowMs
    if (aheadMs > clientVersionAheadMsMax) {
      throw new KumoError('INVALID_ARGUMENT', `record ${i}: its version is ${aheadMs} ms ahead of this node's clock (limit ${clientVersionAheadMsMax} ms); check the client's system time`)
    }
    if (newest === undefined || Buffer.compare(decoded.version, newest) > 0) newest = decoded.version
    bytes += keys[i]!.length + records[i]!.length
  }
  if (bytes > batchBytesMax + batchOpsMax * 96) {
    throw new KumoError('INVALID_ARGUMENT', `request is ${bytes} bytes; the limit is ${batchBytesMax} (4 MiB) plus record headers`)
  }
  return newest
}
