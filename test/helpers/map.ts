/** Cluster maps for tests, built through the same commands the metadata group applies. */
import { applyCommand, checkMap, emptyMap, type ClusterMap, type MapCommand } from '../../src/cluster/map.js';

/** The addresses node `id` registers with (loopback ports derived from the id). */
export function nodeAddresses(id: number): { peer: string; nbd: string; http: string } {
  return { peer: `127.0.0.1:${20000 + id}`, nbd: `127.0.0.1:${21000 + id}`, http: `127.0.0.1:${22000 + id}` };
}

/** An addNode command: node `id` in its own zone unless labels say otherwise. */
export function addNodeCommand(id: number, labels: Record<string, string> = { zone: `z${id}` }, weight?: number): MapCommand {
  return { type: 'addNode', id, addresses: nodeAddresses(id), labels, ...(weight === undefined ? {} : { weight }) };
}

/** Applies commands that must succeed, checking the map's invariants after each. */
export function applyAll(map: ClusterMap, ...commands: MapCommand[]): ClusterMap {
  for (const c of commands) {
    const r = applyCommand(map, c);
    if (!r.ok) throw r.error;
    checkMap(r.map);
    map = r.map;
  }
  return map;
}

/** Nodes 1..nodes, each in its own zone, and pool `default` (3 replicas over zones). */
export function zonedMap(nodes: number, pgCount: number): ClusterMap {
  const adds = Array.from({ length: nodes }, (_, i) => addNodeCommand(i + 1));
  return applyAll(emptyMap(), ...adds, { type: 'createPool', name: 'default', replicas: 3, pgCount, failureDomain: 'zone' });
}
