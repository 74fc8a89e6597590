import { readFileSync } from 'node:fs'
import path from 'node:path'
import { addUser, makeCertificates } from '../../src/cli/security.js'
import type { NodeOptions } from '../../src/index.js'

/** A throwaway CA, node and user certificates, and an auth file: made as `kumo certs` and `kumo user add` make them. */
export interface SecurityFiles {
  dir: string
  ca: Buffer
  authFile: string
  /** A node's TLS options (n1, n2, ...). */
  nodeTls(id: string): NonNullable<NodeOptions['tls']>
  /** PEM of a certificate and key made by `kumo certs` (a node's or `user-<name>`). */
  pem(name: string): { cert: Buffer; key: Buffer }
  passwords: Record<string, string>
}

export const testUsers = {
  admin: { role: 'admin', prefixes: [] as string[] },
  writer: { role: 'readwrite', prefixes: [] as string[] },
  app: { role: 'readwrite', prefixes: ['app/'] },
  reader: { role: 'read', prefixes: [] as string[] },
} as const

export async function makeSecurityFiles(dir: string, nodeIds: string[], certificateUsers: string[] = []): Promise<SecurityFiles> {
  await makeCertificates({ out: dir, nodes: nodeIds, hosts: [], users: certificateUsers, days: 30, force: false }, () => undefined)
  const authFile = path.join(dir, 'auth.json')
  const passwords: Record<string, string> = {}
  for (const [name, user] of Object.entries(testUsers)) {
    passwords[name] = `${name}-secret-password`
    await addUser(authFile, name, user.role, [...user.prefixes], passwords[name])
  }
  for (const name of certificateUsers) await addUser(authFile, name, 'read', [], undefined)
  return {
    dir,
    ca: readFileSync(path.join(dir, 'ca.pem')),
    authFile,
    nodeTls: (id) => ({ ca: path.join(dir, 'ca.pem'), cert: path.join(dir, `${id}.pem`), key: path.join(dir, `${id}-key.pem`) }),
    pem: (name) => ({ cert: readFileSync(path.join(dir, `${name}.pem`)), key: readFileSync(path.join(dir, `${name}-key.pem`)) }),
    passwords,
  }
}
