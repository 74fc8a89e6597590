/**
 * Key choosers from YCSB (Cooper et al., "Benchmarking Cloud Serving Systems with YCSB").
 * Randomness comes in as a function so runs can be seeded.
 */
export type Random = () => number

export interface KeyChooser {
  /** An item index in [0, itemCount). */
  next(itemCount: number): number
}

export class UniformChooser implements KeyChooser {
  constructor(private readonly random: Random) {}
  next(itemCount: number): number {
    return Math.floor(this.random() * itemCount)
  }
}

/** Gray et al.'s zipfian generator, as YCSB implements it; item 0 is the most popular. */
export class ZipfianGenerator {
  private readonly alpha: number
  private readonly zetan: number
  private readonly eta: number
  private readonly theta: number
  private readonly zeta2: number

  constructor(
    readonly items: number,
    private readonly random: Random,
    constant = 0.99,
  ) {
    this.theta = constant
    this.zeta2 = zeta(2, constant)
    this.alpha = 1 / (1 - constant)
    this.zetan = zeta(items, constant)
    this.eta = (1 - Math.pow(2 / items, 1 - constant)) / (1 - this.zeta2 / this.zetan)
  }

  next(): number {
    const u = this.random()
    const uz = u * this.zetan
    if (uz < 1) return 0
    if (uz < 1 + Math.pow(0.5, this.theta)) return 1
    return Math.min(this.items - 1, Math.floor(this.items * Math.pow(this.eta * u - this.eta + 1, this.alpha)))
  }
}

function zeta(n: number, theta: number): number {
  let sum = 0
  for (let i = 1; i <= n; i++) sum += 1 / Math.pow(i, theta)
  return sum
}

const twoTo32 = 4294967296

/**
 * 64-bit FNV-1a over the eight little-endian octets of `value` (YCSB's FNVhash64), as the two
 * 32-bit halves of the hash. Plain number arithmetic, no BigInt: it runs per inserted key.
 */
export function fnv64(value: number): { hi: number; lo: number } {
  let hi = 0xcbf29ce4
  let lo = 0x84222325
  const vlo = value % twoTo32
  const vhi = Math.floor(value / twoTo32)
  for (let i = 0; i < 8; i++) {
    const octet = i < 4 ? (vlo >>> (8 * i)) & 0xff : (vhi >>> (8 * (i - 4))) & 0xff
    lo = (lo ^ octet) >>> 0
    // × 0x100000001b3 = × 0x1b3 plus × 2^40, which only lands in the high half (lo << 8).
    const low = lo * 0x1b3
    hi = (hi * 0x1b3 + Math.floor(low / twoTo32) + lo * 256) % twoTo32
    lo = low % twoTo32
  }
  return { hi, lo }
}

/** 64-bit FNV-1a folded to 53 bits, as YCSB scrambles zipfian picks over the key space. */
function fnv(value: number): number {
  const { hi, lo } = fnv64(value)
  return (hi % 0x200000) * twoTo32 + lo
}

/** Zipfian popularity, with the popular items scattered over the key space (YCSB's default). */
export class ScrambledZipfianChooser implements KeyChooser {
  private readonly zipf: ZipfianGenerator
  private readonly table: Uint32Array
  constructor(items: number, random: Random, constant = 0.99) {
    this.zipf = new ZipfianGenerator(items, random, constant)
    // Precomputed, so the hot path does no BigInt work.
    this.table = new Uint32Array(items)
    for (let i = 0; i < items; i++) this.table[i] = fnv(i) % items
  }
  next(itemCount: number): number {
    const item = this.table[this.zipf.next()]!
    return item < itemCount ? item : item % itemCount
  }
}

/** Workload D: recently inserted items are the most popular. */
export class LatestChooser implements KeyChooser {
  private readonly zipf: ZipfianGenerator
  constructor(items: number, random: Random) {
    this.zipf = new ZipfianGenerator(items, random)
  }
  next(itemCount: number): number {
    return Math.max(0, itemCount - 1 - (this.zipf.next() % itemCount))
  }
}

export { seededRandom } from '../src/core/random.js'
