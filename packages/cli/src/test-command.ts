/** `supervisor test NAME`: one sample request to a running worker, printing the answer and its timings. */
import { LmError, isErrorCode } from '@lmserve/protocol';
import { isConfigError, loadWorkerConfig, type ServicePaths } from '@lmserve/supervisor';
import { join } from 'node:path';
import { AdminClient, connectHost } from './admin-client.js';

export interface TestOptions {
  input: string;
  maxTokens: number;
}

interface CompletionResponse {
  id: string;
  model: string;
  output: string;
  finish_reason: string;
  usage: { tokens_in: number; tokens_out: number };
  timings: { ttft_ms: number; dur_ms: number };
}

export async function testWorker(paths: ServicePaths, name: string, options: TestOptions): Promise<string> {
  const client = AdminClient.fromConfig(paths);
  const worker = (await client.workers()).find((w) => w.name === name);
  if (!worker) throw new LmError('NOT_FOUND', `no worker named "${name}"`);
  if (worker.port === null || worker.address === null) {
    throw new LmError('MODEL_NOT_READY', `worker ${name} has no HTTP port (${worker.state}: ${worker.reason ?? ''})`);
  }
  const host = connectHost(worker.address.slice(0, worker.address.lastIndexOf(':')).replace(/^\[|\]$/g, ''));
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const config = loadWorkerConfig(name, join(paths.envsDir, `worker.${name}.env`), paths);
  if (!isConfigError(config) && config.apiKey) headers.authorization = `Bearer ${config.apiKey}`;
  const started = performance.now();
  const res = await fetch(`http://${host}:${worker.port}/v1/completions`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ input: options.input, params: { max_tokens: options.maxTokens } }),
  });
  const body = (await res.json()) as CompletionResponse & { error?: { code: string; message: string } };
  if (!res.ok) {
    const code = isErrorCode(body.error?.code) ? body.error.code : 'INTERNAL';
    throw new LmError(code, `${name}: ${body.error?.message ?? `HTTP ${res.status}`}`);
  }
  const wall = Math.round(performance.now() - started);
  return [
    `model:   ${body.model} (${name}, port ${worker.port})`,
    `input:   ${JSON.stringify(options.input)}`,
    `output:  ${JSON.stringify(body.output)}`,
    `finish:  ${body.finish_reason}`,
    `tokens:  ${body.usage.tokens_in} in, ${body.usage.tokens_out} out`,
    `timings: ttft ${body.timings.ttft_ms.toFixed(1)} ms, duration ${body.timings.dur_ms.toFixed(1)} ms, round trip ${wall} ms`,
  ].join('\n');
}
