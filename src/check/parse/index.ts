/** History file formats, by model name. Pure: they take the file's text. */
import { InvalidArgument } from '../../common/errors.js';
import type { AnyModel } from '../model.js';
import { blockModel } from '../models/block.js';
import { casRegisterModel, registerModel } from '../models/cas-register.js';
import { kvModel } from '../models/kv.js';
import { parseBlockJsonl } from './block-jsonl.js';
import { parseKvEdn } from './edn-kv.js';
import { parseJepsenLog, type ParsedHistory } from './jepsen.js';

export { parseBlockJsonl, parseKvEdn, parseJepsenLog, type ParsedHistory };
export { parseEdnMap } from './edn-kv.js';

export const modelNames = ['register', 'cas-register', 'kv', 'block'] as const;
export type ModelName = (typeof modelNames)[number];

export interface LoadedHistory extends ParsedHistory<unknown, unknown> {
  model: AnyModel;
}

export function modelByName(name: string): AnyModel {
  switch (name) {
    case 'register':
      return registerModel;
    case 'cas-register':
      return casRegisterModel;
    case 'kv':
      return kvModel;
    case 'block':
      return blockModel;
    default:
      throw new InvalidArgument(`unknown model ${JSON.stringify(name)} (expected one of ${modelNames.join(', ')})`);
  }
}

/** Parses a history file's text in the format of `modelName`. */
export function parseHistory(text: string, modelName: string): LoadedHistory {
  const model = modelByName(modelName);
  switch (model.name) {
    case 'register':
    case 'cas-register':
      return { model, ...parseJepsenLog(text, model) };
    case 'kv':
      return { model, ...parseKvEdn(text, kvModel) };
    default:
      return { model, ...parseBlockJsonl(text, blockModel) };
  }
}
