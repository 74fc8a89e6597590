import type { KumoError } from './errors.js'

export interface RetryPolicy {
  /** The first wait before a retry, in ms; each next one is up to twice as long. */
  firstDelayMs: number
  /** No wait is longer than this. */
  delayMsMax: number
}

export const defaultRetryPolicy: RetryPolicy = { firstDelayMs: 50, delayMsMax: 2000 }

/**
 * Whether an error is worth retrying: the cluster could not do it now (replicas unreachable,
 * a node starting or stopping or overloaded, no answer in time), as opposed to the request being
 * wrong (INVALID_ARGUMENT) or the client closed. A write that timed out may have been applied:
 * retrying it stores the same value again under a newer version, which is harmless for a load.
 */
export function isRetryable(error: KumoError): boolean {
  return error.retryable || error.code === 'TIMEOUT'
}

/**
 * How long to wait before retry number `attempt` (1 for the first): exponential backoff with
 * full jitter (AWS's), so many clients that failed together do not retry together. Pure: the
 * random number in [0, 1) comes in.
 */
export function retryDelayMs(attempt: number, random: number, policy: RetryPolicy = defaultRetryPolicy): number {
  const ceiling = Math.min(policy.delayMsMax, policy.firstDelayMs * 2 ** Math.max(0, attempt - 1))
  return Math.floor(random * ceiling)
}
