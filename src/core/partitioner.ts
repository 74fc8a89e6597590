import assert from 'node:assert/strict'
import murmurhash from 'murmurhash'

export const defaultPartitionCount = 256

export function assertPartitionCount(count: number): void {
  assert.ok(
    Number.isInteger(count) && count >= 1 && count <= 32768 && (count & (count - 1)) === 0,
    `partition count must be a power of two between 1 and 32768, got ${count}`,
  )
}

/**
 * partition(key) = murmur3_32(key, seed 0) >>> (32 - log2 P): the top bits of the hash, so
 * partition i owns one contiguous range of the hash space.
 */
export function partitionOf(key: Uint8Array, partitionCount: number): number {
  if (partitionCount === 1) return 0
  const shift = 32 - Math.log2(partitionCount)
  return murmurhash.v3(key, 0) >>> shift
}
