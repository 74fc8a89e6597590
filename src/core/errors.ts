/**
 * The one error type Kumo throws. `code` is stable across releases (clients may switch on it);
 * `message` is for people and may change. Every code maps to one gRPC status so the error
 * crosses the wire and is rebuilt with the same code on the other side.
 */
export const ErrorCodes = {
  /** Bad input: key/value/batch limits, unknown consistency, malformed message. Not retried. */
  INVALID_ARGUMENT: 3,
  /** Not enough replicas answered to meet the consistency level. Retrying later may succeed. */
  UNAVAILABLE: 14,
  /** The request did not complete before its deadline. The write may still have been applied. */
  TIMEOUT: 4,
  /** The node is starting or draining and does not take requests. */
  NOT_SERVING: 14,
  /** The client or node was closed while the request was pending. */
  CLOSED: 1,
  /** Startup: the data directory is held by another process. */
  DATA_DIR_LOCKED: 9,
  /** Startup: the listen address is taken. */
  ADDRESS_IN_USE: 9,
  /** Too much work queued; the caller should back off. */
  OVERLOADED: 8,
  /** A bug or an unexpected failure (storage error, corrupt record). */
  INTERNAL: 13,
  /** The node requires authentication and the call carried none, or credentials that do not check out. */
  UNAUTHENTICATED: 16,
  /** The cluster is not in a state that allows this now (a membership change while another is in flight, removing a live node). */
  FAILED_PRECONDITION: 9,
  /** The caller is known but may not do this (its role, its key prefixes, or the Peer service without a node certificate). */
  PERMISSION_DENIED: 7,
} as const

export type ErrorCode = keyof typeof ErrorCodes

/** gRPC status → code, for statuses that did not carry a Kumo code in their metadata. */
const statusToCode: Record<number, ErrorCode> = {
  1: 'CLOSED',
  3: 'INVALID_ARGUMENT',
  4: 'TIMEOUT',
  8: 'OVERLOADED',
  9: 'FAILED_PRECONDITION',
  13: 'INTERNAL',
  14: 'UNAVAILABLE',
  16: 'UNAUTHENTICATED',
  7: 'PERMISSION_DENIED',
}

export class KumoError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'KumoError'
    this.code = code
  }

  get grpcStatus(): number {
    return ErrorCodes[this.code]
  }

  /** Whether another replica or a later attempt may succeed where this one failed. */
  get retryable(): boolean {
    return this.code === 'UNAVAILABLE' || this.code === 'NOT_SERVING' || this.code === 'OVERLOADED'
  }
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ErrorCodes, code)
}

/** Rebuilds a KumoError from what crossed the wire: our code if present, else the gRPC status. */
export function errorFromWire(code: string | undefined, status: number, message: string): KumoError {
  if (isErrorCode(code)) return new KumoError(code, message)
  return new KumoError(statusToCode[status] ?? 'INTERNAL', message)
}

/** Any thrown value as a KumoError; unknown failures become INTERNAL. */
export function toKumoError(err: unknown): KumoError {
  if (err instanceof KumoError) return err
  const message = err instanceof Error ? err.message : String(err)
  return new KumoError('INTERNAL', message, { cause: err })
}
