import { KumoError, toKumoError } from '../core/errors.js'
import { isRetryable, retryDelayMs, defaultRetryPolicy, type RetryPolicy } from '../core/retry.js'

export interface RetryOptions {
  /** Give up after this long, in ms, from the first attempt (default 60 s). */
  timeoutMs?: number
  policy?: RetryPolicy
  /** Told of each error that is retried, with the attempt's number. */
  onRetry?: (error: KumoError, attempt: number) => void
}

/**
 * Runs `operation` until it succeeds, retrying what the cluster could not do at that moment
 * (UNAVAILABLE, OVERLOADED, NOT_SERVING, TIMEOUT: see isRetryable) with backoff and jitter,
 * until `timeoutMs` has passed; an error that is not retryable, or the last one, is thrown.
 * For long jobs, such as a bulk load, that must ride out a slow moment rather than abort:
 *
 *   await withRetry(() => db.batch(ops))
 */
export async function withRetry<T>(operation: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000)
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation()
    } catch (err) {
      const error = toKumoError(err)
      const delay = retryDelayMs(attempt, Math.random(), options.policy ?? defaultRetryPolicy)
      if (!isRetryable(error) || Date.now() + delay >= deadline) throw error
      options.onRetry?.(error, attempt)
      await new Promise((resolve) => setTimeout(resolve, delay))
    }
  }
}
