import assert from 'node:assert/strict'

/**
 * Background work held to a share of the time, as a duty cycle: after `busyMs` of work in the
 * `elapsedMs` since it began, the pause that brings busy / (elapsed + pause) down to `share`.
 * The first `burstMs` of work are free: a pass that is short on a small store runs without
 * pauses; only one that reads a large store is spread out, however large the store grows.
 * Pure: the caller measures the times.
 */
export function dutyCyclePauseMs(busyMs: number, elapsedMs: number, share: number, burstMs: number): number {
  assert.ok(share > 0 && share <= 1, 'a duty cycle share is above 0 and at most 1')
  assert.ok(busyMs >= 0 && elapsedMs >= 0 && burstMs >= 0, 'times are 0 or more')
  if (share >= 1) return 0
  return Math.max(0, Math.ceil((busyMs - burstMs) / share - elapsedMs))
}
