/**
 * A peer connection made by hand (frame.ts over a plain socket), for cluster tests that speak
 * to a node's peer port as some node would: sends frames as node `from` of cluster `clusterId`
 * (a frame may name another cluster with its own `c`), and of data dir `incarnation` if given
 * (a node refuses a member's id from another one than its map records), collects what comes back.
 */
import { connect, type Socket } from 'node:net';
import { encodeFrame, FrameDecoder, type Frame, type RpcResponse } from '../../src/cluster/frame.js';
import { parseHostPort } from '../../src/common/address.js';
import { authenticateAsDialer, type ClusterKey } from '../../src/cluster/peer-auth.js';

export class HandPeer {
  readonly socket: Socket;
  readonly frames: Frame[] = [];
  closed = false;
  private readonly decoder = new FrameDecoder();
  private nextId = 1;
  private readonly waiting = new Map<number, (r: RpcResponse) => void>();
  /** Answers the node's keepalive `ping` requests, as a live node does (see answerPings). */
  private pingsAnswered = false;

  private constructor(
    socket: Socket,
    readonly from: string,
    readonly clusterId: string,
    readonly incarnation: string | undefined,
  ) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      for (const f of this.decoder.push(d)) {
        this.frames.push(f);
        for (const r of f.resps ?? []) this.waiting.get(r.id)?.(r);
        const pings = this.pingsAnswered ? (f.reqs ?? []).filter((q) => q.op === 'ping') : [];
        if (pings.length > 0) this.send({ epoch: f.epoch, resps: pings.map((q) => ({ id: q.id, r: {} })) });
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => (this.closed = true));
  }

  /** With `key`, proves it first, as a node of a keyed cluster does (peer-auth.ts). */
  static async open(addr: string, from: string, clusterId: string, incarnation?: string, key?: ClusterKey): Promise<HandPeer> {
    const hp = parseHostPort(addr);
    const socket = connect({ host: hp.host, port: hp.port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    if (key) await authenticateAsDialer(socket, key);
    const peer = new HandPeer(socket, from, clusterId, incarnation);
    socket.resume();
    return peer;
  }

  send(frame: Omit<Frame, 'from' | 'addr'>): void {
    this.socket.write(encodeFrame({ from: this.from, addr: '', c: this.clusterId, ...(this.incarnation !== undefined ? { i: this.incarnation } : {}), ...frame }));
  }

  request(epoch: number, op: string, a: unknown, timeoutMs = 10_000): Promise<RpcResponse> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to ${op} within ${timeoutMs} ms`)), timeoutMs);
      this.waiting.set(id, (r) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve(r);
      });
      this.send({ epoch, reqs: [{ id, op, a }] });
    });
  }

  /**
   * From now on, answers the node's `ping` requests: a node closes a connection that carries
   * nothing back for a while after it wrote (transport.ts checkSilence), and a peer whose own
   * requests take long to answer may say nothing else meanwhile.
   */
  answerPings(): void {
    this.pingsAnswered = true;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The value of an unlabelled metric on a node's /metrics (0 when absent). */
export async function metric(http: string, name: string): Promise<number> {
  const res = await fetch(`http://${http}/metrics`);
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(await res.text());
  return m ? Number(m[1]) : 0;
}
