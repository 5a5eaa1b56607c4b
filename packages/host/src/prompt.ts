import type { Model } from '@lmserve/engine';
import type { GenerateRequest, PromptTemplate } from '@lmserve/protocol';

/**
 * The text a request sends to the model: the worker's prompt_template.json when there is
 * one, else the GGUF's own chat template, else the input as is. `raw` skips templating.
 */
export function buildPrompt(model: Model, template: PromptTemplate | null, request: GenerateRequest): string {
  if (request.raw) return request.input;
  if (template) return template.userPrefix + request.input + template.userSuffix + template.modelPrefix;
  if (model.info.chatTemplate) {
    return model.applyChatTemplate([{ role: 'user', content: request.input }], { addAssistant: true });
  }
  return request.input;
}
