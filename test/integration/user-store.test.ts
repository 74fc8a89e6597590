import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { pino } from 'pino'
import { afterEach, expect, it } from 'vitest'
import { addUser } from '../../src/cli/security.js'
import { UserStore } from '../../src/node/user-store.js'

let dir: string | undefined
let store: UserStore | undefined

afterEach(async () => {
  store?.close()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  store = undefined
  dir = undefined
})

it('a password check that fails while the file changes is not remembered: the user added meanwhile gets in', async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'kumo-users-'))
  const file = path.join(dir, 'auth.json')
  await addUser(file, 'admin', 'admin', [], 'admin-password')
  store = new UserStore(file, pino({ level: 'silent' }), 60_000)
  // A check for a user not there yet, still running when the file gains that user.
  const early = store.byPassword('late', 'late-password').then(
    () => 'accepted',
    (err: Error) => err.message,
  )
  await addUser(file, 'late', 'read', [], 'late-password')
  store.reload()
  expect(await early).toBe('unknown user or wrong password')
  await expect(store.byPassword('late', 'late-password')).resolves.toMatchObject({ kind: 'user', name: 'late', role: 'read' })
  // A wrong password that fails with the file unchanged fails again without a check, and the right one still works.
  await expect(store.byPassword('late', 'wrong')).rejects.toThrow('unknown user or wrong password')
  await expect(store.byPassword('late', 'wrong')).rejects.toThrow('unknown user or wrong password')
  await expect(store.byPassword('late', 'late-password')).resolves.toMatchObject({ name: 'late' })
  expect(store.generation).toBe(1)
})
