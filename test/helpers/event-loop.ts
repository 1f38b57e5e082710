/** `p`'s value and how many times the event loop turned (a setImmediate ran) before it settled. */
export async function turnsWhile<T>(p: Promise<T>): Promise<{ value: T; turns: number }> {
  let settled = false;
  let turns = 0;
  const spin = (): void => {
    if (settled) return;
    turns++;
    setImmediate(spin);
  };
  setImmediate(spin);
  try {
    return { value: await p, turns };
  } finally {
    settled = true;
  }
}
