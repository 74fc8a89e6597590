import type { Logger } from 'pino'
import type { KumoError } from '../core/errors.js'

export interface StorageHealthDeps {
  /** Makes storage writable again if it can (StorageEngine.recover). */
  recover(): Promise<void>
  logger: Logger
  /** Told when storage starts failing writes (true) and when it takes them again (false). */
  onChange(failing: boolean): void
}

export interface StorageHealthConfig {
  /** How often a failing storage is probed with a write. */
  probeIntervalMs: number
}

/**
 * Whether this node's storage takes writes. The first failed write (a full disk, an I/O error)
 * makes the node read-only: it says so (NOT_SERVING, gossip, status, metrics, the log), peers
 * and clients stop sending it writes (those become hints for it) while it keeps serving reads,
 * and a probe write every `probeIntervalMs` brings it back by itself once writes work again.
 */
export class StorageHealth {
  private failure: { sinceMs: number; message: string } | undefined
  private timer: NodeJS.Timeout | undefined
  private probing = false
  private stopped = false

  constructor(
    private readonly deps: StorageHealthDeps,
    private readonly config: StorageHealthConfig = { probeIntervalMs: 1000 },
  ) {}

  /** Since when writes fail, and the first failure's message; undefined while storage is healthy. */
  get failing(): { sinceMs: number; message: string } | undefined {
    return this.failure
  }

  /** A storage write failed. */
  writeFailed(error: KumoError): void {
    if (this.failure !== undefined || this.stopped) return
    this.failure = { sinceMs: Date.now(), message: error.message }
    this.deps.logger.error({ err: error.message }, 'storage fails writes: read-only until a probe write succeeds')
    this.deps.onChange(true)
    this.timer = setInterval(() => void this.probe(), this.config.probeIntervalMs)
    this.timer.unref()
  }

  private async probe(): Promise<void> {
    if (this.probing || this.failure === undefined) return
    this.probing = true
    try {
      await this.deps.recover()
      const downMs = Date.now() - this.failure.sinceMs
      this.failure = undefined
      if (this.timer !== undefined) clearInterval(this.timer)
      this.timer = undefined
      this.deps.logger.warn({ downMs }, 'storage takes writes again')
      this.deps.onChange(false)
    } catch {
      // Still failing: the next probe tries again.
    } finally {
      this.probing = false
    }
  }

  stop(): void {
    this.stopped = true
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }
}
