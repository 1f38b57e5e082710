export async function run(_argv: string[]): Promise<void> {
  throw new Error('bench cluster: not built yet');
}
