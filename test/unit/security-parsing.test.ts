import { describe, expect, it } from 'vitest'
import { identitiesIn } from '../../src/core/identity.js'
import { hashPassword, parsePasswordHash, verifyPassword } from '../../src/node/passwords.js'
import { parseAuthFile } from '../../src/node/user-store.js'

describe('identitiesIn', () => {
  it('finds node and user URIs among the subject alternative names, nothing else', () => {
    expect(identitiesIn('URI:urn:kumo:node:n1, DNS:localhost, IP Address:127.0.0.1')).toEqual({ nodes: ['n1'], users: [] })
    expect(identitiesIn('URI:urn:kumo:user:alice')).toEqual({ nodes: [], users: ['alice'] })
    expect(identitiesIn('DNS:urn:kumo:node:n1, URI:https://example.com')).toEqual({ nodes: [], users: [] })
    expect(identitiesIn(undefined)).toEqual({ nodes: [], users: [] })
  })
})

describe('passwords', () => {
  it('a hash verifies its password and no other, and never contains it', async () => {
    const stored = await hashPassword('correct horse')
    expect(stored).toMatch(/^scrypt\$32768\$8\$1\$/)
    expect(stored).not.toContain('correct horse')
    const parsed = parsePasswordHash(stored)
    expect(await verifyPassword('correct horse', parsed)).toBe(true)
    expect(await verifyPassword('correct horsf', parsed)).toBe(false)
    // Two hashes of one password differ (salted).
    expect(await hashPassword('correct horse')).not.toBe(stored)
  })

  it('a stored hash is bounded: a file cannot make a check take minutes or gigabytes', () => {
    const salt = Buffer.alloc(16).toString('base64')
    const hash = Buffer.alloc(32).toString('base64')
    const cases: [string, RegExp][] = [
      ['plain', /must look like scrypt/],
      [`bcrypt$10$8$1$${salt}$${hash}`, /must look like scrypt/],
      [`scrypt$1000$8$1$${salt}$${hash}`, /power of two/],
      [`scrypt$${2 ** 22}$8$1$${salt}$${hash}`, /power of two/],
      [`scrypt$${2 ** 20}$32$1$${salt}$${hash}`, /256 MiB/],
      [`scrypt$16384$8$99$${salt}$${hash}`, /r must be 1 to 32 and p 1 to 16/],
      [`scrypt$16384$8$1$$${hash}`, /too short/],
    ]
    for (const [stored, message] of cases) expect(() => parsePasswordHash(stored), stored).toThrow(message)
  })
})

describe('parseAuthFile', () => {
  const hash = `scrypt$16384$8$1$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`
  it('reads users with roles, prefixes and passwords', () => {
    const users = parseAuthFile(JSON.stringify({ users: { app: { password: hash, role: 'readwrite', prefixes: ['app/'] }, cert: { role: 'read' } } }), 'f')
    expect(users.get('app')!.principal).toEqual({ kind: 'user', name: 'app', role: 'readwrite', prefixes: [Buffer.from('app/')] })
    expect(users.get('app')!.password).toBeDefined()
    expect(users.get('cert')!.password).toBeUndefined()
  })

  it('says which user is wrong and how, and never echoes a password hash', () => {
    const cases: [unknown, RegExp][] = [
      ['{', /not JSON/],
      [{ people: {} }, /needs \{ "users"/],
      [{ users: { a: { role: 'root' } } }, /user a: role must be one of read, readwrite, admin/],
      [{ users: { 'a b': { role: 'read' } } }, /user name "a b"/],
      [{ users: { a: { role: 'read', prefixes: [''] } } }, /user a: prefixes/],
      [{ users: { a: { role: 'read', password: 'secret-in-clear' } } }, /user a: a password hash must look like/],
    ]
    for (const [content, message] of cases) {
      const text = typeof content === 'string' ? content : JSON.stringify(content)
      let error: Error | undefined
      try {
        parseAuthFile(text, 'auth.json')
      } catch (err) {
        error = err as Error
      }
      expect(error?.message, text).toMatch(message)
      expect(error?.message).toContain('auth.json')
      expect(error?.message).not.toContain('secret-in-clear')
    }
  })
})
