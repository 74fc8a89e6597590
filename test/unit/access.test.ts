import { describe, expect, it } from 'vitest'
import { permits, permitsRange, roles, withinPrefixes, type Action, type Principal, type Role } from '../../src/core/access.js'

const b = (s: string): Buffer => Buffer.from(s)
const user = (role: Role, prefixes: string[] = []): Principal => ({
  kind: 'user',
  name: `u-${role}`,
  role,
  prefixes: prefixes.map(b),
})

const actions: Action[] = ['cluster', 'read', 'replica-read', 'write', 'replica-write', 'admin', 'peer']

describe('permits', () => {
  // Every role against every action, as a table: what each role may do.
  const table: Record<string, Action[]> = {
    read: ['cluster', 'read', 'replica-read'],
    readwrite: ['cluster', 'read', 'replica-read', 'write', 'replica-write'],
    admin: ['cluster', 'read', 'replica-read', 'write', 'replica-write', 'admin'],
  }
  for (const role of roles) {
    for (const action of actions) {
      const expected = table[role]!.includes(action)
      it(`${role} ${expected ? 'may' : 'may not'} ${action}`, () => {
        const verdict = permits(user(role), action)
        expect(verdict.allowed).toBe(expected)
        if (!verdict.allowed) expect(verdict.reason).toMatch(action === 'peer' ? /Peer service is for the nodes/ : /needs role/)
      })
    }
  }

  it('a node may do everything, the Peer service included', () => {
    for (const action of actions) expect(permits({ kind: 'node', id: 'n1' }, action).allowed).toBe(true)
  })

  it('anyone (TLS without an auth file) may do everything but call the Peer service', () => {
    for (const action of actions) expect(permits({ kind: 'anyone' }, action).allowed).toBe(action !== 'peer')
  })

  it('an unverified caller (no TLS: loopback or --insecure) may do everything', () => {
    for (const action of actions) expect(permits({ kind: 'unverified' }, action).allowed).toBe(true)
  })

  it('a user limited to prefixes may use only keys within them, every key of a request', () => {
    const p = user('readwrite', ['app/', 'shared/'])
    expect(permits(p, 'write', [b('app/1'), b('shared/x')]).allowed).toBe(true)
    const refused = permits(p, 'write', [b('app/1'), b('other/1')])
    expect(refused.allowed).toBe(false)
    if (!refused.allowed) expect(refused.reason).toContain('"app/", "shared/"')
    expect(permits(p, 'read', [b('app')]).allowed).toBe(false)
    expect(permits(p, 'replica-write', [b('shared/')]).allowed).toBe(true)
  })

  it('the reason never carries more than the name and role', () => {
    const verdict = permits(user('read'), 'write', [b('k')])
    expect(verdict).toEqual({ allowed: false, reason: 'user u-read (role read) may not write: that needs role readwrite' })
  })
})

describe('withinPrefixes', () => {
  it('is true for every key without prefixes, and by byte comparison otherwise', () => {
    expect(withinPrefixes(b(''), [])).toBe(true)
    expect(withinPrefixes(b('ab'), [b('a')])).toBe(true)
    expect(withinPrefixes(b('a'), [b('ab')])).toBe(false)
    expect(withinPrefixes(Buffer.from([0xff, 1]), [Buffer.from([0xff])])).toBe(true)
  })
})

describe('permitsRange', () => {
  const p = user('read', ['app/'])
  const cases: [string, string | undefined, string | undefined, boolean][] = [
    ['the prefix itself', 'app/', 'app0', true],
    ['within the prefix', 'app/a', 'app/b', true],
    ['unbounded above', 'app/', undefined, false],
    ['unbounded below', undefined, 'app/z', false],
    ['starting before the prefix', 'apo', 'app/z', false],
    ['ending past the prefix', 'app/a', 'app1', false],
  ]
  for (const [name, gte, lt, expected] of cases) {
    it(`${name}: ${expected ? 'allowed' : 'refused'}`, () => {
      expect(permitsRange(p, gte === undefined ? undefined : b(gte), lt === undefined ? undefined : b(lt)).allowed).toBe(expected)
    })
  }
  it('a user without prefixes may scan everything; a prefix of 0xff bytes has no end', () => {
    expect(permitsRange(user('read'), undefined, undefined).allowed).toBe(true)
    const ff: Principal = { kind: 'user', name: 'f', role: 'read', prefixes: [Buffer.from([0xff])] }
    expect(permitsRange(ff, Buffer.from([0xff, 0]), undefined).allowed).toBe(true)
  })
})
