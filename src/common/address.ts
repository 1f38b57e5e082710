import type { AddressInfo, Server } from 'node:net';
import { AddressUnavailable, InvalidArgument } from './errors.js';

export interface HostPort {
  host: string;
  port: number;
}

/** Parses `HOST:PORT` (IPv6 as `[::1]:PORT`). Port 0 asks the OS for a free port. */
export function parseHostPort(text: string, what = 'address'): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  if (!m) throw new InvalidArgument(`${what} must be HOST:PORT, got ${JSON.stringify(text)}`);
  const host = m[1] ?? m[2] ?? '';
  const port = Number(m[3]);
  if (port > 65535) throw new InvalidArgument(`${what}: port ${port} out of range`);
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** A host name, an IPv4 address or a bracketed IPv6 one (zone allowed), and a port. */
const dialablePattern = /^(?:\[[0-9A-Za-z:.%]+\]|[A-Za-z0-9._-]+):\d{1,5}$/;

/**
 * Whether `text` is an address to connect to: stricter than parseHostPort, which takes any host
 * text and port 0 (a listen address). For an address a peer hands us to dial next.
 */
export function isDialableAddress(text: string): boolean {
  if (!dialablePattern.test(text)) return false;
  const port = Number(text.slice(text.lastIndexOf(':') + 1));
  return port >= 1 && port <= 65535;
}

/**
 * Formats an address as parseHostPort reads it back: an IPv6 host in brackets (`[::1]:PORT`),
 * since its colons would otherwise run into the port's.
 */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** Parses a byte size such as `1G`, `512M`, `4096`, `10GiB` (binary units). */
export function parseSize(text: string, what = 'size'): number {
  const m = /^(\d+)\s*([kmgtp]?)(i?b)?$/i.exec(text.trim());
  if (!m) throw new InvalidArgument(`${what} must be a number of bytes with an optional K/M/G/T/P suffix, got ${JSON.stringify(text)}`);
  const unit = (m[2] ?? '').toLowerCase();
  const shift = { '': 0, k: 10, m: 20, g: 30, t: 40, p: 50 }[unit] ?? 0;
  const value = Number(m[1]) * 2 ** shift;
  if (!Number.isSafeInteger(value)) throw new InvalidArgument(`${what} too large: ${text}`);
  return value;
}

/** Binary units as parseSize reads them, largest first. */
const sizeUnits: readonly [string, number][] = [['P', 50], ['T', 40], ['G', 30], ['M', 20], ['K', 10]];

/** `bytes` as parseSize reads it back: in the largest binary unit that divides it (`1M`, `1536K`, `4097`). */
export function formatSize(bytes: number): string {
  for (const [unit, shift] of sizeUnits) {
    if (bytes > 0 && bytes % 2 ** shift === 0) return `${bytes / 2 ** shift}${unit}`;
  }
  return String(bytes);
}

/**
 * Parses a byte size (parseSize) in [minBytes, maxBytes]; else an error naming the flag
 * (`what`) and the range, in the units the flag takes.
 */
export function parseSizeInRange(text: string, what: string, minBytes: number, maxBytes: number): number {
  const bytes = parseSize(text, what);
  if (bytes < minBytes || bytes > maxBytes) {
    throw new InvalidArgument(`${what} must be a size from ${formatSize(minBytes)} to ${formatSize(maxBytes)} (bytes, or with a K/M/G/T suffix), got ${JSON.stringify(text)}`);
  }
  return bytes;
}

/**
 * Parses a whole number in [min, max] written in decimal digits alone: the CLI's one parser of
 * integer arguments. Number() alone took `0x10`, `1e1`, `0b1` and ` ` (as 0), so a mistyped
 * flag ran with a value nobody wrote. `what` names the flag in the error, with the range.
 */
export function parseInteger(text: string, what: string, min: number, max: number): number {
  const digits = text.trim();
  const n = Number(digits);
  if (!/^\d+$/.test(digits) || !Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `in ${min}..${max}`;
    throw new InvalidArgument(`${what} must be a whole number ${range}, got ${JSON.stringify(text)}`);
  }
  return n;
}

/** Parses a count of at least 1 (a flag such as --max-connections). */
export function parseCount(text: string, what: string): number {
  return parseInteger(text, what, 1, Number.MAX_SAFE_INTEGER);
}

/**
 * Parses whole seconds (a flag such as --handshake-limit) into milliseconds; undefined stays
 * undefined (the default applies). At least 1, unless `zeroMeans` says what 0 asks for.
 */
export function parseSecondsToMs(text: string | undefined, what: string, zeroMeans?: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text.trim());
  const least = zeroMeans === undefined ? 1 : 0;
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < least) {
    throw new InvalidArgument(`${what} must be a whole number of seconds${zeroMeans === undefined ? ', at least 1' : ` (0: ${zeroMeans})`}, got ${JSON.stringify(text)}`);
  }
  return 1000 * n;
}

/**
 * Starts `server` listening on `address` and returns the bound address. An address that cannot
 * be taken (in use, not local, not permitted) is an AddressUnavailable naming `what`, so the
 * operator reads which flag to change rather than a bare errno.
 */
export async function listenOn(server: Server, address: HostPort, what: string): Promise<HostPort> {
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const reason = err.code === 'EADDRINUSE' ? 'it is in use' : err.code === 'EADDRNOTAVAIL' ? 'it is not an address of this host' : err.code === 'EACCES' ? 'permission denied' : err.message;
      reject(new AddressUnavailable(`${what}: cannot listen on ${address.host}:${address.port}: ${reason}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(address.port, address.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  return { host: a.address, port: a.port };
}
