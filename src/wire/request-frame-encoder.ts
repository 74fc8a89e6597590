import type { RequestFrameMsg, RequestMsg } from './messages.js'

/** Requests with fewer keys are cheap to encode again; not worth remembering. */
const rememberedKeysMin = 8
/** Bodies remembered within one event-loop turn (one per replica set written or read). */
const rememberedMax = 8

interface Remembered {
  req: RequestMsg
  body: Buffer
}

/**
 * Encodes the client's request frames, encoding each merged replica request's body once for
 * all the replicas it goes to. A turn's direct writes go to every replica with the same keys
 * and records, and its quorum reads to two replicas with the same keys; only the request id
 * differs. protobufjs writes fields in field-number order, so a request is its id field
 * followed by the encoding of everything else: the bytes equal proto-loader's.
 *
 * A body is reused only within the event-loop turn that encoded it, for a request whose keys
 * and records are the same Buffer objects. Within a turn that is the same content: the
 * coalesced frames are encoded before the callers get control back. Across turns, a caller
 * may have refilled a Buffer it reuses.
 */
export function requestFrameEncoder(encodeBody: (req: Omit<RequestMsg, 'id'>) => Buffer): (frame: RequestFrameMsg) => Buffer {
  let remembered: Remembered[] = []
  const forget = (): void => {
    remembered = []
  }
  const bodyOf = (req: RequestMsg): Buffer => {
    const worth = req.keys.length >= rememberedKeysMin && req.ops.length === 0
    if (worth) {
      for (const r of remembered) if (sameBody(r.req, req)) return r.body
    }
    const { id: _id, ...rest } = req
    const body = encodeBody(rest)
    if (worth) {
      if (remembered.length === 0) setImmediate(forget)
      if (remembered.length >= rememberedMax) remembered.shift()
      remembered.push({ req, body })
    }
    return body
  }
  return (frame) => {
    const requests = frame.requests
    const bodies: Buffer[] = new Array(requests.length)
    let total = 0
    for (let i = 0; i < requests.length; i++) {
      const body = (bodies[i] = bodyOf(requests[i]!))
      const inner = idBytes(requests[i]!.id) + body.length
      total += 1 + varintBytes(inner) + inner
    }
    const epoch = frame.epoch ?? 0
    if (epoch > 0) total += 1 + varintBytes(epoch)
    const out = Buffer.allocUnsafe(total)
    let at = 0
    for (let i = 0; i < requests.length; i++) {
      const id = requests[i]!.id
      const body = bodies[i]!
      out[at++] = 0x0a // RequestFrame.requests (field 1, length-delimited)
      at = writeVarint(out, at, idBytes(id) + body.length)
      out[at++] = 0x08 // Request.id (field 1, varint)
      at = writeVarint(out, at, id)
      at += body.copy(out, at)
    }
    if (epoch > 0) {
      out[at++] = 0x10 // RequestFrame.epoch (field 2, varint)
      at = writeVarint(out, at, epoch)
    }
    return out
  }
}

function sameBody(a: RequestMsg, b: RequestMsg): boolean {
  if (a.op !== b.op || a.key !== b.key || a.value !== b.value || a.consistency !== b.consistency) return false
  if (a.ttlMs !== b.ttlMs || a.timeoutMs !== b.timeoutMs || a.hintTarget !== b.hintTarget || a.unresponsive.length !== 0 || b.unresponsive.length !== 0 || a.ops.length !== 0 || b.ops.length !== 0) return false
  if (a.keys.length !== b.keys.length || a.records.length !== b.records.length || a.versionKeys.length !== b.versionKeys.length) return false
  for (let i = 0; i < a.keys.length; i++) if (a.keys[i] !== b.keys[i]) return false
  for (let i = 0; i < a.versionKeys.length; i++) if (a.versionKeys[i] !== b.versionKeys[i]) return false
  for (let i = 0; i < a.records.length; i++) if (a.records[i] !== b.records[i]) return false
  return true
}

/** Bytes of the id field. protobufjs writes it even when 0: the request object has it set. */
function idBytes(id: number): number {
  return 1 + varintBytes(id)
}

function varintBytes(value: number): number {
  let bytes = 1
  while (value >= 0x80) {
    value = Math.floor(value / 0x80)
    bytes++
  }
  return bytes
}

function writeVarint(out: Buffer, at: number, value: number): number {
  while (value >= 0x80) {
    out[at++] = (value & 0x7f) | 0x80
    value = Math.floor(value / 0x80)
  }
  out[at++] = value
  return at
}
