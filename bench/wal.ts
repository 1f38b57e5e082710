export async function run(_argv: string[]): Promise<void> {
  throw new Error('bench wal: not built yet');
}
