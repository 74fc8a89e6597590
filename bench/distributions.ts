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

/** FNV-1a 64's offset basis, as four 16-bit limbs, lowest first. */
const fnvBasis = [0x2325, 0x8422, 0x9ce4, 0xcbf2] as const

/**
 * 64-bit FNV-1a over the eight little-endian octets of `value` (YCSB's FNVhash64), into `limbs`
 * as four 16-bit limbs, lowest first. Small-integer arithmetic only (no BigInt, no floating
 * remainder): it runs per inserted key, and the benchmark's own cost is not the target's.
 */
export function fnv64Limbs(value: number, limbs: Uint16Array | number[]): void {
  let h0: number = fnvBasis[0]
  let h1: number = fnvBasis[1]
  let h2: number = fnvBasis[2]
  let h3: number = fnvBasis[3]
  const vlo = value >>> 0
  const vhi = Math.floor(value / twoTo32) >>> 0
  for (let i = 0; i < 8; i++) {
    h0 ^= i < 4 ? (vlo >>> (8 * i)) & 0xff : (vhi >>> (8 * (i - 4))) & 0xff
    // × 0x100000001b3 = × 0x1b3, plus × 2^40: limb k moves to limb k + 2, shifted left by 8.
    const t0 = h0 * 0x1b3
    const t1 = h1 * 0x1b3 + (t0 >>> 16)
    const t2 = h2 * 0x1b3 + (h0 << 8) + (t1 >>> 16)
    const t3 = h3 * 0x1b3 + (h1 << 8) + (t2 >>> 16)
    h0 = t0 & 0xffff
    h1 = t1 & 0xffff
    h2 = t2 & 0xffff
    h3 = t3 & 0xffff
  }
  limbs[0] = h0
  limbs[1] = h1
  limbs[2] = h2
  limbs[3] = h3
}

const scratch = new Uint16Array(4)

/** fnv64 as its two 32-bit halves. */
export function fnv64(value: number): { hi: number; lo: number } {
  fnv64Limbs(value, scratch)
  return { hi: scratch[3]! * 0x10000 + scratch[2]!, lo: scratch[1]! * 0x10000 + scratch[0]! }
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
