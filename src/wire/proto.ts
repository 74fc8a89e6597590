import { fileURLToPath } from 'node:url'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'

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
 * marker and is answered INVALID_ARGUMENT.
 */
function tolerant(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {}
  for (const [name, method] of Object.entries(service)) {
    const decode = method.requestDeserialize
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decode(bytes)
        } catch (err) {
          return { [malformed]: (err as Error).message }
        }
      },
    }
  }
  return out as grpc.ServiceDefinition
}

const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  kumo: {
    Kv: grpc.ServiceClientConstructor
    Peer: grpc.ServiceClientConstructor
  }
}

export const KvClient = loaded.kumo.Kv
export const PeerClient = loaded.kumo.Peer
export const kvService = tolerant(loaded.kumo.Kv.service)
export const peerService = tolerant(loaded.kumo.Peer.service)
export { protoFile }
