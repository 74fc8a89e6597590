import { describe, expect, it } from 'vitest'
import { encoderOf, KvClient, kvService, PeerClient, peerService } from '../../src/wire/proto.js'

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
      expect(kvService.Pipeline!.responseSerialize(frame)).toEqual(KvClient.service.Pipeline!.responseSerialize(frame))
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
