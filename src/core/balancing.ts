/**
 * Replica selection: which replica gets a request. Pure: a policy sees the candidates and a
 * snapshot of what it may weigh (in-flight counts, reported load, weights) and returns an order.
 * The caller tries candidates in that order, so a policy also decides failover order.
 */
export type LoadBalancing = 'round-robin' | 'weighted-round-robin' | 'least-connections' | 'least-load'
export const loadBalancingPolicies: readonly LoadBalancing[] = [
  'round-robin',
  'weighted-round-robin',
  'least-connections',
  'least-load',
]

export interface ReplicaStats {
  /** Requests this caller has in flight to the node. */
  inFlight(node: string): number
  /** Load the node reported in its last heartbeat, 0..1 (event-loop utilization). */
  load(node: string): number
  /** Configured weight, >= 1. */
  weight(node: string): number
  /**
   * How long the node has recently taken to answer this caller, in ms (AnswerTime); undefined
   * when unknown. Optional: a caller that does not time its answers leaves it out.
   */
  answerMs?(node: string): number | undefined
}

export interface ReplicaPicker {
  /** Candidates reordered best first. Never drops or adds a candidate. */
  order(candidates: readonly string[], stats: ReplicaStats): string[]
}

export class RoundRobinPicker implements ReplicaPicker {
  private next = 0
  order(candidates: readonly string[]): string[] {
    if (candidates.length <= 1) return [...candidates]
    const start = this.next++ % candidates.length
    if (this.next >= 0x3fffffff) this.next = 0
    return [...candidates.slice(start), ...candidates.slice(0, start)]
  }
}

/**
 * Smooth weighted round robin (nginx's): every pick adds each candidate's weight to its current
 * score and takes the highest, then subtracts the total from the winner. Weights 5:1:1 give
 * a a b a c a a, not a a a a a b c.
 */
export class WeightedRoundRobinPicker implements ReplicaPicker {
  private readonly current = new Map<string, number>()
  order(candidates: readonly string[], stats: ReplicaStats): string[] {
    if (candidates.length <= 1) return [...candidates]
    let total = 0
    let best: string | undefined
    for (const id of candidates) {
      const weight = Math.max(1, stats.weight(id))
      total += weight
      const score = (this.current.get(id) ?? 0) + weight
      this.current.set(id, score)
      if (best === undefined || score > this.current.get(best)!) best = id
    }
    this.current.set(best!, this.current.get(best!)! - total)
    return [best!, ...candidates.filter((id) => id !== best)]
  }
}

/**
 * Candidates by ascending score; those sharing the best score take turns at the front, so equal
 * nodes share the work rather than the first one taking it all.
 */
function byScore(candidates: readonly string[], score: (id: string) => number, turn: number): string[] {
  const sorted = [...candidates].sort((a, b) => score(a) - score(b))
  if (sorted.length <= 1) return sorted
  const best = score(sorted[0]!)
  let ties = 1
  while (ties < sorted.length && score(sorted[ties]!) === best) ties++
  const start = turn % ties
  return [...sorted.slice(start, ties), ...sorted.slice(0, start), ...sorted.slice(ties)]
}

/**
 * A node is slow when it answers later than the fastest one by more than slowAnswerMarginMs
 * and by more than slowAnswerShare of the fastest's time. By a difference, not a multiple: a
 * delay every answer shares (the caller's own busy event loop, the machine's CPU shared with
 * other processes) lengthens the fastest answers as much as the slowest, and with a rule of
 * "twice the fastest plus 1 ms" a node 4-8 ms slower than the others went unnoticed whenever
 * every answer took 4 ms more. The share keeps answer times of tens of milliseconds, where a few
 * milliseconds are noise, from being told apart.
 */
export const slowAnswerMarginMs = 2
export const slowAnswerShare = 0.25

/**
 * Fewest requests in flight first, ties taking turns; a node answering far slower than the
 * fastest (slowAnswerers) counts slowInFlightPenalty more requests in flight than it has.
 *
 * Requests in flight show a slow node only while other requests keep coming: when a caller's
 * requests leave and return together (a turn's requests share one frame per node, and a quorum
 * read waits for its slowest replica), every node has none in flight at the start of each
 * turn, and only answer times tell them apart. Once the turns drift apart, a fast node often
 * still has a few in flight when the next turn starts, while the slow one, avoided, has none:
 * ranked only after the nodes tied with it, the slow node then came before that fast node and
 * took a third of the quorum reads, as many as round-robin gives it. With the penalty it goes
 * after the others until they run slowInFlightPenalty requests ahead of it: then they are the
 * overloaded ones, and it shares the work again (stickyOrder reorders at the same distance).
 */
export class LeastConnectionsPicker implements ReplicaPicker {
  private turn = 0
  order(candidates: readonly string[], stats: ReplicaStats): string[] {
    this.turn = (this.turn + 1) & 0x3fffffff
    const slow = stats.answerMs === undefined ? [] : slowAnswerers(candidates, (id) => stats.answerMs!(id))
    // Among the slow, the least slow first (slowAnswerers lists them so): when a request needs
    // more than the fast nodes (a quorum of two with one fast node), it goes to the one of them
    // that answers soonest, and a node judged slow on old answers gets new ones to correct it.
    return byScore(candidates, (id) => {
      const rank = slow.indexOf(id)
      return stats.inFlight(id) + (rank < 0 ? 0 : slowInFlightPenalty + rank)
    }, this.turn)
  }
}

/**
 * The candidates answering later than the fastest known by more than slowAnswerMarginMs and
 * slowAnswerShare of its time, the least slow first. A node with no recent answer (AnswerTime forgets after a second)
 * is not slow: it is tried again, so a slow node that recovered gets to show it. Never all of
 * them: the fastest is not slow.
 */
export function slowAnswerers(candidates: readonly string[], answerMs: (id: string) => number | undefined): string[] {
  // Read once each: an answer time may turn unknown between two reads (it goes stale).
  const times = candidates.map((id) => answerMs(id) ?? NaN)
  let fastest = Infinity
  for (const time of times) if (time < fastest) fastest = time
  if (fastest === Infinity) return []
  const limit = fastest + Math.max(slowAnswerMarginMs, fastest * slowAnswerShare)
  const slow: number[] = []
  for (let i = 0; i < times.length; i++) if (times[i]! > limit) slow.push(i)
  return slow.sort((a, b) => times[a]! - times[b]!).map((i) => candidates[i]!)
}

/**
 * Lowest reported load first. Loads within `bandwidth` of each other count as equal and go to
 * the one with fewer requests in flight, so two idle nodes share the work instead of one taking
 * it all until its next heartbeat.
 */
export class LeastLoadPicker implements ReplicaPicker {
  private turn = 0
  constructor(private readonly bandwidth = 0.1) {}
  order(candidates: readonly string[], stats: ReplicaStats): string[] {
    this.turn = (this.turn + 1) & 0x3fffffff
    const bucket = (id: string): number => Math.floor(stats.load(id) / this.bandwidth)
    // Bucket dominates; in-flight count (bounded well below 1e6) breaks ties within a bucket.
    return byScore(candidates, (id) => bucket(id) * 1e6 + Math.min(stats.inFlight(id), 999_999), this.turn)
  }
}

export function createPicker(policy: LoadBalancing): ReplicaPicker {
  switch (policy) {
    case 'round-robin':
      return new RoundRobinPicker()
    case 'weighted-round-robin':
      return new WeightedRoundRobinPicker()
    case 'least-connections':
      return new LeastConnectionsPicker()
    case 'least-load':
      return new LeastLoadPicker()
  }
}

export const defaultLoadBalancing: LoadBalancing = 'least-connections'

/**
 * Under least-connections, how many more requests in flight than the least busy replica the
 * node a turn prefers may have before a request is placed on its own. The requests of one
 * event-loop turn share one frame per node, and a frame of a few dozen operations is what pays
 * for a frame's fixed cost (system calls, a wake-up of the process at the other end, gRPC's
 * per-message work). At 16, a 64-request turn of quorum reads was split over all three nodes
 * in frames of ~31 keys, and the nodes spent ~20% more CPU per read than with whole frames of
 * 64 to two of them (bench/RESULTS.md). A node that stays busy still loses the next turns:
 * each turn's order puts the fewest in flight first.
 */
export const stickyInFlightMax = 64

/**
 * Requests in flight a slow answerer counts on top of its own under least-connections: the
 * others must run this far ahead before it is asked first again. The same distance at which
 * stickyOrder stops keeping a turn's order, so a request reordered for a busy first node goes
 * to the slow one rather than back to the busy one.
 */
export const slowInFlightPenalty = stickyInFlightMax

/**
 * The order for one request: `turnOrder` (this turn's order of the request's replicas), unless
 * under least-connections its first node runs more than stickyInFlightMax requests ahead of
 * the least busy of them (it is slow, or this turn gave it plenty): then the picker orders them
 * for this request alone.
 */
export function stickyOrder(turnOrder: string[], policy: LoadBalancing, picker: ReplicaPicker, stats: ReplicaStats): string[] {
  if (policy !== 'least-connections' || turnOrder.length <= 1) return turnOrder
  let least = Infinity
  for (const id of turnOrder) least = Math.min(least, stats.inFlight(id))
  return stats.inFlight(turnOrder[0]!) > least + stickyInFlightMax ? picker.order(turnOrder, stats) : turnOrder
}
