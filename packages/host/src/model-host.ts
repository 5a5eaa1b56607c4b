/**
 * The model host's core: a piscina pool of replicas (worker threads, one Engine each) behind
 * one typed interface. It routes each request to the least busy replica and drains the pool on
 * shutdown. The replicas' generation events do not pass through here: each replica writes them
 * to the supervisor over its own relay pipe (HostSpec.relayFds) and only reports which requests
 * ended, for the routing counts.
 */
import type { Socket } from 'node:net';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type {
  ErrorCode,
  GenerateRequest,
  LoadReport,
  HostSpec,
  HostStats,
  PromptCacheStats,
  HostToSupervisor,
  Logger,
  ModelSummary,
  ReplicaExit,
  ReplicaToHost,
} from '@lmserve/protocol';
import { LOOP_LAG_SAMPLE_MS } from '@lmserve/protocol';
import { EventOutbox } from './event-outbox.js';
import { GrammarChecker, GrammarCheckerUnavailable } from './grammar-checker.js';
import type { ReplicaTask } from './replica.js';

/**
 * A client connection lent by the supervisor for direct streams: this process's descriptor of it,
 * kept from the connection's first direct stream until the supervisor releases it (it closed
 * there), so a keep-alive connection's later streams need no handle. Closed once released and no
 * stream writes to it.
 */
interface LentConnection {
  socket: Socket;
  fd: number;
  /** The requests whose engine may write to it (ended ones leave at `ended`). */
  users: Set<string>;
  released: boolean;
}

interface ReplicaHandle {
  index: number;
  port: MessagePort;
  task: Promise<ReplicaExit>;
  inFlight: number;
  progress: number;
  model: ModelSummary | undefined;
  load: LoadReport | undefined;
  stats: HostStats | undefined;
}

export interface ModelHostOptions {
  spec: HostSpec;
  send: (message: HostToSupervisor) => void;
  log: Logger;
  /** Called once the pool is gone: after shutdown, or when a replica failed. */
  onExit: (code: number) => void;
}

export class ModelHost {
  readonly #spec: HostSpec;
  readonly #send: (message: HostToSupervisor) => void;
  readonly #log: Logger;
  readonly #onExit: (code: number) => void;
  readonly #outbox: EventOutbox;
  readonly #replicas: ReplicaHandle[] = [];
  readonly #owner = new Map<string, ReplicaHandle>();
  /** Requests whose grammar is being checked; a cancel while checking ends them here. */
  readonly #checking = new Set<string>();
  /** Lent connections by the supervisor's number (GenerateRequest.direct.conn). */
  readonly #connections = new Map<number, LentConnection>();
  /** The connection each direct stream writes to. */
  readonly #connectionOf = new Map<string, number>();
  /** Numbers for connections that came without a usable one (closed when their request ends). */
  #ownConnection = 0;
  readonly #grammars: GrammarChecker;
  #pool: Piscina<ReplicaTask, ReplicaExit> | undefined;
  // One sample a second (LOOP_LAG_SAMPLE_MS says why), and only while requests are in flight: an
  // idle host wakes for nothing but its parent watch and the replicas' quiet stats.
  readonly #loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: LOOP_LAG_SAMPLE_MS });
  #lastProcessReport = 0;
  #processStats: HostStats['process'];
  #ready = false;
  #closing: Promise<void> | undefined;

  constructor(options: ModelHostOptions) {
    this.#spec = options.spec;
    this.#send = options.send;
    this.#log = options.log;
    this.#onExit = options.onExit;
    this.#outbox = new EventOutbox((events) => this.#send({ type: 'events', events }));
    this.#grammars = new GrammarChecker({ modelPath: this.#spec.modelPath, log: this.#log });
  }

  start(): void {
    const count = this.#spec.replicas;
    this.#pool = new Piscina<ReplicaTask, ReplicaExit>({
      filename: new URL('./replica.js', import.meta.url).href,
      minThreads: count,
      maxThreads: count,
      idleTimeout: Infinity,
      concurrentTasksPerWorker: 1,
    });
    for (let index = 0; index < count; index++) {
      const { port1, port2 } = new MessageChannel();
      const task = this.#pool.run({ spec: this.#spec, replica: index, port: port2 }, { transferList: [port2] });
      const handle: ReplicaHandle = { index, port: port1, task, inFlight: 0, progress: 0, model: undefined, load: undefined, stats: undefined };
      port1.on('message', (message: ReplicaToHost) => this.#onReplicaMessage(handle, message));
      task.then(
        (exit) => this.#onReplicaExit(handle, exit),
        (err: unknown) => this.#onReplicaExit(handle, { type: 'failed', code: 'INTERNAL', message: String(err) }),
      );
      this.#replicas.push(handle);
    }
    this.#log.info('pool started', { replicas: count, model: this.#spec.modelPath });
  }

  /**
   * A request with a JSON schema gets it converted to GBNF, and a request with a grammar is
   * routed once its grammar passed, both in the checker process.
   */
  generate(request: GenerateRequest, socket?: Socket): void {
    if (!request.direct) socket?.destroy();
    this.#dispatch(request.direct ? this.#adoptDirect(request, socket) : request);
  }

  /** A request whose connection (if direct) is adopted already. */
  #dispatch(request: GenerateRequest): void {
    const { id, params } = request;
    if (params.jsonSchema !== undefined) {
      this.#convertSchema(request);
      return;
    }
    if (params.grammar === undefined) {
      this.#route(request);
      return;
    }
    this.#checking.add(id);
    this.#grammars.check(params.grammar, params.grammarRoot ?? 'root').then(
      (reason) => {
        if (!this.#checking.delete(id)) return;
        if (reason === null) this.#route(request);
        else this.#fail(id, 'INVALID_GRAMMAR', `params.grammar is not valid: ${reason}`, 'params.grammar');
      },
      (err: unknown) => {
        if (!this.#checking.delete(id)) return;
        const unavailable = err instanceof GrammarCheckerUnavailable;
        this.#fail(id, 'INTERNAL', unavailable ? err.message : `the grammar could not be checked: ${String(err)}`);
      },
    );
  }

  /**
   * A direct stream's connection: this process only lends its descriptor to the engine, which
   * writes the chunks; it never reads from it (the supervisor does) and closes only its own
   * descriptor (never a shutdown(), which would end the connection), once the supervisor has
   * released the connection and no stream writes to it. The first stream of a connection brings
   * it (`socket`); later ones name it (`direct.conn`). Without a usable descriptor the request
   * streams through the relay instead.
   */
  #adoptDirect(request: GenerateRequest, socket: Socket | undefined): GenerateRequest {
    const direct = request.direct!;
    let conn = direct.conn;
    let lent = conn === undefined ? undefined : this.#connections.get(conn);
    if (socket) {
      const handle = (socket as unknown as { _handle?: { fd?: number; readStop?: () => number } })._handle;
      const fd = handle?.fd;
      handle?.readStop?.();
      if (typeof fd !== 'number' || fd < 0) {
        socket.destroy();
        return relayed(request);
      }
      socket.on('error', () => undefined);
      // Without a number (an older supervisor), or with one already in use here (never sent
      // twice by the supervisor), the connection gets its own and closes when the request ends.
      const released = conn === undefined || lent !== undefined;
      const key = released ? --this.#ownConnection : conn!;
      conn = key;
      lent = { socket, fd, users: new Set(), released };
      this.#connections.set(key, lent);
    } else if (!lent || lent.released || lent.socket.destroyed) {
      return relayed(request);
    }
    lent.users.add(request.id);
    this.#connectionOf.set(request.id, conn!);
    return { ...request, direct: { ...direct, conn, fd: lent.fd } };
  }

  /** A request is done with its connection (it ended, or never reached the engine). */
  #releaseSocket(id: string): void {
    const conn = this.#connectionOf.get(id);
    if (conn === undefined) return;
    this.#connectionOf.delete(id);
    const lent = this.#connections.get(conn);
    if (!lent) return;
    lent.users.delete(id);
    if (lent.released && lent.users.size === 0) this.#closeConnection(conn, lent);
  }

  /** The supervisor's side of a lent connection closed: ours closes as soon as no stream writes to it. */
  release(conn: number): void {
    const lent = this.#connections.get(conn);
    if (!lent) return;
    lent.released = true;
    if (lent.users.size === 0) this.#closeConnection(conn, lent);
  }

  #closeConnection(conn: number, lent: LentConnection): void {
    if (this.#connections.get(conn) === lent) this.#connections.delete(conn);
    lent.socket.destroy();
  }

  cancel(id: string): void {
    if (this.#checking.delete(id)) {
      this.#fail(id, 'CANCELLED', 'the request was cancelled while its grammar was checked');
      return;
    }
    this.#owner.get(id)?.port.postMessage({ type: 'cancel', id });
  }

  #route(request: GenerateRequest): void {
    const replica = this.#ready && !this.#closing ? this.#leastBusy() : undefined;
    if (!replica) {
      this.#fail(request.id, 'MODEL_NOT_READY', 'the model is not serving');
      return;
    }
    replica.inFlight++;
    if (this.#owner.size === 0) this.#loopDelay.enable();
    this.#owner.set(request.id, replica);
    this.#log.debug('request routed', { reqId: request.id, replica: replica.index });
    replica.port.postMessage({ type: 'generate', request });
  }

  #convertSchema(request: GenerateRequest): void {
    const { id } = request;
    const { jsonSchema, ...params } = request.params;
    this.#checking.add(id);
    this.#grammars.convertSchema(JSON.stringify(jsonSchema)).then(
      (verdict) => {
        if (!this.#checking.delete(id)) return;
        if (!verdict.ok || verdict.grammar === undefined) {
          const reason = verdict.ok ? 'the converter returned nothing' : verdict.reason;
          this.#fail(id, 'INVALID_REQUEST', `params.json_schema cannot be turned into a grammar: ${reason}`, 'params.json_schema');
          return;
        }
        this.#dispatch({ ...request, params: { ...params, grammar: verdict.grammar, grammarRoot: 'root' } });
      },
      (err: unknown) => {
        if (!this.#checking.delete(id)) return;
        this.#fail(id, 'INTERNAL', `the JSON schema could not be converted: ${String(err)}`);
      },
    );
  }

  #fail(id: string, code: ErrorCode, message: string, field?: string): void {
    this.#releaseSocket(id);
    this.#log.debug('request refused', { reqId: id, code, reason: message });
    this.#outbox.push(field === undefined ? { type: 'error', id, code, message } : { type: 'error', id, code, message, field });
  }

  /** Drains every replica (running generations get up to graceMs), then ends the pool. */
  shutdown(graceMs: number): Promise<void> {
    this.#closing ??= this.#close(graceMs);
    return this.#closing;
  }

  async #close(graceMs: number): Promise<void> {
    this.#log.info('draining', { graceMs, inFlight: this.#owner.size });
    this.#grammars.close();
    this.#loopDelay.disable();
    for (const id of [...this.#checking]) this.cancel(id);
    for (const replica of this.#replicas) replica.port.postMessage({ type: 'shutdown', graceMs });
    await Promise.allSettled(this.#replicas.map((r) => r.task));
    for (const [conn, lent] of [...this.#connections]) this.#closeConnection(conn, lent);
    this.#connectionOf.clear();
    this.#outbox.flush();
    await this.#pool?.destroy();
    this.#onExit(0);
  }

  #leastBusy(): ReplicaHandle | undefined {
    let best: ReplicaHandle | undefined;
    for (const replica of this.#replicas) {
      if (!best || replica.inFlight < best.inFlight) best = replica;
    }
    return best;
  }

  #onReplicaMessage(replica: ReplicaHandle, message: ReplicaToHost): void {
    switch (message.type) {
      case 'ended':
        for (const id of message.ids) {
          this.#releaseSocket(id);
          if (this.#owner.get(id) !== replica) continue;
          this.#owner.delete(id);
          replica.inFlight--;
          this.#log.debug('request finished', { reqId: id, replica: replica.index });
        }
        if (this.#owner.size === 0) this.#loopDelay.disable();
        break;
      case 'loading': {
        replica.progress = message.progress;
        const progress = this.#replicas.reduce((sum, r) => sum + r.progress, 0) / this.#replicas.length;
        this.#send({ type: 'loading', progress });
        break;
      }
      case 'ready':
        replica.model = message.model;
        replica.load = message.load;
        if (!this.#ready && this.#replicas.every((r) => r.model)) {
          this.#ready = true;
          // The host is ready when its slowest replica is.
          const seconds = Math.max(...this.#replicas.map((r) => r.load?.seconds ?? 0));
          const load = { ...message.load, seconds };
          this.#send({ type: 'ready', model: message.model, load });
          this.#log.info('ready', { ...message.model, loadSeconds: seconds, backend: load.backend });
        }
        break;
      case 'stats':
        replica.stats = message.stats;
        this.#send({ type: 'stats', stats: { ...this.#totalStats(), process: this.#processReport() } });
        break;
    }
  }

  /** The host's own resource use, measured at most every 500 ms (every replica reports that often). */
  #processReport(): HostStats['process'] {
    const now = Date.now();
    if (this.#processStats && now - this.#lastProcessReport < 450) return this.#processStats;
    this.#lastProcessReport = now;
    const cpu = process.cpuUsage();
    const mean = this.#loopDelay.mean;
    this.#loopDelay.reset();
    this.#processStats = {
      pid: process.pid,
      cpuSecondsTotal: (cpu.user + cpu.system) / 1e6,
      residentBytes: process.memoryUsage.rss(),
      heapUsedBytes: process.memoryUsage().heapUsed,
      eventLoopLagSeconds: Number.isFinite(mean) ? mean / 1e9 : 0,
    };
    return this.#processStats;
  }

  #totalStats(): HostStats {
    const promptCache: PromptCacheStats = { bytes: 0, entries: 0, restores: 0, tokensRestored: 0 };
    const total: HostStats = { replicas: 0, slots: 0, slotsBusy: 0, queued: 0, kvUsedRatio: 0, tokensGenerated: 0, promptCache };
    for (const { stats } of this.#replicas) {
      if (!stats) continue;
      total.replicas += 1;
      total.slots += stats.slots;
      total.slotsBusy += stats.slotsBusy;
      total.queued += stats.queued;
      total.kvUsedRatio += stats.kvUsedRatio;
      total.tokensGenerated += stats.tokensGenerated;
      if (stats.promptCache) {
        promptCache.bytes += stats.promptCache.bytes;
        promptCache.entries += stats.promptCache.entries;
        promptCache.restores += stats.promptCache.restores;
        promptCache.tokensRestored += stats.promptCache.tokensRestored;
      }
    }
    if (total.replicas > 0) total.kvUsedRatio /= total.replicas;
    return total;
  }

  #onReplicaExit(replica: ReplicaHandle, exit: ReplicaExit): void {
    if (exit.type === 'stopped' || this.#closing) return;
    this.#log.error('replica failed', { replica: replica.index, code: exit.code, reason: exit.message });
    this.#send({ type: 'fatal', code: exit.code, message: exit.message });
    this.#grammars.close();
    this.#closing = this.#pool?.destroy().catch(() => undefined) ?? Promise.resolve();
    void this.#closing.then(() => this.#onExit(1));
  }
}

/** The request without its direct stream: it streams through the relay. */
function relayed(request: GenerateRequest): GenerateRequest {
  const { direct: _, ...rest } = request;
  return rest;
}
