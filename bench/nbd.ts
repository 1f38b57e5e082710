export async function run(_argv: string[]): Promise<void> {
  throw new Error('bench nbd: not built yet');
}
