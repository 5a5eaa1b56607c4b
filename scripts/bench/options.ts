/** Command-line options of `npm run bench`, validated with messages that name the flag. */

export interface BenchOptions {
  /** How our side is driven: through the service's HTTP port (default) or the engine in-process. */
  ours: 'http' | 'engine';
  /**
   * The service's API the HTTP targets speak: the original `{input, params}` body (default) or
   * OpenAI's (POST /v1/completions with `prompt`, SSE chunks, usage from stream_options).
   */
  route: 'original' | 'openai';
  /**
   * The main table's requests (ours, llama-server, ours-bare; the grammar row's too): streamed
   * (default) or one JSON answer each (`--stream off`, as most load tools send: no TTFT then).
   */
  stream: boolean;
  /** The main table's clients keep their connections between requests (`--keep-alive`). */
  keepAlive: boolean;
  concurrency: number[];
  rounds: number;
  maxTokens: number;
  /** repeat_penalty on both sides (1: none, the default; repeat_last_n stays 64 on both). */
  repeatPenalty: number;
  threads: number;
  /** Requests each concurrent client sends back to back in one round. */
  requestsPerClient: number;
  /** At least this many requests per level and target (main table and NATS row). */
  minRequests: number;
  /** KV cells per sequence on both sides (llama-server gets -c slots*ctxPerSlot). */
  ctxPerSlot: number;
  /** Parallel sequences on both sides (our slots, llama-server -np). */
  slots: number;
  /** Logical and physical batch size on both sides (-b / -ub). */
  batchSize: number;
  /** One KV buffer shared by all sequences, on both sides (llama-server -kvu / --no-kv-unified). */
  kvUnified: boolean;
  /** Approximate prompt length in tokens (the fixed text is trimmed to it). */
  promptTokens: number;
  quick: boolean;
  /** Use this llama-server binary instead of building one. */
  serverBin: string | undefined;
  /** Extra arguments appended to the llama-server command line. */
  serverArgs: string[];
  /** Where the JSON goes (default bench/results/<timestamp>.json). */
  out: string | undefined;
  /** scripts/gen-model.mjs preset both sides serve (a llama SPM vocab: the workload bans its byte ids). */
  modelPreset: string;
  /** Sequential requests to model B per phase of the two-model row (0 skips the row). */
  isolationRequests: number;
  /** Tokens each of B's requests generates. */
  isolationMaxTokens: number;
  /**
   * A third target in the same rounds: our service with AUDIT=off and METRICS=off (`ours-bare`),
   * for the cost of the audit trail and metrics. Only with --ours http; --no-bare-row skips it.
   */
  bareRow: boolean;
  /** Only ours and ours-bare (no llama-server, no grammar or two-model row): the cost table alone. */
  costOnly: boolean;
  /** A/A calibration of --cost-only: ours also runs with AUDIT=off and METRICS=off. */
  costCalibrate: boolean;
  /** Only the grammar row (ours and llama-server), in ABBA rounds: no main table, no ours-bare. */
  grammarOnly: boolean;
  /** The NATS row: the same workload over NATS request/reply and HTTP, then JetStream latency. */
  natsRow: boolean;
  /** Only the NATS row. */
  natsOnly: boolean;
  natsConcurrency: number[];
  natsJobs: number;
  /** The NATS row streams (token messages vs SSE) or not (one answer per request on both). */
  natsStream: boolean;
  /** Only ours over the original API and ours over OpenAI's (same supervisor), ABBA rounds. */
  routeCompare: boolean;
  /**
   * After the main table, a round with the built-in `json` grammar on ours and llama-server (same
   * servers, EOS not ignored). Only with --ours http (the GBNF comes from the service's library).
   */
  grammarRow: boolean;
  /** Concurrency levels of the grammar row. */
  grammarConcurrency: number[];
  /** max_tokens of each grammar request (the output usually ends earlier, when the JSON closes). */
  grammarMaxTokens: number;
  /**
   * The side-by-side scenarios (scripts/bench/shared-prefix.ts, mixed-lengths.ts, multi-model.ts),
   * each on fresh servers after everything else. The shared-prefix one is cheap (about a minute)
   * and on by default; the other two take several minutes each and are opt-in.
   */
  sharedPrefixRow: boolean;
  /** The repeated-prompts scenario (scripts/bench/repeated-prompts.ts, about two minutes, on by default). */
  repeatRow: boolean;
  mixedRow: boolean;
  multiModelRow: boolean;
  /** Only the scenarios given with --shared-prefix-only, --repeat-only, --mixed-only, --multi-model-only (any of them together). */
  scenariosOnly: boolean;
  /** Approximate length of the shared-prefix scenario's common system prompt in tokens. */
  prefixTokens: number;
  /** Approximate length of the mixed-lengths scenario's long prompts in tokens. */
  longPromptTokens: number;
  help: boolean;
}

export const DEFAULTS: BenchOptions = {
  ours: 'http',
  route: 'original',
  stream: true,
  keepAlive: false,
  concurrency: [1, 4, 8, 16],
  rounds: 2,
  maxTokens: 128,
  repeatPenalty: 1,
  threads: 2,
  requestsPerClient: 3,
  minRequests: 8,
  ctxPerSlot: 512,
  slots: 16,
  batchSize: 512,
  kvUnified: false,
  promptTokens: 64,
  quick: false,
  serverBin: undefined,
  serverArgs: [],
  out: undefined,
  modelPreset: 'bench',
  isolationRequests: 30,
  isolationMaxTokens: 16,
  bareRow: true,
  costOnly: false,
  costCalibrate: false,
  grammarOnly: false,
  natsRow: true,
  natsOnly: false,
  natsConcurrency: [1, 8],
  natsJobs: 16,
  natsStream: true,
  routeCompare: false,
  grammarRow: true,
  grammarConcurrency: [1, 8],
  grammarMaxTokens: 64,
  sharedPrefixRow: true,
  repeatRow: true,
  mixedRow: false,
  multiModelRow: false,
  scenariosOnly: false,
  prefixTokens: 530,
  longPromptTokens: 2000,
  help: false,
};

export const USAGE = `usage: npm run bench -- [options]

Compares our service (its per-model HTTP port, streaming) with llama.cpp's llama-server (HTTP,
streaming) on the generated bench model: same GGUF, same llama.cpp build, same threads, context per
slot, batch and sampling. With --ours http a third target runs in the same rounds: our service with
AUDIT=off and METRICS=off (ours-bare), for the cost of the audit trail and metrics (second table).
Then the two-model row: model B's time to first token while model A is idle and while A is
saturated, both served by one supervisor.

  --ours http|engine       our side: the service over HTTP (default) or the engine in-process
  --route original|openai  the service's API for ours, ours-bare and the grammar row: the original
                           {input, params} body (default) or OpenAI's /v1/completions with prompt
                           (same port, same raw prompt; the two-model row keeps the original)
  --stream on|off          the main table's requests (ours, llama-server, ours-bare, the grammar
                           row) streamed (default) or one JSON answer each ("stream": false on
                           both sides, as most load tools send; no TTFT then)
  --keep-alive             the main table's clients (ours, llama-server, ours-bare, the grammar row)
                           keep their connections between requests, as most load tools' HTTP
                           clients do (default: a new connection per request)
  --concurrency 1,4,8,16   concurrent clients per level (default 1,4,8,16)
  --rounds N               A,B alternations per level; medians are reported (default 2)
  --max-tokens N           tokens generated per request, EOS ignored (default 128)
  --repeat-penalty X       repeat_penalty on both sides, over the last 64 tokens (default 1: none)
  --threads N              CPU threads on both sides (default 2)
  --requests-per-client N  requests each client sends back to back per round (default 3)
  --min-requests N         at least N requests per level and side (default 8): 3 requests at c=1
                           ran under 3 s, and that level's ratio moved by ±5% from round to round
  --ctx-per-slot N         KV cells per sequence on both sides (default 512)
  --slots N                parallel sequences on both sides (default 16)
  --batch-size N           n_batch = n_ubatch on both sides (default 512)
  --prompt-tokens N        prompt length in tokens, about (default 64)
  --kv-unified             one KV buffer for all sequences on both sides (default: one per sequence)
  --quick                  smoke test: concurrency 1,4, 32 tokens, 1 round, 1 request per client,
                           5 requests per phase of the two-model row (keeps the ours-bare target)
  --server-bin PATH        use this llama-server instead of building it from build/
  --server-arg ARG         extra llama-server argument (repeatable, one argument each:
                           --server-arg --cache-ram --server-arg 8192; llama-server rejects --cache-ram=8192)
  --isolation-requests N   B requests per phase of the two-model row; 0 skips the row (default 10)
  --isolation-max-tokens N tokens per B request in the two-model row (default 16)
  --no-bare-row            skip the ours-bare target (service with AUDIT=off, METRICS=off) and its
                           table; --ours engine has no service and never runs it
  --no-grammar-row         skip the grammar row (the built-in json grammar on ours and llama-server,
                           after the main table, same servers; on by default, --quick keeps it;
                           needs --ours http)
  --cost-only              only ours and ours-bare, in ABBA rounds: the audit + metrics cost table
                           alone (no llama-server, no grammar or two-model row); use --rounds 6+
  --cost-calibrate         --cost-only with ours ALSO at AUDIT=off METRICS=off (an A/A run: two
                           identical supervisors; what it shows is the noise floor of the cost table)
  --grammar-only           only the grammar row (ours and llama-server, ABBA rounds; no main table,
                           no ours-bare, no two-model row); use --rounds 4+
  --no-nats-row            skip the NATS row (the workload over NATS request/reply and over HTTP on
                           one supervisor with a nats-server started for it, then JetStream job
                           latency; needs nats-server, on by default with --ours http)
  --nats-only              only the NATS row (ABBA rounds); no llama-server
  --route-compare          only the original API against OpenAI's /v1/completions on the same
                           supervisor (ABBA rounds; no llama-server, no other row)
  --nats-concurrency 1,8   levels of the NATS row (default 1,8)
  --nats-jobs N            JetStream jobs per level of the latency table (default 16)
  --nats-stream on|off     the NATS row with streaming on both sides (default) or one answer per
                           request on both (NATS request(), HTTP JSON)
  --grammar-concurrency 1,8  levels of the grammar row (default 1,8)
  --grammar-max-tokens N   max tokens per grammar request, EOS not ignored (default 64)
  --out PATH               JSON output (default bench/results/<timestamp>.json)
  --model-preset NAME      generated model both sides serve: a scripts/gen-model.mjs preset with the
                           llama SPM vocab (default bench; gpu-1b for scripts/gpu-bench.sh)

Scenarios, each ours vs llama-server on fresh servers (one side at a time, ABBA over --rounds),
run after everything else; --X-only runs only the scenarios named that way (they combine):
  --no-shared-prefix-row   skip the shared-prefix scenario (on by default, about a minute): 8
                           clients, one ~530-token system prompt + distinct short questions, 32
                           tokens out; cold (fresh servers) then warm (every slot has the prefix)
  --shared-prefix-only     only that scenario
  --prefix-tokens N        length of its common system prompt, about (default 530)
  --no-repeat-row          skip the repeated-prompts scenario (on by default, about two minutes):
                           32 distinct prompts through 16 slots, sent once (not measured), then
                           again from 1 client and from 16; both sides with their host-memory
                           prompt caches at 8192 MiB (llama-server's default)
  --repeat-only            only that scenario
  --mixed-row              add the mixed-lengths scenario (off by default, several minutes): 4
                           clients with ~2,000-token prompts back to back while 4 clients send
                           short requests; short TTFT and total throughput
  --mixed-only             only that scenario
  --long-prompt-tokens N   length of its long prompts, about (default 2000)
  --multi-model-row        add the multi-model scenario (off by default, several minutes): two
                           models at once, 8 clients each; one supervisor vs two llama-servers
  --multi-model-only       only that scenario
`;

function int(flag: string, value: string, min: number): number {
  if (!/^\d+$/.test(value) || Number(value) < min) throw new Error(`${flag} must be an integer >= ${min} (got "${value}")`);
  return Number(value);
}

export function parseOptions(argv: readonly string[]): BenchOptions {
  const o: BenchOptions = { ...DEFAULTS, concurrency: [...DEFAULTS.concurrency], serverArgs: [] };
  const explicit = new Set<string>();
  const only = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const flag = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      if (eq > 0 && arg.startsWith('--')) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    explicit.add(flag);
    switch (flag) {
      case '--concurrency': {
        const list = value().split(',').map((s) => int('--concurrency', s.trim(), 1));
        if (list.length === 0) throw new Error('--concurrency needs at least one level');
        o.concurrency = list;
        break;
      }
      case '--rounds': o.rounds = int(flag, value(), 1); break;
      case '--max-tokens': o.maxTokens = int(flag, value(), 1); break;
      case '--repeat-penalty': {
        const v = value();
        if (!/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0 || Number(v) > 100) throw new Error(`${flag} must be a number in (0, 100] (got "${v}")`);
        o.repeatPenalty = Number(v);
        break;
      }
      case '--threads': o.threads = int(flag, value(), 1); break;
      case '--requests-per-client': o.requestsPerClient = int(flag, value(), 1); break;
      case '--min-requests': o.minRequests = int(flag, value(), 0); break;
      case '--ctx-per-slot': o.ctxPerSlot = int(flag, value(), 32); break;
      case '--slots': o.slots = int(flag, value(), 1); break;
      case '--batch-size': o.batchSize = int(flag, value(), 1); break;
      case '--prompt-tokens': o.promptTokens = int(flag, value(), 8); break;
      case '--kv-unified': o.kvUnified = true; break;
      case '--quick': o.quick = true; break;
      case '--server-bin': o.serverBin = value(); break;
      case '--server-arg': o.serverArgs.push(value()); break;
      case '--out': o.out = value(); break;
      case '--model-preset': o.modelPreset = value(); break;
      case '--ours': {
        const v = value();
        if (v !== 'http' && v !== 'engine') throw new Error(`--ours must be http or engine (got "${v}")`);
        o.ours = v;
        break;
      }
      case '--route': {
        const v = value();
        if (v !== 'original' && v !== 'openai') throw new Error(`--route must be original or openai (got "${v}")`);
        o.route = v;
        break;
      }
      case '--isolation-requests': o.isolationRequests = int(flag, value(), 0); break;
      case '--isolation-max-tokens': o.isolationMaxTokens = int(flag, value(), 1); break;
      case '--no-bare-row': o.bareRow = false; break;
      case '--cost-only': o.costOnly = true; break;
      case '--cost-calibrate': o.costOnly = true; o.costCalibrate = true; break;
      case '--grammar-only': o.grammarOnly = true; break;
      case '--no-nats-row': o.natsRow = false; break;
      case '--nats-only': o.natsOnly = true; break;
      case '--route-compare': o.routeCompare = true; break;
      case '--keep-alive': o.keepAlive = true; break;
      case '--stream': {
        const v = value();
        if (v !== 'on' && v !== 'off') throw new Error(`--stream must be on or off (got "${v}")`);
        o.stream = v === 'on';
        break;
      }
      case '--nats-concurrency': {
        const list = value().split(',').map((s) => int('--nats-concurrency', s.trim(), 1));
        if (list.length === 0) throw new Error('--nats-concurrency needs at least one level');
        o.natsConcurrency = list;
        break;
      }
      case '--nats-jobs': o.natsJobs = int(flag, value(), 1); break;
      case '--nats-stream': {
        const v = value();
        if (v !== 'on' && v !== 'off') throw new Error(`--nats-stream must be on or off (got "${v}")`);
        o.natsStream = v === 'on';
        break;
      }
      case '--grammar-row': o.grammarRow = true; break;
      case '--no-grammar-row': o.grammarRow = false; break;
      case '--grammar-concurrency': {
        const list = value().split(',').map((s) => int('--grammar-concurrency', s.trim(), 1));
        if (list.length === 0) throw new Error('--grammar-concurrency needs at least one level');
        o.grammarConcurrency = list;
        break;
      }
      case '--grammar-max-tokens': o.grammarMaxTokens = int(flag, value(), 1); break;
      case '--shared-prefix-row': o.sharedPrefixRow = true; break;
      case '--no-shared-prefix-row': o.sharedPrefixRow = false; break;
      case '--repeat-row': o.repeatRow = true; break;
      case '--no-repeat-row': o.repeatRow = false; break;
      case '--mixed-row': o.mixedRow = true; break;
      case '--no-mixed-row': o.mixedRow = false; break;
      case '--multi-model-row': o.multiModelRow = true; break;
      case '--no-multi-model-row': o.multiModelRow = false; break;
      case '--shared-prefix-only':
      case '--repeat-only':
      case '--mixed-only':
      case '--multi-model-only': only.add(flag); break;
      case '--prefix-tokens': o.prefixTokens = int(flag, value(), 16); break;
      case '--long-prompt-tokens': o.longPromptTokens = int(flag, value(), 16); break;
      case '-h':
      case '--help': o.help = true; break;
      default: throw new Error(`unknown option ${arg} (see --help)`);
    }
  }
  if (o.quick) {
    // Explicit flags win over the --quick presets.
    if (!explicit.has('--concurrency')) o.concurrency = [1, 4];
    if (!explicit.has('--max-tokens')) o.maxTokens = 32;
    if (!explicit.has('--rounds')) o.rounds = 1;
    if (!explicit.has('--requests-per-client')) o.requestsPerClient = 1;
    if (!explicit.has('--min-requests')) o.minRequests = 0;
    if (!explicit.has('--isolation-requests')) o.isolationRequests = 5;
  }
  if (only.size > 0) {
    if (o.ours === 'engine') throw new Error('--shared-prefix-only, --repeat-only, --mixed-only and --multi-model-only need --ours http');
    if (o.costOnly || o.grammarOnly || o.natsOnly || o.routeCompare) {
      throw new Error('--shared-prefix-only, --repeat-only, --mixed-only and --multi-model-only exclude --cost-only, --grammar-only, --nats-only and --route-compare');
    }
    o.scenariosOnly = true;
    o.sharedPrefixRow = only.has('--shared-prefix-only');
    o.repeatRow = only.has('--repeat-only');
    o.mixedRow = only.has('--mixed-only');
    o.multiModelRow = only.has('--multi-model-only');
    o.bareRow = false;
    o.grammarRow = false;
    o.natsRow = false;
    if (!explicit.has('--isolation-requests')) o.isolationRequests = 0;
  }
  // The other focused runs print their one table only; the scenarios need the service.
  if (o.costOnly || o.grammarOnly || o.natsOnly || o.routeCompare || o.ours === 'engine') {
    o.sharedPrefixRow = false;
    o.repeatRow = false;
    o.mixedRow = false;
    o.multiModelRow = false;
  }
  if (o.costOnly) {
    if (o.ours === 'engine') throw new Error('--cost-only needs --ours http (the engine has no audit trail or metrics)');
    if (!o.bareRow) throw new Error('--cost-only and --no-bare-row contradict each other');
    o.grammarRow = false;
    if (!explicit.has('--isolation-requests')) o.isolationRequests = 0;
  }
  if (o.natsOnly) {
    if (o.ours === 'engine') throw new Error('--nats-only needs --ours http');
    if (o.grammarOnly || o.costOnly) throw new Error('--nats-only, --grammar-only and --cost-only exclude each other');
    if (explicit.has('--no-nats-row')) throw new Error('--nats-only and --no-nats-row contradict each other');
    o.natsRow = true;
    o.grammarRow = false;
    o.bareRow = false;
    if (!explicit.has('--isolation-requests')) o.isolationRequests = 0;
  }
  if (!o.stream && (o.ours === 'engine' || o.routeCompare)) throw new Error('--stream off needs --ours http and excludes --route-compare');
  if (o.routeCompare) {
    if (o.ours === 'engine' || o.route !== 'original') throw new Error('--route-compare needs --ours http and --route original');
    if (o.natsOnly || o.grammarOnly || o.costOnly) throw new Error('--route-compare excludes --nats-only, --grammar-only and --cost-only');
    o.bareRow = false;
    o.grammarRow = false;
    o.natsRow = false;
    if (!explicit.has('--isolation-requests')) o.isolationRequests = 0;
  }
  if (o.costOnly || o.grammarOnly) o.natsRow = false;
  if (o.ours === 'engine') o.natsRow = false;
  if (o.grammarOnly) {
    if (o.ours === 'engine') throw new Error('--grammar-only needs --ours http (the grammar row reads the service\'s library)');
    if (o.costOnly) throw new Error('--grammar-only and --cost-only contradict each other');
    if (explicit.has('--no-grammar-row')) throw new Error('--grammar-only and --no-grammar-row contradict each other');
    o.grammarRow = true;
    o.bareRow = false;
    if (!explicit.has('--isolation-requests')) o.isolationRequests = 0;
  }
  if (o.ours === 'engine' && o.route !== 'original') throw new Error('--route needs --ours http (the in-process engine has no HTTP API)');
  // The in-process engine has no supervisor, hence no audit trail or metrics to turn off.
  if (o.ours === 'engine') o.bareRow = false;
  // The grammar row reads the GBNF from the service's library and sends our side the name.
  if (o.ours === 'engine') o.grammarRow = false;
  if (o.ours === 'http' && o.kvUnified) {
    throw new Error('--kv-unified needs --ours engine: the service has no worker key for a unified KV cache (it always uses one buffer per sequence)');
  }
  const top = Math.max(...o.concurrency);
  if (top > o.slots) throw new Error(`--concurrency ${top} exceeds --slots ${o.slots}: requests would queue on one side`);
  if (o.promptTokens + o.maxTokens + 16 > o.ctxPerSlot) {
    throw new Error(`--ctx-per-slot ${o.ctxPerSlot} is too small for --prompt-tokens ${o.promptTokens} + --max-tokens ${o.maxTokens}`);
  }
  if (o.grammarRow) {
    const gTop = Math.max(...o.grammarConcurrency);
    if (gTop > o.slots) throw new Error(`--grammar-concurrency ${gTop} exceeds --slots ${o.slots}: requests would queue on one side`);
    if (o.promptTokens + o.grammarMaxTokens + 16 > o.ctxPerSlot) {
      throw new Error(`--ctx-per-slot ${o.ctxPerSlot} is too small for --prompt-tokens ${o.promptTokens} + --grammar-max-tokens ${o.grammarMaxTokens}`);
    }
  }
  return o;
}
