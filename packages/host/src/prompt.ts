import { randomBytes } from 'node:crypto';
import type { Model, TemplatedPrompt } from '@lmserve/engine';
import type { ChatMessage, GenerateRequest, PromptTemplate } from '@lmserve/protocol';

/** Renders turns with prompt_template.json's markers, ending with the model's turn opened. */
export function renderWithTemplate(template: PromptTemplate, messages: readonly ChatMessage[]): string {
  let out = '';
  for (const { role, content } of messages) {
    if (role === 'assistant') out += template.modelPrefix + content + template.modelSuffix;
    else if (role === 'system') out += (template.systemPrefix ?? template.userPrefix) + content + (template.systemSuffix ?? template.userSuffix);
    else out += template.userPrefix + content + template.userSuffix;
  }
  return out + template.modelPrefix;
}

/**
 * What a request sends to the model. Order: `raw` sends a string input as is (its special-token
 * text is parsed: raw means the client writes the markup); else the worker's
 * prompt_template.json when there is one; else the GGUF's own chat template (llama.cpp's Jinja
 * engine, then its built-in matcher); else, for a model without any template, the input text as
 * is (chat turns joined by blank lines).
 *
 * Templated prompts keep the client's text out of the control tokens: a message whose content
 * holds a control token's text (`</s>`, `<|im_end|>`: a user closing its own turn to write the
 * model's or the system's) is rendered with a marker in its place, and the prompt goes to the
 * engine in parts — the template's markup, whose control tokens are parsed, and the content,
 * tokenized as plain text. Contents without such text are rendered as they are, so the template
 * sees them (trimming, reasoning) and the tokens are exactly those of the joined string.
 */
export function buildPrompt(model: Model, template: PromptTemplate | null, request: GenerateRequest): string | TemplatedPrompt {
  const { input } = request;
  if (request.raw && typeof input === 'string') return input;
  const messages: ChatMessage[] = typeof input === 'string' ? [{ role: 'user', content: input }] : input;
  let render: (turns: ChatMessage[]) => string;
  if (template) render = (turns) => renderWithTemplate(template, turns);
  else if (model.info.chatTemplate) render = (turns) => model.applyChatTemplate(turns, { addAssistant: true });
  else return typeof input === 'string' ? input : messages.map((m) => m.content).join('\n\n');
  const guarded = messages.map((m) => model.hasControlText(m.content));
  if (!guarded.includes(true)) return render(messages);
  const nonce = randomBytes(8).toString('hex');
  const rendered = render(messages.map((m, i) => (guarded[i] ? { ...m, content: `\u27e6lmserve-${nonce}-${i}\u27e7` } : m)));
  const parts: string[] = [];
  let last = 0;
  for (const match of rendered.matchAll(new RegExp(`\u27e6lmserve-${nonce}-(\\d+)\u27e7`, 'g'))) {
    parts.push(rendered.slice(last, match.index), (messages[Number(match[1])] as ChatMessage).content);
    last = match.index + match[0].length;
  }
  parts.push(rendered.slice(last));
  return { parts };
}
