/**
 * Runs an OpenAI call on one model and answers in OpenAI's shapes: a chat.completion or a
 * text_completion, or their chunks over SSE (ending in `data: [DONE]`, with a usage-only chunk
 * first when stream_options.include_usage is set). Each prompt of a completion is one request
 * of the core (the first is the one the route began, the others begin here), run side by side;
 * one failing cancels the others. A client that disconnects cancels every one.
 */
import type { Response } from 'express';
import type { ActiveRequest, RequestPath } from '@lmserve/core';
import { toLmError, type GenerationResult, type TokenLogprob } from '@lmserve/protocol';
import { directStream, directTemplate } from '../direct.js';
import { openAiErrorBody, sendOpenAiError } from './errors.js';
import { OpenAiEventStream } from './event-stream.js';
import type { OpenAiCall } from './request.js';

export type OpenAiKind = 'chat' | 'text';

/** OpenAI's finish reasons: a cancelled generation (shutdown, disconnect) reads as stopped. */
function finishReason(result: GenerationResult): 'stop' | 'length' {
  return result.finishReason === 'length' ? 'length' : 'stop';
}

/** OpenAI's usage over every choice of a call. */
function usageOf(results: readonly GenerationResult[]) {
  let prompt = 0;
  let completion = 0;
  let cached = 0;
  for (const r of results) {
    prompt += r.usage.tokensIn;
    completion += r.usage.tokensOut;
    cached += r.usage.cachedTokens;
  }
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } };
}

/** Chat's logprobs: `{content: [{token, logprob, bytes, top_logprobs}]}`. */
function chatLogprobs(entries: readonly TokenLogprob[]) {
  return {
    content: entries.map((e) => ({
      token: e.text,
      logprob: e.logprob,
      bytes: e.bytes,
      top_logprobs: e.top.map((t) => ({ token: t.text, logprob: t.logprob, bytes: t.bytes })),
    })),
    refusal: null,
  };
}

/** Completions' logprobs: parallel lists, the alternatives as token → logprob maps; offsets into the choice's text. */
function textLogprobs(entries: readonly TokenLogprob[], offset = 0) {
  const textOffset: number[] = [];
  let at = offset;
  for (const e of entries) {
    textOffset.push(at);
    at += e.text.length;
  }
  return {
    tokens: entries.map((e) => e.text),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((t) => [t.text, t.logprob]))),
    text_offset: textOffset,
  };
}

export async function serveOpenAi(kind: OpenAiKind, call: OpenAiCall, res: Response, first: ActiveRequest, path: RequestPath): Promise<void> {
  const model = path.backend.model;
  const id = kind === 'chat' ? `chatcmpl-${first.id}` : `cmpl-${first.id}`;
  const object = kind === 'chat' ? 'chat.completion' : 'text_completion';
  const chunkObject = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  const created = Math.floor(first.startedAt / 1000);
  const requests = call.inputs.map((_, i) => (i === 0 ? first : path.begin(first.transport, first.clientId)));
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  const stream = call.stream ? new OpenAiEventStream(res) : null;
  const usageField = call.includeUsage ? { usage: null } : {};
  const wantLogprobs = call.logprobs !== null;
  const logprobs = call.inputs.map((): TokenLogprob[] => []);
  const sent = call.inputs.map(() => 0);
  const chunkLogprobs = (index: number, entries: readonly TokenLogprob[] | undefined) =>
    !wantLogprobs || !entries ? null : kind === 'chat' ? chatLogprobs(entries) : textLogprobs(entries, sent[index]);
  const chunkData = (index: number, text: string | null, finish: 'stop' | 'length' | null, role = false, entries?: readonly TokenLogprob[]) => {
    const lp = chunkLogprobs(index, entries);
    const choice =
      kind === 'chat'
        ? { index, delta: text === null ? {} : role ? { role: 'assistant', content: text } : { content: text }, logprobs: lp, finish_reason: finish }
        : { index, text: text ?? '', logprobs: lp, finish_reason: finish };
    return { id, object: chunkObject, created, model, system_fingerprint: null, choices: [choice], ...usageField };
  };
  const chunk = (index: number, text: string | null, finish: 'stop' | 'length' | null, role = false, entries?: readonly TokenLogprob[]) => {
    const data = chunkData(index, text, finish, role, entries);
    if (text) sent[index] = (sent[index] ?? 0) + text.length;
    stream?.send(data);
  };
  const opened = new Set<number>();
  const sink = (index: number) =>
    stream
      ? (text: string, _ids: number[], entries?: TokenLogprob[]) => {
          if (kind === 'chat' && !opened.has(index)) {
            opened.add(index);
            chunk(index, '', null, true);
          }
          if (text !== '' || (entries && entries.length > 0)) chunk(index, text, null, false, entries);
        }
      : wantLogprobs
        ? (_text: string, _ids: number[], entries?: TokenLogprob[]) => {
            if (entries) logprobs[index]?.push(...entries);
          }
        : null;

  // One choice without log-probabilities: the model host may write its chunks itself (the
  // chat role chunk goes first, from here).
  const direct =
    stream && requests.length === 1 && !wantLogprobs
      ? directStream(res, directTemplate((text) => OpenAiEventStream.format(chunkData(0, text, null)), { withTokens: false, skipEmpty: true }), () => {
          if (kind !== 'chat') return stream.open();
          opened.add(0);
          chunk(0, '', null, true);
        })
      : undefined;

  let results: GenerationResult[];
  try {
    results = await Promise.all(
      requests.map((request, i) =>
        request.run({ input: call.inputs[i] as OpenAiCall['inputs'][number], params: call.params, raw: call.raw }, sink(i), abort.signal, i === 0 ? direct : undefined).catch((err: unknown) => {
          abort.abort();
          throw err;
        }),
      ),
    );
  } catch (err) {
    const error = toLmError(err);
    // The requests that never ran still end, once each, with the error that stopped the call.
    for (const request of requests) request.fail(error);
    if (stream?.started) {
      stream.send(openAiErrorBody(error));
      res.end();
    } else {
      sendOpenAiError(res, error, path.backend.readiness().retryAfterS);
    }
    return;
  }
  const usage = usageOf(results);
  if (stream) {
    results.forEach((result, i) => {
      if (kind === 'chat' && !opened.has(i)) chunk(i, '', null, true);
      chunk(i, null, finishReason(result));
    });
    if (call.includeUsage) stream.send({ id, object: chunkObject, created, model, system_fingerprint: null, choices: [], usage });
    stream.done();
    return;
  }
  if (res.writableEnded) return;
  const choices = results.map((result, index) =>
    kind === 'chat'
      ? { index, message: { role: 'assistant', content: result.text }, logprobs: wantLogprobs ? chatLogprobs(logprobs[index] ?? []) : null, finish_reason: finishReason(result) }
      : { index, text: result.text, logprobs: wantLogprobs ? textLogprobs(logprobs[index] ?? []) : null, finish_reason: finishReason(result) },
  );
  res.json({ id, object, created, model, system_fingerprint: null, choices, usage });
}
