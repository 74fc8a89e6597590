import assert from 'node:assert/strict'

/** Bytes an entry costs beyond its key and record: the Map slot, the string and Buffer headers. */
export const rowCacheEntryOverhead = 96

const slabBytesMin = 4 * 1024
const slabBytesMax = 256 * 1024

/**
 * The newest records of recently used keys, bounded in bytes. A LevelDB read walks the
 * memtable's skip list and a table block even when both are cached; a hit here is one hash
 * lookup. Keys are stored keys as latin1 strings (one char per byte).
 *
 * Two generations instead of a strict LRU list: entries go into the young map; when it holds
 * half the budget it becomes the old one and the previous old map is dropped whole. A hit in
 * the old map moves the entry back to the young one. Every operation is O(1), with no
 * reordering on a hit (deleting from the front of a Map, as an LRU does, leaves holes that
 * later iterations walk over).
 *
 * Records are copied into shared slabs rather than kept as the Buffers they came in: a full
 * cache is then a few hundred ArrayBuffers instead of one per record, which the garbage
 * collector would otherwise track one by one (measured: a full cache of per-record Buffers cost
 * a write-heavy load after it 15% of its throughput). A slab lives while any entry in it does;
 * a generation is charged every byte copied into it, deleted or not, so slabs stay within the
 * budget plus the one being filled.
 *
 * Admission: while the cache is full (at its last generation change it held three quarters of
 * its budget in live entries, and so dropped entries for room; deletes that leave it under a
 * quarter full end that until the next generation change finds it full again), a record
 * read from storage enters it (fill) only when its key missed recently before, as the
 * doorkeeper of TinyLFU (Einziger et al., 2017) does. Under a uniform read of data far larger
 * than the cache almost every read misses, and filling on every miss spent each read a copy,
 * map inserts and, when a generation was dropped whole, the collector's time, for a hit rate of
 * a few percent; a key read twice within the doorkeeper's window (about as many misses as the
 * cache holds entries) is cached as before. Until the cache is full every record read enters:
 * data that fits is all cached, as before.
 *
 * The engine keeps it equal to what is committed: it fills entries from synchronous reads,
 * and from thread-pool reads only when no commit finished while they ran; it forgets every
 * key a commit writes or deletes, a partition's keys as it clears them
 * (see ClassicLevelEngine). Dropping an entry is always safe; the cache never decides anything.
 */
export class RowCache {
  private young = new Map<string, Buffer>()
  private old = new Map<string, Buffer>()
  private youngBytes = 0
  private oldBytes = 0
  /** Bytes copied into slabs since the young generation began, deleted or not. */
  private youngCharged = 0
  private slab = Buffer.alloc(0)
  private slabUsed = 0
  private readonly slabBytes: number
  private readonly doorkeeper: Doorkeeper
  /** Whether the cache was full at its last generation change: admission applies (see fill). */
  private full = false
  /** Lookups answered from the cache, and not, since start (for metrics). */
  hits = 0
  misses = 0

  constructor(readonly bytesMax: number) {
    assert.ok(Number.isSafeInteger(bytesMax) && bytesMax >= 0, 'row cache size is a whole number of bytes')
    this.slabBytes = Math.min(slabBytesMax, Math.max(slabBytesMin, Math.floor(bytesMax / 64)))
    this.doorkeeper = new Doorkeeper(Math.max(doorkeeperWindowMin, Math.min(doorkeeperKeysMax, Math.floor(bytesMax / (rowCacheEntryOverhead + 64)))))
  }

  /**
   * A record just read from storage for `id`: cached while the cache is not full, and then if
   * its key missed recently before (see admission above), else only remembered as missed.
   * Returns whether it was cached (a record larger than half the budget never is).
   */
  fill(id: string, record: Buffer): boolean {
    if (entryCost(id, record) * 2 > this.bytesMax) return false
    // Deletes (writes, dropped partitions) that left it under a quarter full end admission until
    // a generation change finds it full again.
    if (this.full && this.usedBytes * 4 < this.bytesMax) this.full = false
    // The doorkeeper's window: about as many keys as the budget holds entries at their mean size now.
    if (this.full && !this.doorkeeper.admit(id, Math.max(doorkeeperWindowMin, Math.floor((this.bytesMax * this.size) / Math.max(1, this.usedBytes))))) return false
    this.set(id, record)
    return true
  }

  get enabled(): boolean {
    return this.bytesMax > 0
  }

  get size(): number {
    return this.young.size + this.old.size
  }

  get usedBytes(): number {
    return this.youngBytes + this.oldBytes
  }

  /** The cached record (shared: callers must not modify it). */
  get(id: string): Buffer | undefined {
    const record = this.young.get(id)
    if (record !== undefined) {
      this.hits++
      return record
    }
    const aging = this.old.get(id)
    if (aging === undefined) {
      this.misses++
      return undefined
    }
    this.hits++
    this.set(id, aging)
    return aging
  }

  /** The cached record, if any, without counting a hit or a miss or keeping it longer (a look for a record's header). */
  peek(id: string): Buffer | undefined {
    return this.young.get(id) ?? this.old.get(id)
  }

  has(id: string): boolean {
    return this.young.has(id) || this.old.has(id)
  }

  /** Caches a copy of `record` for `id`. */
  set(id: string, record: Buffer): void {
    this.delete(id)
    const cost = entryCost(id, record)
    if (cost * 2 > this.bytesMax) return
    this.young.set(id, this.copy(record))
    this.youngBytes += cost
    this.youngCharged += cost
    if (this.youngCharged * 2 > this.bytesMax) {
      // Full when what it holds live is near its budget: writes and partition drops that
      // deleted entries leave it with room, and every record read enters again.
      this.full = (this.oldBytes + this.youngBytes) * 4 >= this.bytesMax * 3
      this.old = this.young
      this.oldBytes = this.youngBytes
      this.young = new Map()
      this.youngBytes = 0
      this.youngCharged = 0
    }
  }

  private copy(record: Buffer): Buffer {
    if (record.length * 8 > this.slabBytes) return Buffer.from(record)
    if (this.slab.length - this.slabUsed < record.length) {
      this.slab = Buffer.allocUnsafeSlow(this.slabBytes)
      this.slabUsed = 0
    }
    const out = this.slab.subarray(this.slabUsed, this.slabUsed + record.length)
    record.copy(out)
    this.slabUsed += record.length
    return out
  }

  delete(id: string): void {
    const young = this.young.get(id)
    if (young !== undefined) {
      this.young.delete(id)
      this.youngBytes -= entryCost(id, young)
    }
    const old = this.old.get(id)
    if (old !== undefined) {
      this.old.delete(id)
      this.oldBytes -= entryCost(id, old)
    }
  }

  clear(): void {
    this.doorkeeper.reset()
    this.full = false
    this.young = new Map()
    this.old = new Map()
    this.youngBytes = 0
    this.oldBytes = 0
    this.youngCharged = 0
    this.slab = Buffer.alloc(0)
    this.slabUsed = 0
  }
}

const entryCost = (id: string, record: Buffer): number => id.length + record.length + rowCacheEntryOverhead

/** Keys the doorkeeper remembers at most between resets (its bits: 8 a key, 1 MiB at most)... */
const doorkeeperKeysMax = 1 << 20
/** ...and at least: a cache still filling, or of a few entries, admits what is read twice among this many. */
const doorkeeperWindowMin = 1024

/**
 * Keys that missed recently, as a Bloom filter of 8 bits a key (for up to keysMax keys) and two
 * probes: admit(id, window) says whether `id` (probably) missed since the last reset, and
 * remembers it. It forgets everything once `window` keys were added (the caller's "recently");
 * a false positive only admits a record early.
 */
class Doorkeeper {
  private readonly bits: Uint32Array
  private readonly mask: number
  private added = 0

  constructor(private readonly keysMax: number) {
    let words = 1
    while (words * 32 < keysMax * 8) words *= 2
    this.bits = new Uint32Array(words)
    this.mask = words * 32 - 1
  }

  admit(id: string, window: number): boolean {
    // FNV-1a over the key's bytes (a latin1 string: one char a byte), then murmur3's finalizer,
    // which mixes every bit into the low ones: the first probe from the low bits, the second
    // from the halves swapped.
    let h = 0x811c9dc5
    for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193)
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
    h ^= h >>> 16
    const a = h & this.mask
    const b = (Math.imul(h >>> 16 | (h << 16), 0x9e3779b1) >>> 0) & this.mask
    const seen = (this.bits[a >>> 5]! & (1 << (a & 31))) !== 0 && (this.bits[b >>> 5]! & (1 << (b & 31))) !== 0
    if (seen) return true
    this.bits[a >>> 5] = this.bits[a >>> 5]! | (1 << (a & 31))
    this.bits[b >>> 5] = this.bits[b >>> 5]! | (1 << (b & 31))
    if (++this.added >= Math.min(window, this.keysMax)) this.reset()
    return false
  }

  reset(): void {
    this.bits.fill(0)
    this.added = 0
  }
}
