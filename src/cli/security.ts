import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { roles, type Role } from '../core/access.js'
import { KumoError } from '../core/errors.js'
import { loadCertificateAuthority, makeCertificateAuthority, makeNodeCertificate, makeUserCertificate } from '../node/certificate-maker.js'
import { hashPassword } from '../node/passwords.js'
import { parseAuthFile, type AuthFile } from '../node/user-store.js'
import type { TlsOptions, UserCredentials } from '../wire/channel-security.js'

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    throw new KumoError('INVALID_ARGUMENT', `cannot read the ${what} ${file}: ${(err as Error).message}`)
  }
}

export interface ClientSecurityOptions {
  tlsCa?: string
  tlsCert?: string
  tlsKey?: string
  user?: string
}

/**
 * A CLI client's TLS and credentials: --tls-ca/--tls-cert/--tls-key (or $KUMO_TLS_CA,
 * $KUMO_TLS_CERT, $KUMO_TLS_KEY), --user (or $KUMO_USER) and $KUMO_PASSWORD (an environment
 * variable only: a flag would show in `ps`).
 */
export function clientSecurity(o: ClientSecurityOptions, env = process.env): { tls?: TlsOptions; credentials?: UserCredentials } {
  const ca = o.tlsCa ?? env.KUMO_TLS_CA
  const cert = o.tlsCert ?? env.KUMO_TLS_CERT
  const key = o.tlsKey ?? env.KUMO_TLS_KEY
  const user = o.user ?? env.KUMO_USER
  const out: { tls?: TlsOptions; credentials?: UserCredentials } = {}
  if (ca !== undefined && ca !== '') {
    out.tls = { ca: readPem(ca, 'CA certificate file') }
    if ((cert === undefined) !== (key === undefined)) throw new KumoError('INVALID_ARGUMENT', '--tls-cert and --tls-key go together')
    if (cert !== undefined && key !== undefined) {
      out.tls.cert = readPem(cert, 'certificate file')
      out.tls.key = readPem(key, 'key file')
    }
  } else if (cert !== undefined || key !== undefined) throw new KumoError('INVALID_ARGUMENT', '--tls-cert needs --tls-ca (the CA that issued the nodes\' certificates)')
  if (user !== undefined && user !== '') {
    const password = env.KUMO_PASSWORD
    if (password === undefined) throw new KumoError('INVALID_ARGUMENT', `user ${user} needs a password: set $KUMO_PASSWORD`)
    out.credentials = { user, password }
  }
  return out
}

/** Writes a file whole or not at all (a reader never sees half of it); `mode` 0o600 for secrets. */
function writeAtomically(file: string, text: string, mode: number): void {
  const temporary = `${file}.${process.pid}.tmp`
  writeFileSync(temporary, text, { mode })
  renameSync(temporary, file)
}

export interface CertsOptions {
  out: string
  nodes: string[]
  hosts: string[]
  users: string[]
  days: number
  caCert?: string
  caKey?: string
  force: boolean
}

/**
 * `kumo certs`: a CA (or the given one) and, per node, a certificate naming it for the given
 * hosts; per user, a client certificate. Keys are written 0600. Returns the files written.
 */
export async function makeCertificates(o: CertsOptions, log: (line: string) => void): Promise<string[]> {
  if (o.nodes.length === 0 && o.users.length === 0) throw new KumoError('INVALID_ARGUMENT', 'name at least one node (--nodes n1,n2,n3) or user (--users alice)')
  if ((o.caCert === undefined) !== (o.caKey === undefined)) throw new KumoError('INVALID_ARGUMENT', '--ca-cert and --ca-key go together')
  mkdirSync(o.out, { recursive: true })
  const written: string[] = []
  const write = (name: string, text: string, secret: boolean): void => {
    const file = path.join(o.out, name)
    if (existsSync(file) && !o.force) throw new KumoError('INVALID_ARGUMENT', `${file} exists; use --force to replace it (new connections pick up replaced files)`)
    writeAtomically(file, text, secret ? 0o600 : 0o644)
    written.push(file)
  }
  const ca = o.caCert !== undefined ? await loadCertificateAuthority(readPem(o.caCert, 'CA certificate').toString(), readPem(o.caKey!, 'CA key').toString()) : await makeCertificateAuthority('Kumo CA', Math.max(o.days, 3650))
  if (o.caCert === undefined) {
    write('ca.pem', ca.cert, false)
    write('ca-key.pem', ca.key, true)
    log(`made a CA: ${path.join(o.out, 'ca.pem')} (its key, ca-key.pem, signs new certificates: keep it off the nodes)`)
  }
  for (const id of o.nodes) {
    const pem = await makeNodeCertificate(ca, id, { hosts: ['localhost', '127.0.0.1', '::1', ...o.hosts], days: o.days })
    write(`${id}.pem`, pem.cert, false)
    write(`${id}-key.pem`, pem.key, true)
    log(`node ${id}: ${id}.pem, ${id}-key.pem (urn:kumo:node:${id}; hosts localhost, 127.0.0.1, ::1${o.hosts.length ? `, ${o.hosts.join(', ')}` : ''})`)
  }
  for (const user of o.users) {
    const pem = await makeUserCertificate(ca, user, { days: o.days })
    write(`user-${user}.pem`, pem.cert, false)
    write(`user-${user}-key.pem`, pem.key, true)
    log(`user ${user}: user-${user}.pem, user-${user}-key.pem (urn:kumo:user:${user}; give them a role in the auth file)`)
  }
  return written
}

function readAuthFile(file: string): AuthFile {
  if (!existsSync(file)) return { users: {} }
  const text = readFileSync(file, 'utf8')
  parseAuthFile(text, file)
  return JSON.parse(text) as AuthFile
}

function parseRole(role: string): Role {
  if (!(roles as readonly string[]).includes(role)) throw new KumoError('INVALID_ARGUMENT', `role must be one of ${roles.join(', ')}`)
  return role as Role
}

/** Reads a password from stdin (piped), or makes one when stdin is a terminal: returns it and whether it was made. */
export async function passwordFromStdin(): Promise<{ password: string; generated: boolean }> {
  if (process.stdin.isTTY) return { password: randomBytes(18).toString('base64url'), generated: true }
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  const password = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? ''
  if (password === '') throw new KumoError('INVALID_ARGUMENT', 'no password on stdin (pipe one in, or run in a terminal to have one made)')
  return { password, generated: false }
}

/** Adds or replaces a user in an auth file (created if missing, written 0600); nodes reload it. */
export async function addUser(file: string, name: string, role: string, prefixes: string[], password: string | undefined): Promise<void> {
  const auth = readAuthFile(file)
  auth.users[name] = {
    ...(password === undefined ? {} : { password: await hashPassword(password) }),
    role: parseRole(role),
    ...(prefixes.length > 0 ? { prefixes } : {}),
  }
  const text = `${JSON.stringify(auth, null, 2)}\n`
  parseAuthFile(text, file)
  writeAtomically(file, text, 0o600)
}

export function removeUser(file: string, name: string): boolean {
  const auth = readAuthFile(file)
  if (!(name in auth.users)) return false
  delete auth.users[name]
  writeAtomically(file, `${JSON.stringify(auth, null, 2)}\n`, 0o600)
  return true
}

export function listUsers(file: string): { name: string; role: Role; prefixes: string[]; password: boolean }[] {
  const auth = readAuthFile(file)
  return Object.entries(auth.users).map(([name, u]) => ({ name, role: u.role, prefixes: u.prefixes ?? [], password: u.password !== undefined }))
}
