/**
 * The grammar checker process (forked by a model host's GrammarChecker). It loads only the
 * model's vocabulary, caps its own address space, and parses grammars with llama.cpp's own
 * parser, one at a time. Whatever a hostile grammar does here (abort, stack overflow, runaway
 * allocation) ends this process, which the host reports as one invalid grammar.
 */
import { readFileSync } from 'node:fs';
import { jsonSchemaToGrammar, loadModel, setProcessMemoryLimit, type Model } from '@lmserve/engine';
import { toLmError } from '@lmserve/protocol';

/** One piece of work for the checker: parse a grammar, or convert a JSON schema to GBNF. */
export type CheckerJob = { kind: 'grammar'; grammar: string; root: string } | { kind: 'schema'; schema: string };
export type CheckerRequest = CheckerJob & { id: number };
export type CheckerReply =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'verdict'; id: number; reason: string | null }
  | { type: 'converted'; id: number; grammar: string | null; reason: string | null };

/** Address space the parser may use beyond what the process has once it is loaded. */
const HEADROOM_BYTES = Number(process.env.LMSERVE_GRAMMAR_CHECK_HEADROOM ?? 512 * 1024 * 1024);

function send(reply: CheckerReply): void {
  if (process.connected) process.send?.(reply);
}

function virtualSize(): number | null {
  try {
    const match = /^VmSize:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  const modelPath = process.argv[2];
  if (!process.send || !modelPath) {
    process.stderr.write('lmserve grammar checker: must be started by a model host\n');
    process.exit(2);
  }
  let model: Model;
  try {
    model = await loadModel(modelPath, { vocabOnly: true });
  } catch (err) {
    send({ type: 'failed', message: toLmError(err).message });
    process.exit(1);
  }
  const size = virtualSize();
  if (size !== null) setProcessMemoryLimit(size + HEADROOM_BYTES);
  process.on('message', (message: CheckerRequest) => {
    if (message.kind === 'schema') {
      try {
        send({ type: 'converted', id: message.id, grammar: jsonSchemaToGrammar(message.schema), reason: null });
      } catch (err) {
        send({ type: 'converted', id: message.id, grammar: null, reason: toLmError(err).message });
      }
      return;
    }
    let reason: string | null;
    try {
      reason = model.checkGrammar(message.grammar, message.root);
    } catch (err) {
      reason = toLmError(err).message;
    }
    send({ type: 'verdict', id: message.id, reason });
  });
  process.on('disconnect', () => process.exit(0));
  send({ type: 'ready' });
}

void main();
