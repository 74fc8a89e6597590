import { KumoError } from './errors.js'

export type Consistency = 'one' | 'quorum' | 'all'
export const consistencyLevels: readonly Consistency[] = ['one', 'quorum', 'all']

export function parseConsistency(value: unknown, fallback: Consistency): Consistency {
  if (value === undefined || value === null || value === '') return fallback
  if (typeof value === 'string' && (consistencyLevels as readonly string[]).includes(value)) {
    return value as Consistency
  }
  throw new KumoError(
    'INVALID_ARGUMENT',
    `unknown consistency level ${JSON.stringify(value)}: use one, quorum or all`,
  )
}

/** How many replicas must answer, out of `replicaCount`, for a consistency level. */
export function requiredAcks(level: Consistency, replicaCount: number): number {
  if (replicaCount <= 0) return 1
  switch (level) {
    case 'one':
      return 1
    case 'quorum':
      return Math.floor(replicaCount / 2) + 1
    case 'all':
      return replicaCount
  }
}
