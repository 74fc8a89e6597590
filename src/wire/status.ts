import * as grpc from '@grpc/grpc-js'
import { errorFromWire, KumoError, toKumoError } from '../core/errors.js'

const codeKey = 'kumo-code'

/** A KumoError as a gRPC status, code carried in trailing metadata. */
export function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  const error = toKumoError(err)
  const metadata = new grpc.Metadata()
  metadata.set(codeKey, error.code)
  return { code: error.grpcStatus, details: error.message, metadata }
}

/** A gRPC failure as a KumoError with the code the server meant. */
export function fromServiceError(err: unknown): KumoError {
  if (err instanceof KumoError) return err
  const status = err as Partial<grpc.ServiceError>
  if (typeof status.code !== 'number') return toKumoError(err)
  const code = status.metadata?.get(codeKey)[0]
  const message = status.details || status.message || 'request failed'
  return errorFromWire(typeof code === 'string' ? code : undefined, status.code, message)
}

export const channelOptions: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
  'grpc.max_send_message_length': 16 * 1024 * 1024,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  // Reconnect quickly after a node restarts: the default backoff reaches 120 s.
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1_000,
  'grpc-node.max_session_memory': 64,
  // grpc-js shares subchannels between channels to the same address by default, so a channel
  // made to replace one stuck in reconnect backoff would inherit the backoff. Each channel
  // owns its connection instead.
  'grpc.use_local_subchannel_pool': 1,
}
