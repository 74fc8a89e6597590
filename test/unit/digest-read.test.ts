import { describe, expect, it } from 'vitest'
import { digestOutcome, withFetched, type ReplicaRecords } from '../../src/core/digest-read.js'
import { decodeRecord, encodeRecord, newestRecords, recordHeader, staleIndexes } from '../../src/core/record.js'
import { seededRandom } from '../../src/core/random.js'
import { encodeVersion } from '../../src/core/version.js'

const none = Buffer.alloc(0)
const live = (ms: number, node = 'n1', expiresAtMs = 0): Buffer => encodeRecord(encodeVersion({ ms, counter: 0 }, node), Buffer.from(`value ${ms}`), expiresAtMs)
// A version names one write: a tombstone's writer differs from the values' writers.
const tombstone = (ms: number): Buffer => encodeRecord(encodeVersion({ ms, counter: 0 }, 'n3'), undefined)
const whole = (records: Buffer[]): ReplicaRecords => ({ records, whole: true })
const headers = (records: Buffer[]): ReplicaRecords => ({ records: records.map(recordHeader), whole: false })

describe('record headers', () => {
  it('keep the version, flags and expiry, and drop the value', () => {
    for (const record of [live(5), live(5, 'n2', 1_900_000_000_000), tombstone(7)]) {
      const header = recordHeader(record)
      const decoded = decodeRecord(header)
      expect(decoded.version).toEqual(decodeRecord(record).version)
      expect(decoded.tombstone).toBe(decodeRecord(record).tombstone)
      expect(decoded.expiresAtMs).toBe(decodeRecord(record).expiresAtMs)
      expect(decoded.value.length).toBe(0)
    }
    expect(recordHeader(tombstone(7))).toEqual(tombstone(7))
    expect(recordHeader(none)).toEqual(none)
  })
})

describe('digest reads (digestOutcome)', () => {
  // Scenarios as data: the whole answer, the header answers, and what the read must do.
  const scenarios: {
    name: string
    answers: ReplicaRecords[]
    newest?: (Buffer | undefined)[]
    fetch?: [number, number[]][]
    stale?: number[][]
  }[] = [
    { name: 'replicas agree', answers: [whole([live(5), none]), headers([live(5), none])], newest: [live(5), undefined] },
    { name: 'three replicas agree', answers: [whole([live(5)]), headers([live(5)]), headers([live(5)])], newest: [live(5)] },
    { name: 'a header replica is behind: repaired', answers: [whole([live(6)]), headers([live(5)])], newest: [live(6)], stale: [[], [0]] },
    { name: 'a header replica lacks the key: repaired', answers: [whole([live(6)]), headers([none])], newest: [live(6)], stale: [[], [0]] },
    { name: 'a header is newer: its record is fetched', answers: [whole([live(5)]), headers([live(6)])], fetch: [[1, [0]]] },
    { name: 'only a header replica holds the key: fetched', answers: [whole([none]), headers([live(6)])], fetch: [[1, [0]]] },
    { name: 'a newer tombstone needs no fetch (its header is the record)', answers: [whole([live(5)]), headers([tombstone(6)])], newest: [tombstone(6)], stale: [[0], []] },
    { name: 'an older tombstone header is repaired', answers: [whole([live(7)]), headers([tombstone(6)])], newest: [live(7)], stale: [[], [0]] },
    {
      name: 'per key: fetch only where a header is newer',
      answers: [whole([live(5), live(9), none]), headers([live(6), live(9), none])],
      fetch: [[1, [0]]],
    },
    {
      name: 'fetches from the header replica that names the newest version',
      answers: [whole([live(5), live(5)]), headers([live(7), live(6)]), headers([live(6), live(8)])],
      fetch: [
        [1, [0]],
        [2, [1]],
      ],
    },
    {
      name: 'a fetched record settles the read and the repairs',
      answers: [whole([live(5)]), { records: [live(6)], whole: false, fetched: new Set([0]) }],
      newest: [live(6)],
      stale: [[0], []],
    },
    {
      name: 'a fetched record older than its header asks for another fetch (the caller reads through a node)',
      answers: [whole([live(5)]), { records: [live(4)], whole: false, fetched: new Set([0]) }, headers([live(6)])],
      fetch: [[2, [0]]],
    },
    { name: 'the whole answer need not come first', answers: [headers([live(5)]), whole([live(5)])], newest: [live(5)] },
    { name: 'a whole record of the same version as a header is used', answers: [headers([live(6)]), whole([live(5)]), whole([live(6)])], newest: [live(6)], stale: [[], [0], []] },
  ]
  for (const s of scenarios) {
    it(s.name, () => {
      const out = digestOutcome(s.answers, s.answers[0]!.records.length)
      expect(out.fetch === undefined ? undefined : [...out.fetch]).toEqual(s.fetch)
      if (s.fetch === undefined) {
        expect(out.newest).toEqual(s.newest)
        expect(out.stale).toEqual(s.stale)
      }
    })
  }

  it('refuses answers without a whole one, or of the wrong length', () => {
    expect(() => digestOutcome([headers([live(5)])], 1)).toThrow(/whole answer/)
    expect(() => digestOutcome([whole([live(5)])], 2)).toThrow(/one entry per key/)
  })

  it('reads what reading every record would, on random answers, once its fetches are done', () => {
    const random = seededRandom(7)
    const pick = (): Buffer => {
      const roll = random()
      if (roll < 0.2) return none
      const ms = 1 + Math.floor(random() * 4)
      return roll < 0.35 ? tombstone(ms) : live(ms, `n${1 + Math.floor(random() * 2)}`)
    }
    for (let round = 0; round < 2000; round++) {
      const keyCount = 1 + Math.floor(random() * 3)
      const replicas = 1 + Math.floor(random() * 3)
      const stored = Array.from({ length: replicas }, () => Array.from({ length: keyCount }, pick))
      const wholeAt = Math.floor(random() * replicas)
      const answers: ReplicaRecords[] = stored.map((records, a) => (a === wholeAt ? whole(records) : headers(records)))
      let out = digestOutcome(answers, keyCount)
      if (out.fetch !== undefined) {
        for (const [a, indexes] of out.fetch) {
          expect(a).not.toBe(wholeAt)
          const merged = withFetched(answers[a]!, indexes, indexes.map((i) => stored[a]![i]!))
          expect(merged).toBeDefined()
          answers[a] = merged!
        }
        out = digestOutcome(answers, keyCount)
      }
      expect(out.fetch).toBeUndefined()
      const reference = newestRecords(stored, keyCount)
      expect(out.newest).toEqual(reference)
      const stale = stored.map((records) => staleIndexes(records, reference))
      expect(out.stale ?? stored.map(() => [])).toEqual(stale)
    }
  })
})

describe('fetched records in place of headers (withFetched)', () => {
  it('take the place of their headers, and are refused when gone or older than the header', () => {
    const answer = headers([live(5), live(6), none])
    const merged = withFetched(answer, [1], [live(6)])!
    expect(merged.records).toEqual([recordHeader(live(5)), live(6), none])
    expect([...merged.fetched!]).toEqual([1])
    expect(merged.whole).toBe(false)
    // A newer record than its header (a write between the two reads) is taken.
    expect(withFetched(answer, [0], [live(7)])!.records[0]).toEqual(live(7))
    // Gone, or older than the header named: the version is no longer there.
    expect(withFetched(answer, [1], [none])).toBeUndefined()
    expect(withFetched(answer, [1], [live(4)])).toBeUndefined()
    expect(() => withFetched(answer, [0, 1], [live(5)])).toThrow(/one fetched record per index/)
  })
})

