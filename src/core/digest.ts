import murmurhash from 'murmurhash'

/**
 * Anti-entropy digests. A partition's (key, version) pairs fall into `leafCount` leaves by a
 * hash of the key; a leaf's hash is the XOR of its entries' hashes, so it does not depend on
 * the order entries are visited, and two replicas agree on a leaf exactly when (barring a
 * 2^-32 collision) they hold the same versions of the same keys in it. Replicas exchange leaf
 * hashes (a flat Merkle tree: 1 KiB per partition at 256 leaves) and then only the keys of
 * the leaves that differ.
 */
export const leafCountDefault = 256
const leafSeed = 0x1eaf
const entrySeed = 0xe7e7

export function leafOf(key: Uint8Array, leafCount: number): number {
  return murmurhash.v3(key, leafSeed) % leafCount
}

export function entryHash(key: Uint8Array, version: Uint8Array): number {
  return murmurhash.v3(version, murmurhash.v3(key, entrySeed))
}

export class LeafHasher {
  readonly hashes: Uint32Array
  constructor(readonly leafCount = leafCountDefault) {
    this.hashes = new Uint32Array(leafCount)
  }
  add(key: Uint8Array, version: Uint8Array): void {
    const leaf = leafOf(key, this.leafCount)
    this.hashes[leaf] = (this.hashes[leaf]! ^ entryHash(key, version)) >>> 0
  }
}

/** Leaves whose hashes differ. */
export function differingLeaves(a: ArrayLike<number>, b: ArrayLike<number>): number[] {
  const out: number[] = []
  const n = Math.max(a.length, b.length)
  for (let i = 0; i < n; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) out.push(i)
  return out
}

export interface KeyVersion {
  key: Buffer
  version: Buffer
}

/**
 * What to exchange, given both sides' (key, version) lists for the differing leaves: keys to
 * pull (the peer's version is newer or only the peer has it) and keys to push.
 */
export function planExchange(mine: readonly KeyVersion[], theirs: readonly KeyVersion[]): { pull: Buffer[]; push: Buffer[] } {
  const ours = new Map<string, Buffer>()
  for (const e of mine) ours.set(e.key.toString('latin1'), e.version)
  const pull: Buffer[] = []
  const push: Buffer[] = []
  const seen = new Set<string>()
  for (const e of theirs) {
    const id = e.key.toString('latin1')
    seen.add(id)
    const version = ours.get(id)
    if (version === undefined || Buffer.compare(e.version, version) > 0) pull.push(e.key)
    else if (Buffer.compare(e.version, version) < 0) push.push(e.key)
  }
  for (const e of mine) if (!seen.has(e.key.toString('latin1'))) push.push(e.key)
  return { pull, push }
}
