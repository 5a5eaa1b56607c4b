import type { Model } from '@lmserve/engine';
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
 * The text a request sends to the model. Order: `raw` sends a string input as is; else the
 * worker's prompt_template.json when there is one; else the GGUF's own chat template
 * (llama.cpp's Jinja engine, then its built-in matcher); else, for a model without any
 * template, the input text as is (chat turns joined by blank lines).
 */
export function buildPrompt(model: Model, template: PromptTemplate | null, request: GenerateRequest): string {
  const { input } = request;
  if (request.raw && typeof input === 'string') return input;
  const messages: ChatMessage[] = typeof input === 'string' ? [{ role: 'user', content: input }] : input;
  if (template) return renderWithTemplate(template, messages);
  if (model.info.chatTemplate) return model.applyChatTemplate(messages, { addAssistant: true });
  return typeof input === 'string' ? input : messages.map((m) => m.content).join('\n\n');
}
