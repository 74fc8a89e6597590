import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { KumoError } from '../core/errors.js'

/**
 * Passwords stored as scrypt hashes (node:crypto, RFC 7914): `scrypt$<N>$<r>$<p>$<salt>$<hash>`,
 * salt and hash in base64. N = 2^15 costs ~50-100 ms and 32 MiB per check, which is why a node
 * checks a password once per connection's stream (and remembers it), not once per request.
 */
const defaults = { N: 2 ** 15, r: 8, p: 1 }
const hashBytes = 32

function derive(password: string, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // maxmem: scrypt needs 128·N·r bytes; the default limit (32 MiB) is just below N = 2^15.
    scrypt(password, salt, length, { ...options, maxmem: 256 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key)))
  })
}

export async function hashPassword(password: string): Promise<string> {
  if (typeof password !== 'string' || password.length === 0) throw new KumoError('INVALID_ARGUMENT', 'a password must not be empty')
  const salt = randomBytes(16)
  const hash = await derive(password, salt, hashBytes, defaults)
  return `scrypt$${defaults.N}$${defaults.r}$${defaults.p}$${salt.toString('base64')}$${hash.toString('base64')}`
}

interface ParsedHash {
  options: { N: number; r: number; p: number }
  salt: Buffer
  hash: Buffer
}

/** Parses a stored hash; throws INVALID_ARGUMENT naming what is wrong (never the hash itself). */
export function parsePasswordHash(stored: string): ParsedHash {
  const parts = typeof stored === 'string' ? stored.split('$') : []
  const [scheme, n, r, p, salt, hash] = parts
  const N = Number(n)
  const R = Number(r)
  const P = Number(p)
  if (parts.length !== 6 || scheme !== 'scrypt') throw new KumoError('INVALID_ARGUMENT', 'a password hash must look like scrypt$N$r$p$salt$hash (make one with kumo user add)')
  // Bounds keep a hostile or mistaken file from making a check take minutes or gigabytes.
  if (!(Number.isInteger(N) && N >= 2 ** 10 && N <= 2 ** 20 && (N & (N - 1)) === 0)) throw new KumoError('INVALID_ARGUMENT', 'scrypt N must be a power of two from 2^10 to 2^20')
  if (!(Number.isInteger(R) && R >= 1 && R <= 32 && Number.isInteger(P) && P >= 1 && P <= 16)) throw new KumoError('INVALID_ARGUMENT', 'scrypt r must be 1 to 32 and p 1 to 16')
  if (128 * N * R > 256 * 1024 * 1024) throw new KumoError('INVALID_ARGUMENT', 'scrypt N·r needs more than 256 MiB')
  const saltBytes = Buffer.from(salt!, 'base64')
  const hashBytesStored = Buffer.from(hash!, 'base64')
  if (saltBytes.length < 8 || hashBytesStored.length < 16) throw new KumoError('INVALID_ARGUMENT', 'the salt or hash of a password hash is too short')
  return { options: { N, r: R, p: P }, salt: saltBytes, hash: hashBytesStored }
}

/** Whether `password` matches a stored hash, in constant time. */
export async function verifyPassword(password: string, parsed: ParsedHash): Promise<boolean> {
  const derived = await derive(password, parsed.salt, parsed.hash.length, parsed.options)
  return timingSafeEqual(derived, parsed.hash)
}
