/**
 * LevelDB's 'leveldb.stats' property, read: per level, its table files and their size.
 *
 *                                Compactions
 *   Level  Files Size(MB) Time(sec) Read(MB) Write(MB)
 *   --------------------------------------------------
 *     0        2        4         0        0         4
 *     3     1275     2550        40       80       160
 *
 * Levels without files have no row.
 */

export interface LevelFiles {
  level: number
  files: number
  /** Whole MB, as LevelDB prints them (0 for a level under 1 MB). */
  megabytes: number
}

/** The levels that hold table files; undefined when the text is not LevelDB's stats table (no dashed header line). */
export function levelFilesOf(stats: string): LevelFiles[] | undefined {
  const out: LevelFiles[] = []
  let inTable = false
  for (const line of stats.split('\n')) {
    if (/^-+$/.test(line.trim())) inTable = true
    else if (inTable) {
      const row = /^\s*(\d+)\s+(\d+)\s+(\d+)\s/.exec(line)
      if (row !== null && Number(row[2]) > 0) out.push({ level: Number(row[1]), files: Number(row[2]), megabytes: Number(row[3]) })
    }
  }
  return inTable ? out : undefined
}

/** Table files over every level; undefined when the text is not LevelDB's stats table. */
export function tableFilesOf(stats: string): number | undefined {
  return levelFilesOf(stats)?.reduce((sum, l) => sum + l.files, 0)
}
