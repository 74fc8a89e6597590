import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import protobuf from 'protobufjs'
import type { RequestFrameMsg, RequestMsg } from './messages.js'
import { requestFrameEncoder } from './request-frame-encoder.js'

const protoFile = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  // src/wire → proto, and dist/src/wire → proto
  fileURLToPath(import.meta.url).includes(`${path.sep}dist${path.sep}`) ? '../../../proto/kumo.proto' : '../../proto/kumo.proto',
)

const definition = protoLoader.loadSync(protoFile, {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  oneofs: false,
})

/** Marks a request whose bytes did not decode, so the handler answers INVALID_ARGUMENT. */
export const malformed: unique symbol = Symbol('malformed')
export interface Malformed {
  [malformed]: string
}
export function isMalformed(value: unknown): value is Malformed {
  return typeof value === 'object' && value !== null && malformed in value
}

/**
 * The service definitions, with request decoding made total: grpc-js answers a decode failure
 * with INTERNAL, but a malformed message is the caller's error, so it reaches the handler as a
 * marker and is answered INVALID_ARGUMENT. The methods named in `plainResponses` encode their
 * responses (of the type given) straight from the handler's objects (encoderOf).
 */
function tolerant(service: grpc.ServiceDefinition, plainResponses: Record<string, string> = {}): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {}
  for (const [name, method] of Object.entries(service)) {
    const decode = method.requestDeserialize
    const plain = plainResponses[name]
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decode(bytes)
        } catch (err) {
          return { [malformed]: (err as Error).message }
        }
      },
      ...(plain === undefined ? {} : { responseSerialize: encoderOf(plain) }),
    }
  }
  return out as grpc.ServiceDefinition
}

const root = protobuf.loadSync(protoFile)

/**
 * Encodes a response straight from the object the handler built. proto-loader's serializer
 * first copies it into a message instance (`fromObject`), field by field and element by
 * element: ~4% of a node's CPU on the stream frames, which carry every key's record. Only for
 * messages without enum fields, whose plain objects protobufjs encodes exactly as their copies
 * (enums need fromObject to turn names into numbers).
 */
export function encoderOf(typeName: string): (value: unknown) => Buffer {
  const type = root.lookupType(typeName)
  assert.ok(!hasEnumField(type, new Set()), `${typeName} has enum fields: its objects need fromObject`)
  return (value) => type.encode(value as protobuf.Message).finish() as Buffer
}

function hasEnumField(type: protobuf.Type, seen: Set<protobuf.Type>): boolean {
  if (seen.has(type)) return false
  seen.add(type)
  type.resolveAll()
  return type.fieldsArray.some((field) => field.resolvedType instanceof protobuf.Enum || (field.resolvedType instanceof protobuf.Type && hasEnumField(field.resolvedType, seen)))
}

const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  kumo: {
    Kv: grpc.ServiceClientConstructor
    Peer: grpc.ServiceClientConstructor
  }
}

const requestType = root.lookupType('kumo.Request')

/**
 * The Kv service as the client calls it: Pipeline's request frames encode each merged replica
 * request once for all the replicas it goes to (requestFrameEncoder).
 */
function clientKv(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const encodeFrame = requestFrameEncoder((req: Omit<RequestMsg, 'id'>) => requestType.encode(requestType.fromObject(req)).finish() as Buffer)
  return { ...service, Pipeline: { ...service.Pipeline!, requestSerialize: (frame: unknown) => encodeFrame(frame as RequestFrameMsg) } } as grpc.ServiceDefinition
}

/** proto-loader's Kv client, as generated: the reference encoding (tests) and the probes' unary calls. */
export const GeneratedKvClient = loaded.kumo.Kv
export const KvClient = grpc.makeGenericClientConstructor(clientKv(loaded.kumo.Kv.service), 'Kv')
export const PeerClient = loaded.kumo.Peer
export const kvService = tolerant(loaded.kumo.Kv.service, { Pipeline: 'kumo.ResponseFrame' })
export const peerService = tolerant(loaded.kumo.Peer.service, { Exchange: 'kumo.PeerResponseFrame' })
export { protoFile }
