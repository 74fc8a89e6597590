import * as grpc from '@grpc/grpc-js'
import { KvClient } from '../../src/wire/proto.js'
import { fromServiceError } from '../../src/wire/status.js'
import type { KumoError } from '../../src/core/errors.js'

/** A plain gRPC client for the Kv service, bypassing the client library's own checks. */
export class RawKv {
  readonly client: grpc.Client & Record<string, Function>
  constructor(address: string, credentials = grpc.credentials.createInsecure(), options: grpc.ChannelOptions = {}) {
    this.client = new KvClient(address, credentials, {
      'grpc.max_send_message_length': 64 * 1024 * 1024,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      ...options,
    }) as never
  }

  call<T = any>(method: string, request: object, timeoutMs = 10_000): Promise<T> {
    return new Promise((resolve, reject) => {
      this.client[method]!(request, { deadline: Date.now() + timeoutMs }, (err: unknown, res: T) => (err ? reject(fromServiceError(err)) : resolve(res)))
    })
  }

  /** Sends raw bytes as the request of `path` (e.g. /kumo.Kv/Put). */
  sendBytes(path: string, bytes: Buffer): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        path,
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytes,
        { deadline: Date.now() + 10_000 },
        (err: unknown, res: unknown) => (err ? reject(fromServiceError(err)) : resolve(res)),
      )
    })
  }

  async error(method: string, request: object): Promise<KumoError> {
    try {
      await this.call(method, request)
    } catch (err) {
      return err as KumoError
    }
    throw new Error(`${method} unexpectedly succeeded`)
  }

  close(): void {
    this.client.close()
  }
}
