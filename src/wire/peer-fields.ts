/** Defaults for every PeerRequest field, spread under the fields a request sets. */
export const noPeerFields = {
  partition: 0,
  keys: [] as Buffer[],
  records: [] as Buffer[],
  forward: null,
  gte: Buffer.alloc(0),
  lt: Buffer.alloc(0),
  limit: 0,
  hintTarget: '',
  leaves: [] as number[],
  partitions: [] as number[],
  bytesMax: 0,
  valueBytesMax: 0,
  headersOnly: false,
}
