import { describe, expect, it } from 'vitest'
import { compactFully, type CompactableStore } from '../../src/storage/full-compaction.js'

/**
 * A stand-in for LevelDB's side of a full compaction (a third-party store, scripted): each
 * CompactRange call moves every file to the deepest level holding files; after it, the
 * background moves `overflow` files one level deeper, one per stats read.
 */
class ScriptedStore implements CompactableStore {
  passes = 0
  constructor(
    private levels: number[],
    private readonly overflowAfterPass: (pass: number) => number,
    private readonly deepest = 6,
  ) {}
  private background = 0

  async compactRange(): Promise<void> {
    this.passes++
    const deepest = this.levels.reduce((d, files, level) => (files > 0 && level >= 1 ? level : d), 1)
    const total = this.levels.reduce((a, b) => a + b, 0)
    this.levels = this.levels.map((_, level) => (level === deepest ? total : 0))
    this.background = Math.min(total, this.overflowAfterPass(this.passes))
    this.deepestWithData = deepest
  }
  private deepestWithData = 1
  garbled = false

  getProperty(): string {
    if (this.background > 0 && this.deepestWithData < this.deepest) {
      this.background--
      this.levels[this.deepestWithData]!--
      this.levels[this.deepestWithData + 1]!++
    }
    const rows = this.levels.map((files, level) => `  ${level}   ${files}   ${files * 2}   0   0   0`).filter((_, level) => this.levels[level]! > 0)
    if (this.garbled) return 'no table here'
    return `                               Compactions\nLevel  Files Size(MB) Time(sec) Read(MB) Write(MB)\n--------------------------------------------------\n${rows.join('\n')}\n`
  }
}

const fast = { quietMs: 20, pollMs: 1, waitMaxMs: 5000 }

describe('compacting until the data sits in one level', () => {
  it('compacts again once the background has moved the overflow of the first pass a level down', async () => {
    // A bulk load: files in levels 0-3; the first pass puts all in level 3, whose overflow the background moves to 4.
    const store = new ScriptedStore([4, 10, 100, 900, 0, 0, 0], (pass) => (pass === 1 ? 400 : 0))
    const passes: string[] = []
    const levels = await compactFully(store, Buffer.from([0]), Buffer.from([0xff]), { ...fast, onPass: (pass, l) => passes.push(`${pass}: ${l.map((x) => `L${x.level}=${x.files}`).join(' ')}`) })
    expect(passes).toEqual(['1: L3=614 L4=400', '2: L4=1014'])
    expect(levels).toEqual([{ level: 4, files: 1014, megabytes: 2028 }])
  })

  it('stops after one pass when nothing overflows', async () => {
    const store = new ScriptedStore([3, 5, 0, 0, 0, 0, 0], () => 0)
    expect(await compactFully(store, Buffer.from([0]), Buffer.from([0xff]), fast)).toEqual([{ level: 1, files: 8, megabytes: 16 }])
    expect(store.passes).toBe(1)
  })

  it('gives up after its passes when the background always leaves two levels', async () => {
    const store = new ScriptedStore([0, 0, 100, 100, 0, 0, 0], () => 100)
    const levels = await compactFully(store, Buffer.from([0]), Buffer.from([0xff]), { ...fast, passesMax: 2 })
    expect(store.passes).toBe(2)
    expect(levels).toEqual([{ level: 4, files: 100, megabytes: 200 }, { level: 5, files: 100, megabytes: 200 }])
    const again = new ScriptedStore([0, 0, 100, 100, 0, 0, 0], () => 100)
    await compactFully(again, Buffer.from([0]), Buffer.from([0xff]), fast)
    expect(again.passes).toBe(3)
  })

  it('makes one pass when LevelDB prints its stats in a form it does not know', async () => {
    const store = new ScriptedStore([0, 0, 10, 10, 0, 0, 0], () => 10)
    store.garbled = true
    expect(await compactFully(store, Buffer.from([0]), Buffer.from([0xff]), fast)).toEqual([])
    expect(store.passes).toBe(1)
  })

  it('fails as the store does when a pass fails (a closed store)', async () => {
    const store = new ScriptedStore([0, 0, 10, 10, 0, 0, 0], () => 0)
    store.compactRange = () => Promise.reject(new Error('Database is not open'))
    await expect(compactFully(store, Buffer.from([0]), Buffer.from([0xff]), fast)).rejects.toThrow('Database is not open')
  })
})
