/** `supervisor test NAME`: one sample request to a running worker, printing the answer and its timings. */
import { LmError, isErrorCode } from '@lmserve/protocol';
import type { ServicePaths } from '@lmserve/supervisor';
import { workerEndpoint } from './worker-endpoint.js';

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
  const { worker, baseUrl, headers } = await workerEndpoint(paths, name);
  const started = performance.now();
  const res = await fetch(`${baseUrl}/v1/completions`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
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
