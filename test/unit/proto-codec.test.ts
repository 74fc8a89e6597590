import { describe, expect, it } from 'vitest'
import { requestMsg, type RequestFrameMsg } from '../../src/wire/messages.js'
import { encoderOf, GeneratedKvClient, KvClient, kvService, PeerClient, peerService } from '../../src/wire/proto.js'

const record = (n: number): Buffer => Buffer.alloc(40 + n, n)

describe('stream response encoding', () => {
  it('encodes the frames of Pipeline and Exchange to the same bytes as proto-loader', () => {
    const responseFrames = [
      { responses: [], epoch: 0 },
      {
        responses: [
          { id: 1, errorCode: '', errorMessage: '', found: true, value: record(1), values: [], records: [] },
          { id: 2, errorCode: '', errorMessage: '', found: false, value: Buffer.alloc(0), values: [{ found: true, value: record(2) }, { found: false, value: Buffer.alloc(0) }], records: [] },
          { id: 3, errorCode: '', errorMessage: '', found: false, value: Buffer.alloc(0), values: [], records: [record(3), Buffer.alloc(0), record(4)] },
          { id: 4, errorCode: 'UNAVAILABLE', errorMessage: 'node n2 holds no replica of partition 7', found: false, value: Buffer.alloc(0) },
        ],
        epoch: 2 ** 40 + 3,
      },
    ]
    for (const frame of responseFrames) {
      expect(kvService.Pipeline!.responseSerialize(frame)).toEqual(GeneratedKvClient.service.Pipeline!.responseSerialize(frame))
    }
    const peerFrames = [
      {
        responses: [
          { id: 7, errorCode: '', errorMessage: '', keys: [Buffer.from('k1'), Buffer.from('k2')], records: [record(5), record(6)], forward: null, hashes: [] },
          { id: 8, errorCode: '', errorMessage: '', keys: [], records: [], forward: { id: 0, errorCode: '', errorMessage: '', found: true, value: record(7), values: [], records: [] }, hashes: [] },
          { id: 9, errorCode: '', errorMessage: '', keys: [], records: [], forward: null, hashes: [0, 1, 2 ** 32 - 1] },
        ],
      },
    ]
    for (const frame of peerFrames) {
      expect(peerService.Exchange!.responseSerialize(frame)).toEqual(PeerClient.service.Exchange!.responseSerialize(frame))
    }
  })

  it('refuses a message with enum fields, whose names only fromObject turns into numbers', () => {
    expect(() => encoderOf('kumo.RequestFrame')).toThrow(/enum/)
    expect(() => encoderOf('kumo.PeerRequestFrame')).toThrow(/enum/)
  })
})

describe('client request frame encoding', () => {
  const encode = (frame: RequestFrameMsg): Buffer => KvClient.service.Pipeline!.requestSerialize(frame)
  const reference = (frame: RequestFrameMsg): Buffer => GeneratedKvClient.service.Pipeline!.requestSerialize(frame)
  const keys = Array.from({ length: 64 }, (_, i) => Buffer.from(`user${i}`))
  const records = keys.map((_, i) => record(i))

  it('encodes to the same bytes as proto-loader, reusing a body for the same keys and records within a turn', () => {
    const write = (id: number) => ({ ...requestMsg({ op: 'REPLICA_WRITE', keys, records, timeoutMs: 1000 }), id })
    const read = (id: number) => ({ ...requestMsg({ op: 'REPLICA_READ', keys: keys.slice(0, 32), timeoutMs: 1000 }), id })
    const frames: RequestFrameMsg[] = [
      { requests: [] },
      { requests: [write(1)] },
      { requests: [write(200), read(201)] },
      { requests: [write(70_000), read(2 ** 32 - 1), { ...requestMsg({ op: 'GET', key: Buffer.from('k'), consistency: 'one' }), id: 0 }] },
      { requests: [{ ...requestMsg({ op: 'BATCH', ops: [{ type: 'PUT', key: Buffer.from('a'), value: Buffer.from('b'), ttlMs: 5 }, { type: 'DEL', key: Buffer.from('c'), value: Buffer.alloc(0), ttlMs: 0 }] }), id: 9 }] },
      { requests: [{ ...requestMsg({ op: 'REPLICA_WRITE', keys, records, timeoutMs: 2000 }), id: 10 }] },
      // The client's map epoch rides on the frame.
      { requests: [write(11), read(12)], epoch: 1 },
      { requests: [write(13)], epoch: 2 ** 40 + 7 },
      // A digest read: records for some keys, headers for others, in one request.
      { requests: [{ ...requestMsg({ op: 'REPLICA_READ', keys: keys.slice(0, 8), versionKeys: keys.slice(8, 20), timeoutMs: 1000 }), id: 14 }] },
      { requests: [{ ...requestMsg({ op: 'REPLICA_READ', versionKeys: keys.slice(0, 32), timeoutMs: 1000 }), id: 15 }, read(16)] },
    ]
    for (const frame of frames) expect(encode(frame)).toEqual(reference(frame))
  })

  it('encodes a request again in a later turn, when a reused key Buffer may hold another key', async () => {
    const key = Buffer.from('user-aaaa')
    const many = Array.from({ length: 16 }, () => key)
    const frame = (id: number): RequestFrameMsg => ({ requests: [{ ...requestMsg({ op: 'REPLICA_READ', keys: many, timeoutMs: 1000 }), id }] })
    expect(encode(frame(1))).toEqual(reference(frame(1)))
    await new Promise((resolve) => setImmediate(resolve))
    await new Promise((resolve) => setImmediate(resolve))
    key.write('user-bbbb')
    expect(encode(frame(2))).toEqual(reference(frame(2)))
  })
})
