import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import { roles, type Principal, type Role } from '../core/access.js'
import { KumoError } from '../core/errors.js'
import { Semaphore } from '../core/semaphore.js'
import { parsePasswordHash, verifyPassword } from './passwords.js'

/**
 * The auth file (`--auth-file`), JSON:
 *
 *     { "users": { "alice": { "password": "scrypt$…", "role": "readwrite", "prefixes": ["app/"] },
 *                  "report": { "role": "read" } } }
 *
 * `role` is read, readwrite or admin; `prefixes` (optional) limits the user to keys starting
 * with one of them; a user without a password authenticates only by a client certificate
 * naming it (urn:kumo:user:<name>). `kumo user add` writes entries.
 */
export interface AuthFile {
  users: Record<string, UserEntry>
}

export interface UserEntry {
  password?: string
  role: Role
  prefixes?: string[]
}

interface User {
  principal: Principal & { kind: 'user' }
  password: ReturnType<typeof parsePasswordHash> | undefined
}

/** Checked in place of a missing user's hash, so that a wrong name costs what a wrong password does. */
const decoy = parsePasswordHash(`scrypt$32768$8$1$${Buffer.alloc(16, 7).toString('base64')}$${Buffer.alloc(32, 7).toString('base64')}`)

/** Users in one file at most, and the bounds of a name and a prefix. */
export const usersMax = 10_000
const nameBytesMax = 128
const prefixesMax = 64

/** Parses and checks an auth file's text; throws INVALID_ARGUMENT naming the user and what is wrong. */
export function parseAuthFile(text: string, path: string): Map<string, User> {
  const bad = (message: string): never => {
    throw new KumoError('INVALID_ARGUMENT', `auth file ${path}: ${message}`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    // Only where: Node's message quotes a piece of the file, which may hold a password hash.
    const at = /position (\d+)/.exec((err as Error).message)?.[1]
    return bad(`not JSON${at === undefined ? '' : ` (at character ${at})`}`)
  }
  const users = (json as AuthFile | null)?.users
  if (users === null || typeof users !== 'object' || Array.isArray(users)) return bad('needs { "users": { "<name>": { "role": ..., "password": ... } } }')
  const entries = Object.entries(users)
  if (entries.length > usersMax) bad(`holds ${entries.length} users; at most ${usersMax}`)
  const out = new Map<string, User>()
  for (const [name, entry] of entries) {
    if (name.length === 0 || Buffer.byteLength(name) > nameBytesMax || /[\s,"]/.test(name)) bad(`user name ${JSON.stringify(name)} must be 1 to ${nameBytesMax} bytes without spaces, commas or quotes`)
    if (entry === null || typeof entry !== 'object') bad(`user ${name}: needs { "role": ... }`)
    if (!roles.includes(entry.role)) bad(`user ${name}: role must be one of ${roles.join(', ')}, got ${JSON.stringify(entry.role)}`)
    const prefixes = entry.prefixes ?? []
    if (!Array.isArray(prefixes) || prefixes.length > prefixesMax || prefixes.some((p) => typeof p !== 'string' || p.length === 0)) {
      bad(`user ${name}: prefixes must be a list of at most ${prefixesMax} non-empty strings`)
    }
    let password: User['password']
    if (entry.password !== undefined) {
      try {
        password = parsePasswordHash(entry.password)
      } catch (err) {
        bad(`user ${name}: ${(err as Error).message}`)
      }
    }
    out.set(name, { principal: { kind: 'user', name, role: entry.role, prefixes: prefixes.map((p) => Buffer.from(p)) }, password })
  }
  return out
}

/**
 * The users a node knows, from its auth file, read again every `reloadIntervalMs` (a change
 * that parses takes effect for new authentications; one that does not is logged, and the
 * previous users stay). Passwords are checked with scrypt off the event loop, two at a time;
 * a password that checked out is remembered (as a SHA-256 of it) until the file changes, so a
 * stream or a client's repeated calls cost one check.
 */
export class UserStore {
  private users: Map<string, User>
  private text: string
  private readonly verified = new Map<string, string>()
  /** Digests of (name, password) pairs that failed since the file last changed. */
  private readonly failed = new Set<string>()
  /** Bumped whenever the users change: callers authenticated before re-check (open streams). */
  generation = 0
  private readonly checks = new Semaphore(2)
  private timer: NodeJS.Timeout | undefined
  private rejected = ''

  constructor(
    private readonly path: string,
    private readonly logger: Logger,
    reloadIntervalMs = 2000,
  ) {
    this.text = this.read()
    this.users = parseAuthFile(this.text, path)
    this.timer = setInterval(() => this.reload(), reloadIntervalMs)
    this.timer.unref()
  }

  private read(): string {
    try {
      return readFileSync(this.path, 'utf8')
    } catch (err) {
      throw new KumoError('INVALID_ARGUMENT', `cannot read the auth file ${this.path}: ${(err as Error).message}`)
    }
  }

  get size(): number {
    return this.users.size
  }

  reload(): void {
    try {
      const text = this.read()
      if (text === this.text) return
      this.users = parseAuthFile(text, this.path)
      this.text = text
      this.verified.clear()
      this.failed.clear()
      this.generation++
      this.rejected = ''
      this.logger.info({ users: this.users.size }, 'auth file reloaded')
    } catch (err) {
      const message = (err as Error).message
      if (message !== this.rejected) this.logger.warn({ problem: message }, 'auth file not taken; the previous users stay')
      this.rejected = message
    }
  }

  /** The user a client certificate names, if the file has it. */
  byCertificate(name: string): Principal | undefined {
    return this.users.get(name)?.principal
  }

  /**
   * The user, if `password` is theirs. The error never says which of name or password was
   * wrong. Past 64 checks waiting, OVERLOADED: guessing passwords cannot queue without bound.
   */
  async byPassword(name: string, password: string): Promise<Principal> {
    const user = this.users.get(name)
    const wrong = new KumoError('UNAUTHENTICATED', 'unknown user or wrong password')
    const digest = createHash('sha256').update(name).update('\0').update(password).digest('base64')
    if (user !== undefined && this.verified.get(name) === digest) return user.principal
    // A password that just failed fails again at once: repeating it costs no scrypt.
    if (this.failed.has(digest)) throw wrong
    if (this.checks.queued >= 64) throw new KumoError('OVERLOADED', 'too many password checks waiting; try again later')
    const users = this.users
    // An unknown user (or one without a password) costs a check too: timing does not tell which names exist.
    const ok = await this.checks.run(async () => (await verifyPassword(password, user?.password ?? decoy)) && user?.password !== undefined)
    if (!ok || user === undefined) {
      // Not remembered if the file changed while checking: the user may exist now.
      if (this.users === users) {
        if (this.failed.size >= usersMax) this.failed.clear()
        this.failed.add(digest)
      }
      throw wrong
    }
    // Not remembered if the file changed while checking.
    if (this.users === users) {
      if (this.verified.size >= usersMax) this.verified.clear()
      this.verified.set(name, digest)
    }
    return user.principal
  }

  close(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }
}
