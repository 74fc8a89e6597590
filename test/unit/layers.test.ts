import { readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect, it } from 'vitest'

const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src')

/** What each layer may import from (besides itself). Imports point down the layers. */
const allowed: Record<string, string[]> = {
  core: [],
  storage: ['core'],
  wire: ['core'],
  cluster: ['core', 'storage', 'wire'],
  node: ['core', 'storage', 'wire', 'cluster'],
  client: ['core', 'wire'],
  cli: ['core', 'wire', 'client', 'node'],
  '.': ['core', 'client', 'node'],
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name)
    return statSync(full).isDirectory() ? files(full) : full.endsWith('.ts') ? [full] : []
  })
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8')
  return [...text.matchAll(/^(?:import|export)[^'"]*from\s+'(\.[^']+)'/gm)].map((m) => path.resolve(path.dirname(file), m[1]!))
}

const layerOf = (file: string): string => {
  const rel = path.relative(src, file)
  return rel.includes(path.sep) ? rel.split(path.sep)[0]! : '.'
}

it('imports point down the layers, never up (core imports nothing of ours)', () => {
  const violations: string[] = []
  for (const file of files(src)) {
    const from = layerOf(file)
    for (const target of importsOf(file)) {
      const to = layerOf(target.replace(/\.js$/, '.ts'))
      if (to !== from && !allowed[from]!.includes(to)) violations.push(`${path.relative(src, file)} imports ${path.relative(src, target)}`)
    }
  }
  expect(violations).toEqual([])
})

it('has no import cycles', () => {
  const graph = new Map<string, string[]>()
  for (const file of files(src)) graph.set(file, importsOf(file).map((t) => t.replace(/\.js$/, '.ts')))
  const state = new Map<string, 'visiting' | 'done'>()
  const cycles: string[] = []
  const visit = (file: string, trail: string[]): void => {
    if (state.get(file) === 'done') return
    if (state.get(file) === 'visiting') {
      cycles.push([...trail.slice(trail.indexOf(file)), file].map((f) => path.relative(src, f)).join(' -> '))
      return
    }
    state.set(file, 'visiting')
    for (const next of graph.get(file) ?? []) visit(next, [...trail, file])
    state.set(file, 'done')
  }
  for (const file of graph.keys()) visit(file, [])
  expect(cycles).toEqual([])
})
