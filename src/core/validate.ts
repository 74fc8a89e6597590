import { KumoError } from './errors.js'
import { batchBytesMax, batchOpsMax, getManyKeysMax, keyBytesMax, valueBytesMax } from './limits.js'

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
