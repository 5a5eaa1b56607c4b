/**
 * A pool worker thread: loads the model, owns one continuous-batching Engine and serves the
 * requests its host sends over a MessagePort. Its piscina task lasts as long as the replica,
 * so each replica keeps a thread of its own.
 */
import type { MessagePort } from 'node:worker_threads';
import { loadModel, systemInfo, type Engine, type Generation, type Model } from '@lmserve/engine';
import {
  createLogger,
  toLmError,
  type LoadReport,
  type Logger,
  type GenerateRequest,
  type HostSpec,
  type HostToReplica,
  type ModelSummary,
  type ReplicaExit,
  type ReplicaToHost,
} from '@lmserve/protocol';
import { EventOutbox } from './event-outbox.js';
import { buildPrompt } from './prompt.js';

export interface ReplicaTask {
  spec: HostSpec;
  replica: number;
  port: MessagePort;
}

const STATS_INTERVAL_MS = 500;

function summarize(model: Model): ModelSummary {
  const { info } = model;
  return {
    architecture: info.architecture,
    parameterCount: info.parameterCount,
    sizeBytes: info.sizeBytes,
    trainedContextLength: info.trainedContextLength,
    vocabSize: info.vocabSize,
    hasChatTemplate: info.chatTemplate !== null && info.chatTemplate !== '',
  };
}

/** Where the weights went: the first GPU-like device when layers are offloaded, else the CPU. */
function loadReport(spec: HostSpec, seconds: number): LoadReport {
  let devices: string[] = [];
  try {
    devices = systemInfo().devices.map((d) => d.name);
  } catch {
    // device listing is informative only
  }
  const gpu = devices.find((d) => !/^cpu/i.test(d));
  const backend = spec.gpuLayers !== 0 && gpu ? gpu.replace(/\d+$/, '').toLowerCase() : 'cpu';
  return { seconds, backend, devices };
}

class Replica {
  readonly #spec: HostSpec;
  readonly #log: Logger;
  readonly #port: MessagePort;
  readonly #outbox: EventOutbox;
  readonly #live = new Map<string, Generation>();
  readonly #running = new Set<Promise<void>>();
  #model: Model | undefined;
  #engine: Engine | undefined;
  #shutdown: Promise<void> | undefined;
  #stopped!: () => void;
  readonly #stoppedPromise = new Promise<void>((resolve) => (this.#stopped = resolve));

  constructor(spec: HostSpec, port: MessagePort, index: number) {
    this.#spec = spec;
    this.#log = createLogger({ component: 'replica', pid: process.pid, worker: spec.name, replica: index }, { level: spec.logLevel });
    this.#port = port;
    this.#outbox = new EventOutbox((events) => this.#post({ type: 'events', events }));
    port.on('message', (message: HostToReplica) => this.#onMessage(message));
  }

  async run(): Promise<ReplicaExit> {
    const started = performance.now();
    try {
      const spec = this.#spec;
      this.#model = await loadModel(spec.modelPath, {
        gpuLayers: spec.gpuLayers,
        onProgress: (progress) => this.#post({ type: 'loading', progress }),
      });
      this.#engine = await this.#model.createEngine({
        slots: spec.slots,
        contextSize: spec.contextSize,
        ...(spec.batchSize > 0 ? { batchSize: spec.batchSize } : {}),
        threads: spec.threads,
        maxQueue: spec.maxQueue,
      });
    } catch (err) {
      const error = toLmError(err);
      this.#model?.dispose();
      this.#port.close();
      return { type: 'failed', code: error.code, message: error.message };
    }
    if (this.#shutdown) {
      // Shut down while loading: nothing ran, free the engine at once.
      await this.#shutdown;
      this.#engine.dispose();
      this.#model.dispose();
      return { type: 'stopped' };
    }
    this.#post({ type: 'ready', model: summarize(this.#model), load: loadReport(this.#spec, (performance.now() - started) / 1000) });
    const timer = setInterval(() => this.#postStats(), STATS_INTERVAL_MS);
    await this.#stoppedPromise;
    clearInterval(timer);
    return { type: 'stopped' };
  }

  #post(message: ReplicaToHost): void {
    this.#port.postMessage(message);
  }

  #postStats(): void {
    const engine = this.#engine;
    if (!engine || engine.disposed) return;
    const s = engine.stats();
    this.#post({
      type: 'stats',
      stats: {
        replicas: 1,
        slots: s.slots,
        slotsBusy: s.slotsBusy,
        queued: s.queued,
        kvUsedRatio: s.kvUsedRatio,
        tokensGenerated: s.tokensGenerated,
      },
    });
  }

  #onMessage(message: HostToReplica): void {
    switch (message.type) {
      case 'generate':
        this.#generate(message.request);
        break;
      case 'cancel':
        this.#live.get(message.id)?.cancel();
        break;
      case 'shutdown':
        this.#shutdown ??= this.#drain(message.graceMs);
        break;
    }
  }

  #generate(request: GenerateRequest): void {
    const { id } = request;
    const engine = this.#engine;
    if (!engine || this.#shutdown) {
      this.#outbox.push({ type: 'error', id, code: 'MODEL_NOT_READY', message: 'the model is not serving' });
      return;
    }
    let generation: Generation;
    try {
      const prompt = buildPrompt(this.#model as Model, this.#spec.promptTemplate, request);
      generation = engine.submit({ prompt, params: request.params });
    } catch (err) {
      const error = toLmError(err);
      this.#log.debug('generation refused', { reqId: id, code: error.code, reason: error.message });
      this.#outbox.push({ type: 'error', id, code: error.code, message: error.message });
      return;
    }
    this.#log.debug('generation queued', { reqId: id });
    this.#live.set(id, generation);
    const running = this.#stream(id, generation).finally(() => {
      this.#live.delete(id);
      this.#running.delete(running);
    });
    this.#running.add(running);
  }

  async #stream(id: string, generation: Generation): Promise<void> {
    try {
      for await (const chunk of generation) {
        this.#outbox.push(
          chunk.logprobs ? { type: 'tokens', id, text: chunk.text, ids: chunk.tokens, logprobs: chunk.logprobs } : { type: 'tokens', id, text: chunk.text, ids: chunk.tokens },
        );
      }
      const result = await generation.result;
      this.#log.debug('generation ended', { reqId: id, finishReason: result.finishReason, tokensIn: result.usage.tokensIn, tokensOut: result.usage.tokensOut });
      this.#outbox.push({
        type: 'done',
        id,
        text: result.text,
        finishReason: result.finishReason,
        ...(result.stopString !== undefined ? { stopString: result.stopString } : {}),
        usage: result.usage,
        timings: result.timings,
      });
    } catch (err) {
      const error = toLmError(err);
      this.#log.debug('generation failed', { reqId: id, code: error.code, reason: error.message });
      this.#outbox.push({ type: 'error', id, code: error.code, message: error.message });
    }
  }

  /** Lets running generations finish for up to graceMs, cancels the rest, then frees the engine. */
  async #drain(graceMs: number): Promise<void> {
    const all = () => Promise.allSettled([...this.#running]);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all(), new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    for (const generation of this.#live.values()) generation.cancel();
    await all();
    this.#outbox.flush();
    this.#engine?.dispose();
    this.#model?.dispose();
    this.#port.close();
    this.#stopped();
  }
}

export default async function runReplica(task: ReplicaTask): Promise<ReplicaExit> {
  return new Replica(task.spec, task.port, task.replica).run();
}
